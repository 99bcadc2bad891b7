"""Checkpoints: written atomically, checksummed, and found again on resume.

A checkpoint is a directory `checkpoints/step_NNNNNN/` holding
  model.safetensors   the weights (tied tensors stored once)
  optim.pt            the optimizer state
  rng.pt              every random-number generator state (torch CPU and CUDA, numpy, random)
  state.json          step, loader position, tokens seen, health state: what the run computed
  timing.json         wall-clock figures: seconds trained, wall time and energy for the cost
                      meter, when it was saved
  MANIFEST            sha256 of each file above, in `sha256sum` format (`sha256sum -c` checks it)

Everything but timing.json depends only on the config, the data and the seed: two identical runs
on a CPU write the same bytes, and their MANIFESTs differ only in timing.json's line. A
checkpoint written before timing.json existed keeps those figures in state.json; it still loads.

A sharded run (FSDP2 or tensor parallel) writes instead, with `torch.distributed.checkpoint`
(DCP), `shards/`: every rank its own pieces of the weights and optimizer state
(`__<rank>_0.distcp`, keys `model.*` and `optim.*`) and rank 0 the `.metadata` that says where
each piece of each tensor lies, beside rng.pt, state.json and timing.json; the MANIFEST lists
every file. DCP reshards on load, so such a checkpoint resumes
at any layout, one process included, and `load_trained_model` reads it in one process without
any process group. `consolidate` writes its weights as one model.safetensors.

It is written into a temporary directory, every file and the directory fsynced, then renamed
into place, and only then is `checkpoints/latest` (a one-line text file naming it) replaced.
A crash at any moment leaves either the old or the new checkpoint complete, never a half one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from loom.errors import CheckpointError
from loom.util import atomic_write_text, fsync_dir, fsync_file, sha256_file

LATEST = "latest"
FILES = ("model.safetensors", "optim.pt", "rng.pt", "state.json")
TIMING = "timing.json"  # optional: older checkpoints have none
SHARDED_FILES = ("shards/.metadata", "rng.pt", "state.json")  # and each rank's pieces in shards/


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


def _cpu_copy(obj, clone: bool):
    """`obj` (nested dicts, lists, tuples of tensors and plain values) with every tensor on the
    CPU; cloned when `clone`, so the copy does not change when training goes on."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=clone)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v, clone) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_copy(v, clone) for v in obj)
    return obj


def _model_tensors(model: torch.nn.Module, clone: bool) -> tuple[dict, dict]:
    """The weights to store, with tied (shared) tensors stored once under the first of their
    names in sorted order, and metadata naming the others: the layout `safetensors.torch.
    save_model` writes and `load_model` reads."""
    state = model.state_dict()
    by_storage: dict[tuple, list[str]] = {}
    for name, tensor in state.items():
        by_storage.setdefault((tensor.device, tensor.untyped_storage().data_ptr()), []).append(name)
    tensors, metadata = {}, {}
    for names in by_storage.values():
        keep, *others = sorted(names)
        tensors[keep] = _cpu_copy(state[keep], clone).contiguous()
        for other in others:
            metadata[other] = keep
    return tensors, metadata


