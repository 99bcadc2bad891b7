"""Issue 16, item 5: can a small model that reads retrieved documentation answer what a larger
model answers from memory? The direction RETRO (Borgeaud et al. 2022) and In-Context RALM
(Ram et al. 2023) report at scale, measured here from nothing in one command:

  1. facts of the running Python's standard library (`loom.eval.stdlib_facts`: which module
     defines a function, its first parameter), their documentation passages, and a BM25 index
     of those passages (`loom.reason.retrieval`);
  2. one training corpus for both models: the documentation (a page per module), the train
     questions answered closed-book ("Q: ...\\nA: ..."), and the same questions answered with the
     passages BM25 retrieves for them in front ("Context: ... Q: ... A: ...", the prompt of
     `--rag`);
  3. two models of different size trained on it for the same steps;
  4. the test questions (never asked in training; their passages were read) asked of each
     model closed-book and open-book (the `direct` strategy, with and without `--rag`).

    python experiments/retrieval_size.py [--out runs/exp-retrieval] [--size small|gpu]
        [--facts 300] [--steps N] [--k 3] [--device cpu]

Writes OUT/table.md (accuracy with a 95% Wilson interval per model, mode and question form,
and the retriever's recall: how often the right passage was among the k), OUT/rows.json and
OUT/accuracy.png. The default size fits 30 minutes on 2 CPU cores; `--size gpu` trains larger
models longer (pass `--device cuda`).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from common import train_to_the_end

from loom.eval.stats import accuracy_with_interval as cell

# held out for the validation loss: the corpus is small (about 100,000 tokens), and 2% of it is
# fewer windows than one batch
VAL_FRACTION = 0.08

SIZES = {  # (smaller, larger) model shapes per size, and the training steps of each
    "small": {"models": {"small": ["model.n_layer=2", "model.n_head=4", "model.n_kv_head=2", "model.d_model=128"],
                         "large": ["model.n_layer=4", "model.n_head=8", "model.n_kv_head=4", "model.d_model=256"]},
              "steps": 1000},
    "gpu": {"models": {"small": ["model.n_layer=6", "model.n_head=6", "model.n_kv_head=2", "model.d_model=384"],
                       "large": ["model.n_layer=12", "model.n_head=12", "model.n_kv_head=4", "model.d_model=768"]},
            "steps": 5000},
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/exp-retrieval")
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    ap.add_argument("--facts", type=int, default=300, help="standard-library functions asked about")
    ap.add_argument("--steps", type=int, help="training steps of each model (default: the size's)")
    ap.add_argument("--k", type=int, default=3, help="passages retrieved per question")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    from loom.config import load_config
    from loom.data import build_dataset
    from loom.eval.stdlib_facts import fact_items, python_version, stdlib_facts
    from loom.eval.suites import score
    from loom.reason import solve
    from loom.reason.backends.loom_run import LoomBackend
    from loom.reason.executor import as_text
    from loom.reason.retrieval import build_index, search
    from loom.util import atomic_write_text

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    size = SIZES[args.size]
    facts = stdlib_facts(args.facts)
    passage_of = {f"{f.module}.{f.name}": f.passage for f in facts}
    index = out / "index"
    build_index(index, [{"id": key, "source": "stdlib", "text": text} for key, text in passage_of.items()],
                {"what": f"documentation passages of {len(facts)} functions, Python {python_version()}"})
    train_items, test_items = fact_items(facts, "train"), fact_items(facts, "test")

    corpus = out / "facts.jsonl"
    docs = []
    for module in sorted({f.module for f in facts}):  # the documentation: a page per module
        docs.append(f"Module {module}\n\n" + "\n".join(f.passage for f in facts if f.module == module) + "\n")
    # and a page per function: a passage is then in two documents, and the validation split (a
    # hash of each document's id) takes both only rarely (VAL_FRACTION squared)
    docs += [f"Module {f.module}\n\n{f.passage}\n" for f in facts]
    closed = [f"Q: {item.question}\nA: {item.answer}\n" for item in train_items]
    random.Random(0).shuffle(closed)
    docs += ["".join(closed[i:i + 8]) for i in range(0, len(closed), 8)]
    for item in train_items:  # what --rag puts in front of the question, as it will at test time
        context = as_text(search(index, item.question, args.k))
        docs.append(f"Context:\n{context}\n\nQ: {item.question}\nA: {item.answer}\n")
    atomic_write_text(corpus, "".join(json.dumps({"text": d}) + "\n" for d in docs))

    rows = []
    for name, shape in size["models"].items():
        cfg = load_config("quickstart", [
            f'run.dir="{out}/runs"', f'run.name="{name}"', f'data.dir="{out}/data"',
            f'data.sources=[{{name="facts", kind="jsonl", path="{corpus}", domain="text"}}]', "data.mixture={}",
            # templated documentation and questions: neither web prose nor accidental copies
            "quality.enabled=false", "dedup.near=false", "tokenizer.vocab_size=2048",
            f"data.val_fraction={VAL_FRACTION}",
            "model.max_seq_len=512", "train.seq_len=512", "train.micro_batch=8", *shape,
            f"train.steps={args.steps or size['steps']}", "train.eval_every=250", "train.ckpt_every=250",
            f'train.device="{args.device}"'])
        build_dataset(cfg)  # the same corpus and settings for both: built once, then up to date
        summary = train_to_the_end(cfg)
        backend = LoomBackend(cfg.run_dir, args.device)
        for mode in ("closed-book", "open-book"):
            for item in test_items:
                result = solve(item.question, backend, "direct", rag_index=str(index) if mode == "open-book" else None,
                               k=args.k, pictures=False)
                rows.append({"model": name, "parameters": summary["parameters"], "mode": mode,
                             "form": "module" if item.question.startswith("Which module") else "first_parameter",
                             "question": item.question, "answer": item.answer, "reply": result["answer"],
                             "right": bool(result["answer"] is not None and score(item, result["answer"]))})
            right = sum(r["right"] for r in rows if r["model"] == name and r["mode"] == mode)
            print(f"[exp] {name} ({summary['parameters']:,} parameters) {mode}: {right}/{len(test_items)}",
                  file=sys.stderr)
    recall = sum(any(p["id"] == _fact_key(item) for p in search(index, item.question, args.k))
                 for item in test_items)
    atomic_write_text(out / "rows.json", json.dumps(rows, indent=2) + "\n")
    table = _table(rows, recall, len(test_items), args, len(facts), python_version())
    atomic_write_text(out / "table.md", table)
    _plot(rows, out / "accuracy.png")
    print(table, end="")
    return 0


def _fact_key(item) -> str:
    """The passage id a question is about: "module.name"."""
    quoted = item.question.split('"')[1]
    return quoted if "." in quoted else f"{item.answer}.{quoted}"


def _table(rows: list[dict], recall: int, n_test: int, args, n_facts: int, version: str) -> str:
    models = list(dict.fromkeys(r["model"] for r in rows))
    lines = [f"{n_facts} functions of the Python {version} standard library; {n_test} test questions (never asked "
             f"in training); {args.steps or SIZES[args.size]['steps']} training steps per model; BM25 top {args.k}: "
             f"the right passage retrieved for {recall}/{n_test}. Accuracy [95% Wilson interval].\n",
             "| model | parameters | mode | all | which module | first parameter |", "|---|---:|---|---:|---:|---:|"]
    for model in models:
        for mode in ("closed-book", "open-book"):
            mine = [r for r in rows if r["model"] == model and r["mode"] == mode]
            forms = [[r for r in mine if r["form"] == form] for form in ("module", "first_parameter")]
            cells = [cell(sum(r["right"] for r in group), len(group)) for group in (mine, *forms)]
            lines.append(f"| {model} | {mine[0]['parameters']:,} | {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [(m, mode) for m in dict.fromkeys(r["model"] for r in rows) for mode in ("closed-book", "open-book")]
    heights = []
    for model, mode in bars:
        mine = [r["right"] for r in rows if r["model"] == model and r["mode"] == mode]
        heights.append(sum(mine) / max(1, len(mine)))
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.bar([f"{m}\n{mode}" for m, mode in bars], heights, color=["#888", "#48c"] * (len(bars) // 2))
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy on test questions")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
