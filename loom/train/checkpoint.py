"""Checkpoints: written atomically, checksummed, and found again on resume.

A checkpoint is a directory `checkpoints/step_NNNNNN/` holding
  model.safetensors   the weights (tied tensors stored once)
  optim.pt            the optimizer state
  rng.pt              every random-number generator state (torch CPU and CUDA, numpy, random)
  state.json          step, loader position, tokens seen, and other counters of the loop
  MANIFEST            sha256 of each file above, in `sha256sum` format (`sha256sum -c` checks it)

It is written into a temporary directory, every file and the directory fsynced, then renamed
into place, and only then is `checkpoints/latest` (a one-line text file naming it) replaced.
A crash at any moment leaves either the old or the new checkpoint complete, never a half one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_model, save_model

from loom.errors import CheckpointError
from loom.util import atomic_write_text, fsync_dir, fsync_file, sha256_file

LATEST = "latest"
FILES = ("model.safetensors", "optim.pt", "rng.pt", "state.json")


def checkpoint_name(step: int) -> str:
    return f"step_{step:06d}"


def rng_states() -> dict:
    states = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(ckpt_root: Path, step: int, model: torch.nn.Module, optimizer, state: dict) -> Path:
    ckpt_root = Path(ckpt_root)
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / checkpoint_name(step)
    tmp = ckpt_root / f".tmp_{checkpoint_name(step)}_{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_model(model, str(tmp / "model.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optim.pt")
    torch.save(rng_states(), tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps({**state, "step": step}, indent=2, sort_keys=True))
    lines = []
    for name in FILES:
        fsync_file(tmp / name)
        lines.append(f"{sha256_file(tmp / name)}  {name}\n")
    (tmp / "MANIFEST").write_text("".join(lines))
    fsync_file(tmp / "MANIFEST")
    fsync_dir(tmp)
    if final.exists():  # a stale copy of the same step (e.g. from before a rollback)
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(ckpt_root)
    atomic_write_text(ckpt_root / LATEST, final.name + "\n")
    return final


def verify_checkpoint(path: Path) -> str | None:
    """None when every file matches the MANIFEST, else what is wrong."""
    manifest = Path(path) / "MANIFEST"
    if not manifest.is_file():
        return "MANIFEST missing (incomplete checkpoint)"
    expected = {}
    for line in manifest.read_text().splitlines():
        digest, _, name = line.partition("  ")
        expected[name] = digest
    for name in FILES:
        if name not in expected:
            return f"{name} not listed in MANIFEST"
        if not (Path(path) / name).is_file():
            return f"{name} missing"
        if sha256_file(Path(path) / name) != expected[name]:
            return f"{name} does not match its sha256 in MANIFEST (corrupt)"
    return None


def find_resumable(ckpt_root: Path) -> tuple[Path | None, list[str]]:
    """The newest checkpoint that verifies, and notes on the ones skipped on the way."""
    ckpt_root = Path(ckpt_root)
    if not ckpt_root.is_dir():
        return None, []
    candidates = sorted((p for p in ckpt_root.glob("step_*") if p.is_dir()), reverse=True)
    latest = ckpt_root / LATEST
    if latest.is_file():
        named = ckpt_root / latest.read_text().strip()
        if named in candidates:  # try what `latest` names first, then older ones
            candidates.remove(named)
            candidates.insert(0, named)
    notes = []
    for path in candidates:
        problem = verify_checkpoint(path)
        if problem is None:
            return path, notes
        notes.append(f"skipped {path.name}: {problem}")
    return None, notes


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer=None, device="cpu") -> dict:
    """Loads weights (and optimizer and RNG states when an optimizer is given) from a verified
    checkpoint; returns its state.json."""
    path = Path(path)
    problem = verify_checkpoint(path)
    if problem:
        raise CheckpointError(f"checkpoint {path} is not usable: {problem}")
    try:
        missing, unexpected = load_model(model, str(path / "model.safetensors"), strict=False, device=str(device))
    except RuntimeError as e:
        raise CheckpointError(
            f"checkpoint {path} does not fit this model ({str(e).splitlines()[0]}); the model config "
            "changed since it was saved: restore the config or start a new run (run.name)"
        ) from None
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not fit this model (missing {missing[:3]}, unexpected {unexpected[:3]}); "
            "start a new run (run.name) or restore the config it was trained with"
        )
    state = json.loads((path / "state.json").read_text())
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(path / "optim.pt", map_location=device, weights_only=True))
        restore_rng_states(torch.load(path / "rng.pt", weights_only=False))
    return state


def load_trained_model(run_dir: str | os.PathLike, device: str | torch.device = "cpu"):
    """(model in eval mode, tokenizer, config) from a run directory's newest valid checkpoint."""
    from loom.config import load_config
    from loom.model import GPT
    from loom.tokenizer import Tokenizer

    run_dir = Path(run_dir)
    if not (run_dir / "config.toml").is_file():
        raise CheckpointError(f"{run_dir} is not a loom run (no config.toml); train one with `loom train`")
    cfg = load_config(run_dir / "config.toml")
    path, notes = find_resumable(run_dir / "checkpoints")
    if path is None:
        detail = f" ({'; '.join(notes)})" if notes else ""
        raise CheckpointError(f"{run_dir} has no complete checkpoint yet{detail}")
    model = GPT(cfg.model)
    load_checkpoint(path, model, device=device)
    model.to(device).eval()
    return model, Tokenizer.from_file(run_dir / "tokenizer.json"), cfg