class CheckpointWriter:
    """Saves checkpoints, in the calling thread or (`background=True`) in a writer thread, one
    at a time: the loop waits only for a CPU copy of the state, and for the previous save to
    finish before it starts the next. After each save, older checkpoints beyond the retention
    policy are deleted: the newest `keep_last`, every step that is a multiple of `keep_every`,
    and whatever `latest` names are kept. `delay_s` pauses after each file (fault drills)."""

    def __init__(self, ckpt_root: Path, keep_last: int = 3, keep_every: int = 0, background: bool = False,
                 delay_s: float = 0.0):
        self.ckpt_root = Path(ckpt_root)
        self.keep_last, self.keep_every, self.background, self.delay_s = keep_last, keep_every, background, delay_s
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def save(self, step: int, model: torch.nn.Module, optimizer, state: dict, timing: dict | None = None) -> None:
        """`state` must depend only on what was computed; wall-clock figures go in `timing`."""
        self.wait()
        tensors, metadata = _model_tensors(model, clone=self.background)
        optim = _cpu_copy(optimizer.state_dict(), clone=self.background)
        rng = rng_states()
        if not self.background:
            self._write(step, tensors, metadata, optim, rng, state, timing)
            return

        def run():
            try:
                self._write(step, tensors, metadata, optim, rng, state, timing)
            except BaseException as e:  # re-raised in the loop's thread by wait()
                self._error = e

        self._thread = threading.Thread(target=run, name="loom-checkpoint", daemon=False)
        self._thread.start()

    def wait(self) -> None:
        """Blocks until the save in progress is on disk; raises its error if it failed."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _write(self, step, tensors, metadata, optim, rng, state, timing) -> Path:
        try:
            path = _write_checkpoint(self.ckpt_root, step, tensors, metadata, optim, rng, state, timing, self.delay_s)
        except (OSError, RuntimeError, SafetensorError) as e:  # safetensors and torch.save wrap I/O errors
            raise _write_error(step, self.ckpt_root, e) from None
        prune_checkpoints(self.ckpt_root, self.keep_last, self.keep_every)
        return path


class ShardedCheckpointWriter:
    """Saves the checkpoints of a sharded run: every rank calls `save` together. DCP writes each
    rank's pieces into `shards/` of one temporary directory; then rank 0 adds rng.pt,
    state.json and timing.json, seals it (MANIFEST, rename, `latest`) and prunes, as
    `CheckpointWriter` does. With `background`, `dcp.async_save` copies the shards to CPU memory
    and writes them in a thread (its collectives on a gloo group of their own), so the loop goes
    on while they are written; the checkpoint is sealed at the next save or at `wait()`.

    The run directory must be one filesystem that every rank sees (shared storage across nodes)."""

    def __init__(self, ckpt_root: Path, keep_last: int = 3, keep_every: int = 0, background: bool = False,
                 delay_s: float = 0.0):
        import torch.distributed as dist

        self.ckpt_root = Path(ckpt_root)
        self.keep_last, self.keep_every, self.delay_s = keep_last, keep_every, delay_s
        self.is_main = dist.get_rank() == 0
        owner = [os.getpid()]
        dist.broadcast_object_list(owner, src=0)  # temporaries are named for rank 0, who tidies them
        self.owner = owner[0]
        self.group = dist.new_group(backend="gloo") if background else None
        self._pending: tuple | None = None

    def save(self, step: int, model: torch.nn.Module, optimizer, state: dict, timing: dict | None = None) -> None:
        import torch.distributed as dist
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        self.wait()
        model_state, optim_state = get_state_dict(model, optimizer)
        tmp = self.ckpt_root / f".tmp_{checkpoint_name(step)}_{self.owner}"
        if self.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        dist.barrier()
        both = {"model": model_state, "optim": optim_state}  # one save: two at once would share the group
        try:
            if self.group is None:
                dcp.save(both, checkpoint_id=tmp / "shards")
                future = None
            else:
                future = dcp.async_save(both, checkpoint_id=tmp / "shards", process_group=self.group)
        except (OSError, RuntimeError) as e:
            raise _write_error(step, self.ckpt_root, e) from None
        self._pending = (future, tmp, step, rng_states(), state, timing)
        if self.group is None:
            self.wait()

    def wait(self) -> None:
        """Until the save in progress is sealed (a collective: every rank calls it)."""
        import torch.distributed as dist

        if self._pending is None:
            return
        future, tmp, step, rng, state, timing = self._pending
        self._pending = None
        try:
            if future is not None:
                future.result()
        except (OSError, RuntimeError) as e:
            raise _write_error(step, self.ckpt_root, e) from None
        dist.barrier()  # every rank's shards are on disk
        if self.is_main:
            try:
                torch.save(rng, tmp / "rng.pt")
                (tmp / "state.json").write_text(_json({**state, "step": step}))
                (tmp / TIMING).write_text(_json({**(timing or {}), "saved_at": round(time.time(), 3)}))
                for name in ("rng.pt", "state.json", TIMING):
                    fsync_file(tmp / name)
                    if self.delay_s:
                        time.sleep(self.delay_s)
                _seal(tmp, self.ckpt_root / checkpoint_name(step))
            except OSError as e:
                shutil.rmtree(tmp, ignore_errors=True)
                raise _write_error(step, self.ckpt_root, e) from None
            prune_checkpoints(self.ckpt_root, self.keep_last, self.keep_every)
        dist.barrier()


def _write_error(step: int, ckpt_root: Path, e: Exception) -> CheckpointError:
    reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0]
    return CheckpointError(f"could not write checkpoint step {step} under {ckpt_root}: {reason}; the previous "
                           "checkpoint is intact. Free space or fix permissions there, then run the same command "
                           "to resume")


def save_checkpoint(ckpt_root: Path, step: int, model: torch.nn.Module, optimizer, state: dict,
                    timing: dict | None = None) -> Path:
    """Saves one checkpoint now, in this thread, keeping every older one."""
    tensors, metadata = _model_tensors(model, clone=False)
    return _write_checkpoint(Path(ckpt_root), step, tensors, metadata, _cpu_copy(optimizer.state_dict(), False),
                             rng_states(), state, timing)


def save_weights_checkpoint(ckpt_root: Path, model: torch.nn.Module, state: dict) -> Path:
    """A step-0 checkpoint of weights alone (no optimizer moments, no data position): what
    `loom import hf` writes. `state.json` says `"weights_only": true`, so training starts from
    these weights afresh (`is_weights_only`) instead of resuming."""
    tensors, metadata = _model_tensors(model, clone=False)
    return _write_checkpoint(Path(ckpt_root), 0, tensors, metadata, {}, rng_states(),
                             {**state, "weights_only": True, "tokens_seen": 0})


def is_weights_only(path: Path) -> bool:
    try:
        return bool(json.loads((Path(path) / "state.json").read_text()).get("weights_only"))
    except (OSError, ValueError):
        return False


def _json(obj: dict) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)


def _write_checkpoint(ckpt_root: Path, step: int, tensors: dict, metadata: dict, optim: dict, rng: dict,
                      state: dict, timing: dict | None = None, delay_s: float = 0.0) -> Path:
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / checkpoint_name(step)
    tmp = ckpt_root / f".tmp_{checkpoint_name(step)}_{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        writers = {
            "model.safetensors": lambda p: save_file(tensors, str(p), metadata=metadata or None),
            "optim.pt": lambda p: torch.save(optim, p),
            "rng.pt": lambda p: torch.save(rng, p),
            "state.json": lambda p: p.write_text(_json({**state, "step": step})),
            TIMING: lambda p: p.write_text(_json({**(timing or {}), "saved_at": round(time.time(), 3)})),
        }
        for name in (*FILES, TIMING):
            writers[name](tmp / name)
            fsync_file(tmp / name)
            if delay_s:
                time.sleep(delay_s)
        _seal(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _seal(tmp: Path, final: Path) -> None:
    """Lists every file under `tmp` (all fsynced already) with its sha256 in a MANIFEST, renames
    `tmp` to `final` and points `latest` at it."""
    names = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
    (tmp / "MANIFEST").write_text("".join(f"{sha256_file(tmp / name)}  {name}\n" for name in names))
    fsync_file(tmp / "MANIFEST")
    for directory in {(tmp / name).parent for name in names}:
        fsync_dir(directory)
    fsync_dir(tmp)
    if final.exists():  # a stale copy of the same step (e.g. from before a rollback)
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    atomic_write_text(final.parent / LATEST, final.name + "\n")


def prune_checkpoints(ckpt_root: Path, keep_last: int, keep_every: int = 0) -> list[str]:
    """Deletes checkpoints outside the retention policy (see `CheckpointWriter`); returns their names."""
    steps = sorted(p for p in Path(ckpt_root).glob("step_*") if p.is_dir())
    latest = Path(ckpt_root) / LATEST
    named = latest.read_text().strip() if latest.is_file() else None
    keep = {p.name for p in steps[-keep_last:]} | {named}
    if keep_every > 0:
        keep |= {p.name for p in steps if int(p.name.split("_")[1]) % keep_every == 0}
    removed = []
    for path in steps:
        if path.name not in keep:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    return removed


def verify_checkpoint(path: Path) -> str | None:
    """None when every file matches the MANIFEST, else what is wrong."""
    manifest = Path(path) / "MANIFEST"
    if not manifest.is_file():
        return "MANIFEST missing (incomplete checkpoint)"
    expected = {}
    for line in manifest.read_text().splitlines():
        digest, _, name = line.partition("  ")
        expected[name] = digest
    required = FILES if "model.safetensors" in expected or not is_sharded_checkpoint(path) else SHARDED_FILES
    for name in required:
        if name not in expected:
            return f"{name} not listed in MANIFEST"
    for name in expected:
        if not (Path(path) / name).is_file():
            return f"{name} missing"
        if sha256_file(Path(path) / name) != expected[name]:
            return f"{name} does not match its sha256 in MANIFEST (corrupt)"
    return None


def is_sharded_checkpoint(path: Path) -> bool:
    return (Path(path) / "shards" / ".metadata").is_file()


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


# Checkpoints written before the attention and SwiGLU projections were split (for tensor
# parallelism) hold them fused: rows [keys; values] and [gate; up].
_FUSED = {".kv_proj.weight": (".k_proj.weight", ".v_proj.weight"),
          ".gate_up_proj.weight": (".gate_proj.weight", ".up_proj.weight")}


def stored_weights(path: Path, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights in a checkpoint's model.safetensors by parameter name, for `model`: each tied
    parameter (stored once) under all of its names, and fused projections of older checkpoints split."""
    weights = load_file(path)
    for names in tied_names(model):  # whichever name the file used, metadata or none
        present = next((name for name in names if name in weights), None)
        for name in names if present else ():
            weights.setdefault(name, weights[present])
    for name in list(weights):
        for fused, (first, second) in _FUSED.items():
            if name.endswith(fused):
                stem = name[: -len(fused)]
                weights[stem + first], weights[stem + second] = weights.pop(name).chunk(2, dim=0)
    return weights


