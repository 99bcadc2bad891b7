"""The stages chained: `quickstart` (data -> tokenizer -> train -> sample) and sampling from a run.

Each function only calls the stages' public surfaces; it is what the CLI's subcommands run.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from loom.config import LoomConfig, SampleConfig
from loom.data import build_dataset
from loom.model import generate
from loom.tokenizer import decode_stream
from loom.train import load_trained_model, train


def sample_from_run(run_dir: str | Path, prompt: str, settings: SampleConfig, seed: int = 0,
                    device: str = "cpu") -> Iterator[str]:
    """Streams text continuing `prompt` from a run's newest checkpoint."""
    model, tok, _ = load_trained_model(run_dir, device)
    ids = [tok.bos_id, *tok.encode(prompt)]
    rng = torch.Generator(device=device).manual_seed(seed)
    tokens = generate(model, ids, settings.max_new_tokens, settings.temperature, settings.top_k,
                      settings.top_p, stop_ids=[tok.eos_id], generator=rng)
    yield from decode_stream(tok, (t for t in tokens if t != tok.eos_id))


def data_card_text(target: str | Path) -> str:
    """The data card of a data directory, or of the data a run was trained on."""
    from loom.config import load_config
    from loom.data import read_data_card

    target = Path(target)
    if (target / "config.toml").is_file():
        target = Path(load_config(target / "config.toml").data.dir)
    return read_data_card(target)


def quickstart(cfg: LoomConfig, out=sys.stdout) -> dict:
    """Builds the embedded corpus' dataset, trains the configured model, and prints a sample."""
    started = time.time()
    build_dataset(cfg)
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
    print(f"\n---\nvalidation loss {first:.3f} -> {last:.3f} ({100 * (1 - last / first):.0f}% lower) "
          f"in {time.time() - started:.0f}s at {cost['mfu']:.0%} MFU, {cost['cost']:.3f} {cost['currency']} "
          f"(assumed price); report in {summary['run_dir']}/report.md", file=out)
    return summary
