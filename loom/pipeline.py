"""The stages chained: `quickstart` (data -> tokenizer -> train -> sample), the data build with
its test n-grams, and sampling from a run.

Each function only calls the stages' public surfaces; it is what the CLI's subcommands run. It
sits above data and evaluation, so it is where evaluation's test items reach the data build.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from loom.checkpoint import load_trained_model
from loom.config import LoomConfig, SampleConfig
from loom.data import build_dataset
from loom.errors import ConfigError
from loom.model import generate
from loom.tokenizer import decode_stream
from loom.train import train


def sample_settings(overrides: list[str], **given) -> SampleConfig:
    """The sampling settings of `loom sample`: `SampleConfig`'s defaults, then `--set sample.KEY=V`
    overrides, then the flags `given` (None: not given), checked with the flags' names."""
    from dataclasses import replace

    from loom.config import load_config

    other = [o for o in overrides if not o.strip().startswith("sample.")]
    if other:
        raise ConfigError(f"loom sample --set takes sample.KEY=VALUE, not {other[0]!r}")
    settings = replace(load_config(None, overrides).sample, **{k: v for k, v in given.items() if v is not None})
    settings.check(name=lambda key: "--" + key.replace("_", "-"))
    return settings


def sample_from_run(run_dir: str | Path, prompt: str, settings: SampleConfig, seed: int = 0,
                    device: str = "cpu", log=None) -> Iterator[str]:
    """Text continuing `prompt` from a run's newest checkpoint, as a stream of pieces. The
    settings, the device and the run are checked and the model loaded before this returns, so
    that every error comes before the first piece. `log(line)` hears, once, when the prompt and
    the new tokens may not fit the model's context (generation then slides its window)."""
    from loom.util import torch_device

    settings.check()
    model, tok, _ = load_trained_model(run_dir, torch_device(device))
    ids = [tok.bos_id, *tok.encode(prompt)]
    context = model.cfg.max_seq_len
    if log is not None and len(ids) + settings.max_new_tokens > context:
        log(f"[loom] the prompt ({len(ids)} tokens) and up to {settings.max_new_tokens:,} new tokens exceed the "
            f"model's context of {context} tokens: past it, each new token sees only the latest {context // 2} "
            f"to {context} tokens (a sliding window)")
    rng = torch.Generator(device=device).manual_seed(seed)
    tokens = generate(model, ids, settings.max_new_tokens, settings.temperature, settings.top_k,
                      settings.top_p, stop_ids=[tok.eos_id], generator=rng)
    return decode_stream(tok, (t for t in tokens if t != tok.eos_id))


def test_ngrams(cfg: LoomConfig) -> list[str] | None:
    """The word n-grams of the test items `data.decontaminate` names, or None when it is off:
    evaluation says what the test items are, the data build drops documents that share them."""
    if not cfg.data.decontaminate:
        return None
    from loom.eval.contamination import item_ngrams

    return item_ngrams(cfg.data.decontaminate, cfg.data.decontaminate_ngram, cfg.eval)


def build_data(cfg: LoomConfig, force: bool = False) -> Path:
    """`loom data build`: the data build, decontaminated against the test items it names."""
    return build_dataset(cfg, force=force, test_ngrams=test_ngrams(cfg))


def data_card_text(target: str | Path) -> str:
    """The data card of a data directory, or of the data a run was trained on."""
    from loom.config import load_config
    from loom.data import read_data_card

    target = Path(target)
    if (target / "config.toml").is_file():
        target = Path(load_config(target / "config.toml").data.dir)
    return read_data_card(target)


def domain_shares(manifest: dict, split: str = "train") -> str:
    """'24% text, 76% code' for a split of a shard manifest, from its tokens per domain (text, and
    every code:LANGUAGE as code); '' when the manifest does not count them."""
    by_domain = manifest.get("splits", {}).get(split, {}).get("tokens_by_domain") or {}
    total = sum(by_domain.values())
    if total <= 0:
        return ""
    groups: dict[str, int] = {}
    for domain, n in by_domain.items():
        group = "code" if domain.startswith("code:") else domain
        groups[group] = groups.get(group, 0) + n
    order = sorted(groups, key=lambda g: (g != "text", g != "code", g))
    return ", ".join(f"{'<1%' if 0 < groups[g] * 200 < total else f'{groups[g] / total:.0%}'} {g}" for g in order)


def _count(n: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:,.0f}"


def quickstart(cfg: LoomConfig, out=sys.stdout) -> dict:
    """Builds the embedded corpus' dataset, trains the configured model, and prints a sample.
    Run again on a finished run, it trains nothing and shows the figures the run recorded."""
    from loom.data import read_manifest, shard_dir

    started = time.time()
    build_data(cfg)
    summary = train(cfg)
    if summary["interrupted"] or summary["stopped_because"]:
        why = "interrupted" if summary["interrupted"] else f"stopped ({summary['stopped_because']})"
        print(f"{why} at step {summary['steps']}; `loom quickstart` again continues from there", file=out)
        return summary
    print(f"\n--- sample from {summary['run_dir']} (prompt {cfg.sample.prompt!r}) ---", file=out)
    print(cfg.sample.prompt, end="", file=out, flush=True)
    for piece in sample_from_run(summary["run_dir"], cfg.sample.prompt, cfg.sample, seed=cfg.run.seed):
        print(piece, end="", file=out, flush=True)
    first, last = summary["first_val_loss"], summary["final_val_loss"]
    cost = summary["cost"]
    if summary["already_complete"]:  # nothing ran now: the time and MFU are the run's own
        head = (f"run already complete at step {summary['steps']} (trained earlier): validation loss {first:.3f} -> "
                f"{last:.3f} ({100 * (1 - last / first):.0f}% lower) in {summary['train_seconds']:.0f}s of training")
    else:
        head = (f"validation loss {first:.3f} -> {last:.3f} ({100 * (1 - last / first):.0f}% lower) "
                f"in {time.time() - started:.0f}s")
    shares = domain_shares(read_manifest(shard_dir(cfg)))
    print(f"\n---\n{head} at {cost['mfu']:.0%} MFU, {cost['cost']:.3f} {cost['currency']} (assumed price); "
          f"trained on {_count(summary['tokens'])} tokens" + (f" (train split {shares})" if shares else "")
          + f"; report in {summary['run_dir']}/report.md", file=out)
    return summary