def tied_names(model: torch.nn.Module) -> list[list[str]]:
    """The names of each parameter that several modules share (the tied head and embedding)."""
    by_identity: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        by_identity.setdefault(id(param), []).append(name)
    return [names for names in by_identity.values() if len(names) > 1]


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer=None, device="cpu", sharded: bool = False) -> dict:
    """Loads weights (and optimizer and RNG states when an optimizer is given) from a verified
    checkpoint, one-file or sharded, into `model` at its present layout; returns its state.json
    with timing.json under "timing" (for a checkpoint older than timing.json, the same figures
    taken from its state.json). `sharded`: the model's parameters are DTensors (FSDP2, tensor
    parallel); a one-file checkpoint is then read whole by every process, which keeps its pieces."""
    path = Path(path)
    problem = verify_checkpoint(path)
    if problem:
        raise CheckpointError(f"checkpoint {path} is not usable: {problem}")
    if is_sharded_checkpoint(path):
        return _load_sharded(path, model, optimizer)
    try:
        weights = stored_weights(path / "model.safetensors", model)
        if sharded:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

            result = set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True, strict=False))
        else:
            result = model.load_state_dict(weights, strict=False)
        missing, unexpected = result.missing_keys, result.unexpected_keys
    except RuntimeError as e:
        raise CheckpointError(
            f"checkpoint {path} does not fit this model ({str(e).splitlines()[0]}); the model config "
            "changed since it was saved: restore the config or start a new run (run.name)"
        ) from None
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not fit this model (missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]}); "
            "start a new run (run.name) or restore the config it was trained with"
        )
    if optimizer is not None:
        optim = torch.load(path / "optim.pt", map_location="cpu" if sharded else device, weights_only=True)
        groups = optim.get("param_groups")  # None: two optimizers' states (loom.train.optim.MuonAndAdamW)
        if groups is None and isinstance(optimizer, torch.optim.Optimizer):
            raise CheckpointError(f"the optimizer state in {path} is Muon's with AdamW's, and this run trains with "
                                  "AdamW alone; set train.optimizer = \"muon\" as it was, or start a new run")
        named = groups is not None and any(isinstance(k, str) for g in groups for k in g["params"])
        if sharded or named:
            # keyed by parameter name (written whole by a sharded run of an earlier loom): any layout
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(model, optimizer, optim, options=StateDictOptions(full_state_dict=True))
        else:
            try:
                optimizer.load_state_dict(optim)
            except ValueError as e:  # e.g. written before the projections were split: other parameters
                raise CheckpointError(f"the optimizer state in {path} does not fit this model's parameters ({e}); "
                                      "its weights still load for sampling and evaluation, but to train on "
                                      "start a new run (run.name) from them") from None
        restore_rng_states(torch.load(path / "rng.pt", weights_only=False))
    return _recorded_state(path)


