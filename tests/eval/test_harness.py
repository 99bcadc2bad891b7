"""The lm-evaluation-harness adapter: real lm-eval, a real tiny loom run, local task files only."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from loom.errors import LoomError

lm_eval = pytest.importorskip("lm_eval")

import datasets  # noqa: E402
import huggingface_hub.constants  # noqa: E402
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.api.model import CacheHook, CachingLM  # noqa: E402
from lm_eval.api.registry import get_model  # noqa: E402

from loom.eval.harness import LoomHarnessLM, run_harness  # noqa: E402

PAIRS = [
    ("", " def"),  # empty context: scored after <|bos|> alone
    ("import os", "\nimport sys"),
    ("def add(a, b):\n    return", " a + b"),  # continuation with a leading space
    ("for i in range(10):", "\n    print(i)"),
]
SHORT_TEXT = "def f(x):\n    return x + 1\n"
LONG_TEXT = "".join(f"def f{i}(x):\n    return x * {i}\n\n" for i in range(20))

ROWS = [
    {"question": "import", "choices": ["os", "banana", "zebra"], "label": 0},
    {"question": "def", "choices": ["__init__", "qqq", "xyzzy"], "label": 0},
    {"question": "return", "choices": ["None", "purple", "mountain"], "label": 0},
    {"question": "for i in", "choices": ["range", "cloud", "music"], "label": 0},
    {"question": "class", "choices": ["Foo", "eleven", "tree"], "label": 1},
]
MC_YAML = """\
task: loom_t_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
  cache_dir: {cache}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_mutual_info
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""
GEN_YAML = """\
task: loom_t_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
  cache_dir: {cache}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 8
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""
PPL_YAML = """\
task: loom_t_ppl
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
  cache_dir: {cache}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{question}}}} {{{{choices[label]}}}}"
metric_list:
  - metric: word_perplexity
    aggregation: weighted_perplexity
    higher_is_better: false
  - metric: bits_per_byte
    aggregation: bits_per_byte
    higher_is_better: false
metadata:
  version: 1.0
