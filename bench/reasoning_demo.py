"""Direct answering against graph execution, with a small model that loom trains here.

Least-to-most prompting (Zhou et al. 2022) solves last-letter concatenation by asking for one
word's last letter at a time and joining it to the letters so far. This script checks the idea
end to end with loom alone, on this machine:

  1. training data from the eval suites' training splits (`loom.eval.suites.training_text`):
     the two sub-skills, "What is the last letter of "WORD"?" (`last_letter`, words of 3 to 9
     letters) and "Join "LETTERS" and "L"." (`concat`), plus short whole problems, last-letter
     concatenation of 1 to `--train-max-words` words (`last_letters`); documents of 8 questions
     with their answers, written as JSONL;
  2. `loom data build` on it (quality rules and near-duplicate removal off: templated Q/A lines
     are neither prose nor accidental copies) with a 300-token BPE, close to characters, so that
     the model sees letters;
  3. `loom train`, the quickstart's shape, `--steps` steps;
  4. last-letter concatenation of 2 to 12 words (the suite's test split, never seen in training):
     direct answering ("Q: ...\\nA:") against the hand-written program
     `loom/reason/programs/last_letters.json` run by the executor (a loop over the words with a
     branch), both on the same checkpoint through the same backend;
  5. a table of accuracy, model calls and tokens per item per length, and one solved example's
     trace and pictures (`runs/reason-demo/example/graph.html`, `graph.mmd`).

    python bench/reasoning_demo.py                    # about 20 minutes on 2 cores
    python bench/reasoning_demo.py --steps 300 --items 10   # a quick look
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from pathlib import Path

from loom.config import load_config
from loom.data import build_dataset
from loom.eval.suites import SUITES, training_text
from loom.reason import evaluate_strategies, solve, strategies_table
from loom.reason.backends import LoomBackend
from loom.reason.strategies import builtin_program


def training_documents(n_docs: int, train_max_words: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    pools = {
        "last_letter": [t for length in range(3, 10) for t in training_text("last_letter", 400, length, seed)],
        "concat": list(training_text("concat", 6000, 2, seed)),
        "last_letters": [t for k in range(1, train_max_words + 1)
                         for t in training_text("last_letters", 2000, k, seed)],
    }
    docs = []
    for _ in range(n_docs):
        items = [rng.choice(pools[rng.choice(("last_letter", "concat", "concat", "last_letters"))]) for _ in range(8)]
        docs.append("\n".join(items))
    return docs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--docs", type=int, default=20000, help="training documents of 8 questions")
    p.add_argument("--train-max-words", type=int, default=3, help="longest whole problem in training")
    p.add_argument("--lengths", default="2,3,4,6,8,10,12", help="words per test problem")
    p.add_argument("--items", type=int, default=30, help="test problems per length")
    p.add_argument("--out", default="runs/reason-demo")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    out = Path(args.out)
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    corpus = data / "letters.jsonl"
    if not corpus.is_file():
        docs = training_documents(args.docs, args.train_max_words, args.seed)
        corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(docs)))
    cfg = load_config("quickstart", [
        f'data.sources=[{{name="letters", kind="jsonl", path="{corpus.resolve()}"}}]',
        f'data.dir="{(data / "built").resolve()}"', "quality.enabled=false", "dedup.near=false",
        "tokenizer.vocab_size=300", "model.vocab_size=300", f'run.dir="{out.resolve()}"', 'run.name="model"',
        f"train.steps={args.steps}", f"train.eval_every={args.steps}", f"train.ckpt_every={args.steps}",
        f"train.warmup_steps={max(10, args.steps // 10)}", "train.lr=2e-3", "train.log_every=25"])
    build_dataset(cfg)
    if not (cfg.run_dir / "checkpoints").is_dir():
        from loom.train import train

        started = time.time()
        summary = train(cfg)
        print(f"[demo] trained {summary['steps']} steps in {time.time() - started:.0f}s, "
              f"validation loss {summary['final_val_loss']:.3f}")
    backend = LoomBackend(cfg.run_dir)

    # the sub-skills alone, as a sanity check of what the graph relies on
    for suite, difficulty in (("last_letter", 6), ("concat", 2)):
        items = SUITES[suite].items("test", 50, difficulty, args.seed)
        right = sum(solve(i.question, backend, "direct", pictures=False)["answer"] == i.answer for i in items)
        print(f"[demo] sub-skill {suite} (difficulty {difficulty}), direct: {right}/{len(items)}")

    lengths = [int(n) for n in args.lengths.split(",")]
    rows = evaluate_strategies("last_letters", backend, ["direct", "graph"], lengths, args.items, args.seed,
                               program=builtin_program("last_letters"))
    print()
    print(strategies_table(rows), end="")
    (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")

    example = out / "example"
    shutil.rmtree(example, ignore_errors=True)
    item = SUITES["last_letters"].items("test", 1, 6, args.seed + 1)[0]
    result = solve(item.question, backend, "graph", builtin_program("last_letters"), example)
    print(f"\nexample: {item.question}\n  expected {item.answer!r}, graph answered {result['answer']!r} "
          f"({result['model_calls']} model calls); pictures: {', '.join(result['pictures'])}")


if __name__ == "__main__":
    main()