def _load_sharded(path: Path, model: torch.nn.Module, optimizer) -> dict:
    """A DCP checkpoint into `model` (and `optimizer`) at whatever layout they have now: DCP reads
    the pieces of each tensor this rank holds. Without a process group, one process reads all."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    if optimizer is None:  # the weights only: DCP reads just the keys asked for
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

        wanted = {"model": get_model_state_dict(model)}
        _dcp_load(path, wanted, dcp)
        set_model_state_dict(model, wanted["model"])
        return _recorded_state(path)
    model_state, optim_state = get_state_dict(model, optimizer)
    both = {"model": model_state, "optim": optim_state}
    _dcp_load(path, both, dcp)
    set_state_dict(model, optimizer, model_state_dict=both["model"], optim_state_dict=both["optim"])
    restore_rng_states(torch.load(path / "rng.pt", weights_only=False))
    return _recorded_state(path)


def _dcp_load(path: Path, state: dict, dcp) -> None:
    import torch.distributed as dist

    alone = not (dist.is_available() and dist.is_initialized())
    try:
        with warnings.catch_warnings():  # one process reading all of it is what is meant here
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(state, checkpoint_id=path / "shards", no_dist=alone)
    except Exception as e:  # DCP wraps every rank's failure in one CheckpointException
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"checkpoint {path} does not fit this model ({first[:300]}); the model config changed "
            "since it was saved: restore the config or start a new run (run.name)"
        ) from None


def _recorded_state(path: Path) -> dict:
    """state.json, with timing.json under "timing" (for a checkpoint older than timing.json, the
    same figures taken from its state.json)."""
    state = json.loads((path / "state.json").read_text())
    if (path / TIMING).is_file():
        state["timing"] = json.loads((path / TIMING).read_text())
    else:
        state["timing"] = {"train_seconds": state.pop("train_seconds", 0.0), "cost": state.pop("cost", {})}
    return state


def consolidate(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> tuple[Path, int]:
    """The weights of a run's newest valid checkpoint (sharded or not) as one safetensors file,
    tied tensors stored once, written atomically (default `<run>/model.safetensors`): what
    `loom consolidate` writes for other tools. Returns (the file, the checkpoint's step)."""
    model, _, path = _newest_model(Path(run_dir), "cpu")
    tensors, metadata = _model_tensors(model, clone=False)
    out = Path(out) if out else Path(run_dir) / "model.safetensors"
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=metadata or None)
        fsync_file(tmp)
        os.replace(tmp, out)
        fsync_dir(out.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return out, json.loads((path / "state.json").read_text())["step"]


def load_trained_model(run_dir: str | os.PathLike, device: str | torch.device = "cpu"):
    """(model in eval mode, tokenizer, config) from a run directory's newest valid checkpoint."""
    from loom.tokenizer import Tokenizer

    run_dir = Path(run_dir)
    model, cfg, _ = _newest_model(run_dir, device)
    return model, Tokenizer.from_file(run_dir / "tokenizer.json"), cfg


def _newest_model(run_dir: Path, device):
    """(model in eval mode, config, checkpoint) of a run's newest valid checkpoint."""
    from loom.config import load_config
    from loom.model import GPT

    if not (run_dir / "config.toml").is_file():
        raise CheckpointError(f"{run_dir} is not a loom run (no config.toml); train one with `loom train`")
    cfg = load_config(run_dir / "config.toml")
    path, notes = find_resumable(run_dir / "checkpoints")
    if path is None:
        detail = f" ({'; '.join(notes)})" if notes else ""
        raise CheckpointError(f"{run_dir} has no complete checkpoint yet{detail}")
    model = GPT(cfg.model)
    load_checkpoint(path, model, device=device)
    return model.to(device).eval(), cfg, path