"""


@pytest.fixture(scope="module")
def offline_hf(tmp_path_factory):
    """Hugging Face libraries offline, their caches in a temporary folder: the environment for any
    process started from here, and the flags `datasets` read when it was imported."""
    cache = tmp_path_factory.mktemp("hf")
    with pytest.MonkeyPatch.context() as mp:
        for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
            mp.setenv(var, "1")
        mp.setenv("HF_HOME", str(cache))
        mp.setenv("HF_DATASETS_CACHE", str(cache / "datasets"))
        mp.setattr(datasets.config, "HF_HUB_OFFLINE", True)
        mp.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
        mp.setattr(datasets.config, "HF_DATASETS_CACHE", cache / "datasets")
        mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        yield cache


@pytest.fixture(scope="module")
def adapter(tiny_run):
    run_dir, _ = tiny_run
    return LoomHarnessLM(run=str(run_dir), batch_size=3)


def requests(kind: str, args: list[tuple]) -> list[Instance]:
    return [Instance(request_type=kind, doc={}, arguments=a, idx=i) for i, a in enumerate(args)]


@torch.no_grad()
def direct_logprobs(adapter: LoomHarnessLM, ids: list[int]) -> torch.Tensor:
    """log p(ids[t] | ids[:t]) for t = 1..n-1, one unbatched forward pass of the raw model."""
    x = torch.tensor([ids])
    logprobs = torch.log_softmax(adapter.lm.model(x[:, :-1]).double(), dim=-1)[0]  # (T-1, V)
    return logprobs.gather(1, x[0, 1:, None])[:, 0]


# --- the module, the registry, the model arguments --------------------------------------------------


def test_import_without_lm_eval_raises_a_loom_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # what `import lm_eval` meets when not installed
    monkeypatch.delitem(sys.modules, "loom.eval.harness")
    with pytest.raises(LoomError, match=r"lm-evaluation-harness is not installed: pip install 'loom\[eval\]'"):
        import loom.eval.harness  # noqa: F401


def test_registered_as_loom_and_built_from_an_arg_string(tiny_run, adapter):
    run_dir, cfg = tiny_run
    assert get_model("loom") is LoomHarnessLM
    lm = get_model("loom").create_from_arg_string(f"run={run_dir},batch_size=5,max_gen_toks=7,device=cpu",
                                                  {"batch_size": None, "max_batch_size": None, "device": None})
    assert (lm.batch_size, lm.max_gen_toks, lm.max_length) == (5, 7, cfg.model.max_seq_len)
    assert lm.eot_token_id == lm.lm.tok.eos_id and lm.eot_token == "<|eos|>"
    assert (lm.rank, lm.world_size) == (0, 1)
    assert get_model("loom").create_from_arg_obj({"run": str(run_dir), "batch_size": "auto"}).batch_size == 16
    with pytest.raises(LoomError, match="batch_size must be an integer"):
        LoomHarnessLM(run=str(run_dir), batch_size="many")
    with pytest.raises(LoomError, match="needs a run directory"):
        LoomHarnessLM()
    info = adapter.get_model_info()
    assert info["n_params"] == adapter.lm.model.num_params() and info["max_length"] == cfg.model.max_seq_len


# --- the three request types against loom's own forward pass ----------------------------------------


def test_loglikelihood_equals_a_direct_forward_pass(adapter):
    tok = adapter.lm.tok
    got = adapter.loglikelihood(requests("loglikelihood", PAIRS))
    assert len(got) == len(PAIRS)
    for (context, continuation), (logprob, greedy) in zip(PAIRS, got):
        ids = [tok.bos_id, *tok.encode(context + continuation)]
        n_context = len(tok.encode(context))
        assert len(ids) - 1 - n_context >= 1
        per_token = direct_logprobs(adapter, ids)[n_context:]  # the continuation: the encoding's tail
        assert logprob == pytest.approx(float(per_token.sum()), abs=1e-4)
        assert logprob < 0 and isinstance(greedy, bool)
    # The same through loom's own API: a number means the same in both.
    assert got == adapter.lm.loglikelihood(PAIRS)
    assert adapter.loglikelihood([]) == []
    # Many requests go in slices (with a progress bar); the answers do not change.
    many = adapter.loglikelihood(requests("loglikelihood", PAIRS * 20), disable_tqdm=True)
    assert [lp for lp, _ in many] == pytest.approx([lp for lp, _ in got] * 20, abs=1e-5)
    assert [g for _, g in many] == [g for _, g in got] * 20


@torch.no_grad()
def test_greedy_flag_is_true_for_the_models_own_greedy_continuation(adapter):
    # The model's argmax tokens after the context, as text. lm-eval scores a continuation by
    # encoding context + continuation, so the check needs a continuation whose text encodes back
    # to the same tokens (BPE may merge two generated tokens into one): the longest such prefix.
    lm = adapter.lm
    context = [lm.tok.bos_id, *lm.encode("import")]
    chosen: list[int] = []
    for _ in range(4):
        chosen.append(int(lm.model(torch.tensor([context + chosen]))[0, -1].argmax()))
    k = next((k for k in range(len(chosen), 0, -1)
              if lm._pair_ids("import", lm.tok.decode(chosen[:k])) == (context + chosen[:k], k)), 0)
    assert k, f"no greedy prefix {chosen} encodes back to itself"
    continuation = lm.tok.decode(chosen[:k])
    assert lm.generate("import", k, stop=())[0] == continuation
    assert adapter.loglikelihood(requests("loglikelihood", [("import", continuation)]))[0][1] is True
    # the runner-up first token, where it encodes back to itself, is not greedy
    runner_up = int(lm.model(torch.tensor([context]))[0, -1].topk(2).indices[1])
    if lm._pair_ids("import", lm.tok.decode([runner_up])) == (context + [runner_up], 1):
        assert adapter.loglikelihood(requests("loglikelihood", [("import", lm.tok.decode([runner_up]))]))[0][1] is False


def test_loglikelihood_rolling_equals_a_direct_forward_pass(adapter):
    tok = adapter.lm.tok
    ids = [tok.bos_id, *tok.encode(SHORT_TEXT)]
    assert len(ids) <= adapter.max_length
    long_ids = tok.encode(LONG_TEXT)
    assert len(long_ids) > 2 * adapter.max_length  # several windows
    short, long = adapter.loglikelihood_rolling(requests("loglikelihood_rolling", [(SHORT_TEXT,), (LONG_TEXT,)]))
    assert short == pytest.approx(float(direct_logprobs(adapter, ids).sum()), abs=1e-4)
    assert math.isfinite(long) and long < 0
    assert long == pytest.approx(adapter.lm.rolling_loglikelihood([LONG_TEXT])[0], abs=1e-6)


def test_generate_until_equals_loom_greedy_generation(adapter):
    kwargs = {"until": ["\n"], "max_gen_toks": 12, "do_sample": False}
    contexts = ["import", "def add(a, b):\n    return"]
    got = adapter.generate_until(requests("generate_until", [(c, kwargs) for c in contexts]))
    assert got == [adapter.lm.generate(c, 12, stop=["\n"])[0] for c in contexts]
    assert all("\n" not in g for g in got)
    assert kwargs == {"until": ["\n"], "max_gen_toks": 12, "do_sample": False}  # requests share this dict


def test_generate_until_honours_until(adapter):
    def generate(context: str, gen_kwargs: dict) -> str:
        return adapter.generate_until(requests("generate_until", [(context, gen_kwargs)]))[0]

    # No `until`: only the EOS token stops it, within the task's budget.
    assert generate("def", {"max_gen_toks": 16}) == adapter.lm.generate("def", 16, stop=())[0]
    # The default budget is max_gen_toks from the model arguments.
    short = LoomHarnessLM.from_loom(adapter.lm, max_gen_toks=2)
    assert short.generate_until(requests("generate_until", [("def", {})])) == \
        [adapter.lm.generate("def", 2, stop=())[0]]
    # A stop string seen in a free continuation cuts it there, given as a list or as a string.
    # (Sampled, since the barely trained model repeats one token greedily; a prompt's samples do
    # not depend on the stop strings.)
    sampled = {"max_gen_toks": 16, "do_sample": True, "temperature": 1.0}
    raw = generate("def", sampled)
    stop = next((ch for k, ch in enumerate(raw)
                 if k > 0 and ch.isascii() and ch.isprintable() and ch not in raw[:k]), None)
    assert stop is not None, f"the continuation {raw!r} is too uniform for this test"
    for until in ([stop], stop):
        assert generate("def", {**sampled, "until": until}) == raw[: raw.index(stop)]


def test_generate_until_repeats_greedy_and_sampled(adapter, caplog):
    greedy = {"until": ["\n"], "max_gen_toks": 8}
    sampled = {"until": ["\n"], "max_gen_toks": 8, "do_sample": True, "temperature": 1.5}
    reqs = requests("generate_until", [("import", greedy)] * 2 + [("import", sampled)] * 3)
    out = adapter.generate_until(reqs)
    expected = adapter.lm.generate("import", 8, stop=["\n"])[0]
    assert out[0] == out[1] == expected
    assert len(set(out[2:])) > 1  # repeats of a sampled request are distinct samples
    assert adapter.generate_until(reqs) == out  # and reproducible
    # lm-eval's rule: do_sample decides; without it, a temperature above 0 means sampling.
    def one(gen_kwargs: dict) -> str:
        return adapter.generate_until(requests("generate_until", [("import", gen_kwargs)]))[0]

    assert one({**greedy, "do_sample": False, "temperature": 1.5}) == expected
    assert one({**greedy, "do_sample": True, "temperature": 0.0}) == expected
    assert one({**greedy, "temperature": 1.5}) == one(sampled) != expected
    assert one({**greedy, "max_new_tokens": 8, "top_k": 5}) == expected  # an alias; an unknown setting
    assert "'top_k' is not supported" in caplog.text


def test_results_go_through_lm_evals_request_cache(adapter, tmp_path):
    fresh = LoomHarnessLM.from_loom(adapter.lm)
    try:
        cached = CachingLM(fresh, str(tmp_path / "cache.db"))
        first = cached.loglikelihood(requests("loglikelihood", PAIRS))
        assert len(cached.dbdict) == len(PAIRS)
        assert cached.loglikelihood(requests("loglikelihood", PAIRS)) == first
    finally:
        fresh.set_cache_hook(CacheHook(None))


# --- end to end: lm_eval.simple_evaluate on local task files -------------------------------------------


def write_tasks(folder: Path, cache: Path, answers: list[str] | None = None) -> Path:
    """The three task files and their data; `answers`: the generation task's targets."""
    answers = answers or [r["choices"][r["label"]] for r in ROWS]
    data = folder / "test.jsonl"
    data.write_text("".join(json.dumps({**r, "answer": a}) + "\n" for r, a in zip(ROWS, answers)))
    for name, text in (("mc", MC_YAML), ("gen", GEN_YAML), ("ppl", PPL_YAML)):
        (folder / f"loom_t_{name}.yaml").write_text(text.format(data=data, cache=cache))
    return data


def test_simple_evaluate_on_local_tasks(tiny_run, adapter, offline_hf, tmp_path):
    run_dir, _ = tiny_run
    home_cache = Path.home() / ".cache" / "huggingface"
    existed = home_cache.exists()
    # The generation task's first two targets are the model's own greedy answers (up to the
    # newline, 8 tokens at most), the others the right choices, so exact match is at least 2/5.
    greedy = [adapter.lm.generate(r["question"], 8, stop=["\n"])[0] for r in ROWS]
    answers = [*greedy[:2], *(r["choices"][r["label"]] for r in ROWS[2:])]
    write_tasks(tmp_path, offline_hf / "datasets", answers)
    out = run_harness(run_dir, ["loom_t_mc", "loom_t_gen", "loom_t_ppl"], include_path=tmp_path,
                      batch_size=4, log_samples=False)
    results = out["results"]
    assert out["config"]["model"] == "loom" and out["config"]["batch_size"] == 4
    assert set(results) == {"loom_t_mc", "loom_t_gen", "loom_t_ppl"}
    assert home_cache.exists() == existed  # the datasets cache stayed in the temporary folder

    # multiple choice: acc is the argmax of the adapter's loglikelihood of " choice" after the text
    # (lm-eval's default target_delimiter is " "); acc_mutual_info subtracts the choice's log p
    # after an empty context.
    acc = results["loom_t_mc"]["acc,none"]
    assert 0.0 <= acc <= 1.0
    right, right_mi = 0, 0
    for row in ROWS:
        conditional = [lp for lp, _ in adapter.loglikelihood(requests(
            "loglikelihood", [(row["question"], f" {c}") for c in row["choices"]]))]
        unconditional = [lp for lp, _ in adapter.loglikelihood(requests(
            "loglikelihood", [("", f" {c}") for c in row["choices"]]))]
        right += max(range(len(conditional)), key=conditional.__getitem__) == row["label"]
        mutual = [a - b for a, b in zip(conditional, unconditional)]
        right_mi += max(range(len(mutual)), key=mutual.__getitem__) == row["label"]
    assert acc == pytest.approx(right / len(ROWS))
    assert results["loom_t_mc"]["acc_mutual_info,none"] == pytest.approx(right_mi / len(ROWS))

    # generate_until: exact match of loom's greedy answer, up to the newline.
    exact = results["loom_t_gen"]["exact_match,none"]
    assert exact == pytest.approx(sum(g == a for g, a in zip(greedy, answers)) / len(ROWS))
    assert exact >= 2 / len(ROWS)

    # loglikelihood_rolling: bits per byte from loom's rolling log-likelihoods.
    texts = [f"{r['question']} {r['choices'][r['label']]}" for r in ROWS]
    nats = adapter.lm.rolling_loglikelihood(texts)
    bpb = -sum(nats) / math.log(2) / sum(len(t.encode()) for t in texts)
    assert results["loom_t_ppl"]["bits_per_byte,none"] == pytest.approx(bpb, rel=1e-5)
    assert results["loom_t_ppl"]["word_perplexity,none"] > 1


def test_run_harness_names_unknown_tasks(tiny_run, offline_hf, tmp_path):
    run_dir, _ = tiny_run
    write_tasks(tmp_path, offline_hf / "datasets")
    with pytest.raises(LoomError, match="unknown lm-eval task 'loom_t_mcq'.*did you mean loom_t_mc"):
        run_harness(run_dir, ["loom_t_mcq"], include_path=tmp_path, include_defaults=False)
