"""The training loop: `train(cfg)`.

One optimizer step: `accum` micro-batches per process, each forward/backward under bf16
autocast on CUDA (fp32 elsewhere), gradients averaged across processes by DDP on the last
micro-batch only, the global gradient norm clipped, AdamW stepped at the scheduled learning
rate (linear warmup, then cosine decay to `lr * min_lr_ratio`). Validation loss is measured at
the start, every `eval_every` steps and at the end; a checkpoint is saved every `ckpt_every`
steps and at the end; rank 0 writes the run directory.

Resume is exact: the checkpoint carries the weights, the optimizer, the step, the loader's
position and every RNG state, so on the CPU N steps + resume + M steps equals N + M steps bit
for bit.

Does not own: where tokens come from (a `ShardLoader` hands out batches), the network (`GPT`),
or how processes are launched (torchrun; see `distributed`).
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from loom.config import LoomConfig
from loom.data import ShardLoader, read_manifest, shard_dir, tokenizer_path
from loom.errors import ConfigError, DataError
from loom.model import GPT
from loom.train import distributed
from loom.train.checkpoint import find_resumable, load_checkpoint, save_checkpoint
from loom.util import atomic_write_text


def lr_at(step: int, cfg) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup, then cosine decay."""
    t = cfg.train
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    progress = (step - t.warmup_steps) / max(1, t.steps - t.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return t.lr * (t.min_lr_ratio + (1 - t.min_lr_ratio) * cosine)


def make_optimizer(model: torch.nn.Module, cfg, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and embeddings only (not on norm gains)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(
        groups, lr=cfg.train.lr, betas=(cfg.train.beta1, cfg.train.beta2), fused=device.type == "cuda"
    )


def autocast_context(device: torch.device, dtype: str):
    if dtype == "bfloat16" or (dtype == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class StopRequest:
    """Ctrl-C (SIGINT) or SIGTERM asks the loop to stop after the current step and save a
    checkpoint, so nothing done is lost; a second Ctrl-C stops at once."""

    def __init__(self):
        self.requested = False
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def requested_tensor(self, device) -> torch.Tensor:
        return torch.tensor(float(self.requested), device=device)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


class RunLog:
    """metrics.jsonl, events.jsonl and the live progress line (rank 0 only)."""

    def __init__(self, run_dir: Path, enabled: bool):
        self.enabled = enabled
        self.metrics_path, self.events_path = run_dir / "metrics.jsonl", run_dir / "events.jsonl"
        self.tty = sys.stderr.isatty()
        self._line_open = False

    def truncate_after(self, step: int) -> None:
        """On resume from `step`, drops records that the resumed run will write again."""
        if not self.enabled or not self.metrics_path.exists():
            return
        kept = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
            if rec["step"] < step or (rec["step"] == step and "loss" in rec):
                kept.append(line + "\n")
        atomic_write_text(self.metrics_path, "".join(kept))

    def _append(self, path: Path, record: dict) -> None:
        if self.enabled:
            with open(path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def metric(self, record: dict) -> None:
        self._append(self.metrics_path, record)

    def event(self, kind: str, **details) -> None:
        self._append(self.events_path, {"time": time.time(), "event": kind, **details})

    def say(self, text: str, transient: bool = False) -> None:
        """Prints a line; transient lines overwrite each other on a terminal."""
        if not self.enabled:
            return
        if transient and self.tty:
            print(f"\r{text}\033[K", end="", file=sys.stderr, flush=True)
            self._line_open = True
            return
        if self._line_open:
            print(file=sys.stderr)
            self._line_open = False
        print(text, file=sys.stderr, flush=True)


@torch.no_grad()
def evaluate(model, cfg, info, device) -> float:
    """Mean validation loss over `eval_batches` micro-batches per process (fixed windows)."""
    loader = ShardLoader(shard_dir(cfg), "val", cfg.train.seq_len, cfg.train.micro_batch,
                         info.rank, info.world_size, seed=cfg.run.seed)
    batches = min(cfg.train.eval_batches, loader.batches_per_epoch)
    was_training = model.training
    model.eval()
    total = torch.zeros((), device=device)
    for _ in range(batches):
        x, y = loader.next_batch()
        with autocast_context(device, cfg.train.dtype):
            total += model(x.to(device), y.to(device)).float()
    model.train(was_training)
    return distributed.all_reduce_mean(total / batches).item()


def train(cfg: LoomConfig, resume: str = "auto") -> dict:
    """Trains the model `cfg` describes on the shards at `data.dir`.

    resume: "auto" continues from the newest valid checkpoint of the run if there is one,
    "always" requires one, "never" refuses to touch a run directory that already has one.
    Returns a summary: steps, first and last validation loss, tokens/s, run directory.
    """
    info = distributed.init_distributed(cfg.train.device)
    stop = StopRequest()
    try:
        return _train(cfg, resume, info, stop)
    finally:
        stop.restore()
        distributed.shutdown()


def _train(cfg: LoomConfig, resume: str, info, stop: StopRequest) -> dict:
    t = cfg.train
    device = info.device
    run_dir = cfg.run_dir
    manifest = read_manifest(shard_dir(cfg))
    if manifest["vocab_size"] > cfg.model.vocab_size:
        raise ConfigError(f"the shards in {shard_dir(cfg)} use {manifest['vocab_size']} token ids but "
                          f"model.vocab_size is {cfg.model.vocab_size}; raise it or rebuild the data")
    per_step = t.micro_batch * t.seq_len * info.world_size
    batch_tokens = t.batch_tokens or per_step
    if batch_tokens % per_step:
        raise ConfigError(
            f"train.batch_tokens ({batch_tokens}) is not a multiple of micro_batch * seq_len * processes "
            f"({t.micro_batch} * {t.seq_len} * {info.world_size} = {per_step})"
        )
    accum = batch_tokens // per_step

    ckpt_root = run_dir / "checkpoints"
    resume_from, notes = (None, []) if resume == "never" else find_resumable(ckpt_root)
    if resume == "never" and any(ckpt_root.glob("step_*")):
        raise ConfigError(f"{run_dir} already holds checkpoints; resume it or pick another run.name")
    if resume == "always" and resume_from is None:
        raise DataError(f"no valid checkpoint to resume in {ckpt_root}" + (f" ({'; '.join(notes)})" if notes else ""))

    log = RunLog(run_dir, info.is_main)
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.toml", cfg.to_toml())
        shutil.copyfile(tokenizer_path(cfg), run_dir / "tokenizer.json")
    distributed.barrier()

    torch.manual_seed(cfg.run.seed)
    model = GPT(cfg.model).to(device)
    optimizer = make_optimizer(model, cfg, device)
    loader = ShardLoader(shard_dir(cfg), "train", t.seq_len, t.micro_batch, info.rank, info.world_size, cfg.run.seed)

    step, tokens_seen, train_seconds = 0, 0, 0.0
    for note in notes:
        log.event("checkpoint_skipped", detail=note)
        log.say(f"[loom] {note}")
    if resume_from is not None:
        state = load_checkpoint(resume_from, model, optimizer, device)
        loader.load_state_dict(state["loader"])
        step, tokens_seen, train_seconds = state["step"], state["tokens_seen"], state["train_seconds"]
        log.truncate_after(step)
        log.event("resume", step=step, checkpoint=resume_from.name)
        log.say(f"[loom] resumed {run_dir} at step {step} from {resume_from.name}")
    else:
        log.event("start", world_size=info.world_size, device=str(device))

    n_params = model.num_params()
    flops_per_token = model.flops_per_token(t.seq_len)
    log.say(f"[loom] {run_dir}: {n_params / 1e6:.2f}M parameters, {flops_per_token / 1e6:.1f} MFLOP/token, "
            f"{batch_tokens:,} tokens/step ({info.world_size} process(es) x {accum} micro-batch(es) x "
            f"{t.micro_batch} x {t.seq_len}), {t.steps} steps on {device}")

    train_model = torch.compile(model) if t.compile else model
    if info.world_size > 1:
        train_model = DDP(train_model, device_ids=[device.index] if device.type == "cuda" else None)

    def checkpoint(at_step: int) -> None:
        if info.is_main:
            save_checkpoint(ckpt_root, at_step, model, optimizer, {
                "loader": loader.state_dict(), "tokens_seen": tokens_seen, "train_seconds": train_seconds,
            })
        distributed.barrier()

    first_val = last_val = None
    window_tokens, window_start = 0, time.perf_counter()
    while True:
        if step % t.eval_every == 0 or step == t.steps:
            last_val = evaluate(train_model, cfg, info, device)
            first_val = last_val if first_val is None else first_val
            log.metric({"step": step, "val_loss": last_val, "elapsed_s": round(train_seconds, 3)})
            log.say(f"step {step:>6}/{t.steps}  val_loss {last_val:.4f}")
        if step >= t.steps:
            break

        step_start = time.perf_counter()
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), device=device)
        for micro in range(accum):
            x, y = loader.next_batch()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            sync = micro == accum - 1 or info.world_size == 1
            with (contextlib.nullcontext() if sync else train_model.no_sync()), autocast_context(device, t.dtype):
                loss = train_model(x, y)
                (loss / accum).backward()
            loss_sum += loss.detach().float()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip or float("inf"))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        tokens_seen += batch_tokens
        # One collective for the loss and the stop request, so all ranks stop at the same step.
        reduced = distributed.all_reduce_mean(torch.stack([loss_sum / accum, stop.requested_tensor(device)]))
        train_loss, stop_now = reduced.tolist()  # .tolist() also waits for the device
        train_seconds += time.perf_counter() - step_start
        window_tokens += batch_tokens

        if step % t.log_every == 0 or step == t.steps:
            now = time.perf_counter()
            tokens_per_s = window_tokens / max(now - window_start, 1e-9)
            window_tokens, window_start = 0, now
            log.metric({"step": step, "loss": train_loss, "lr": lr, "grad_norm": float(grad_norm),
                        "tokens_per_s": round(tokens_per_s, 1), "tokens": tokens_seen,
                        "elapsed_s": round(train_seconds, 3)})
            log.say(f"step {step:>6}/{t.steps}  loss {train_loss:.4f}  lr {lr:.2e}  "
                    f"{tokens_per_s:,.0f} tok/s  {train_seconds:.0f}s", transient=True)
        if step % t.ckpt_every == 0 or step == t.steps or stop_now > 0:
            checkpoint(step)
        if stop_now > 0:
            log.event("interrupted", step=step)
            log.say(f"[loom] interrupted: checkpoint saved at step {step}; run the same command to continue")
            break

    summary = {
        "run_dir": str(run_dir),
        "interrupted": stop.requested,
        "steps": step,
        "tokens": tokens_seen,
        "first_val_loss": first_val,
        "final_val_loss": last_val,
        "train_seconds": train_seconds,
        "tokens_per_s": tokens_seen / max(train_seconds, 1e-9),
        "parameters": n_params,
        "flops_per_token": flops_per_token,
    }
    log.event("end", step=step, val_loss=last_val)
    if info.is_main:
        summary["first_val_loss"] = first_logged_val_loss(log.metrics_path, first_val)
        write_report(run_dir, cfg, summary)
    return summary


def first_logged_val_loss(metrics_path: Path, default: float | None) -> float | None:
    """The run's first validation loss, also when this process started from a resume."""
    for line in metrics_path.read_text().splitlines():
        rec = json.loads(line)
        if "val_loss" in rec:
            return rec["val_loss"]
    return default


def write_report(run_dir: Path, cfg: LoomConfig, s: dict) -> None:
    m = cfg.model
    lines = [
        f"# Run {cfg.run.name}",
        "",
        f"- model: {m.n_layer} layers, width {m.d_model}, {m.n_head} heads ({m.n_kv_head} key/value), "
        f"vocab {m.vocab_size}, {s['parameters'] / 1e6:.2f}M parameters, {s['flops_per_token'] / 1e6:.1f} MFLOP/token",
        f"- data: {cfg.data.dir} (sources: {', '.join(src.name for src in cfg.data.sources)}; see its data_card.md)",
        f"- trained: {s['steps']} steps, {s['tokens']:,} tokens, {s['train_seconds']:.0f}s of training "
        f"(mean {s['tokens_per_s']:,.0f} tokens/s over the whole run, resumes included)",
        f"- validation loss: {s['first_val_loss']:.4f} at the first evaluation, {s['final_val_loss']:.4f} at the end",
        "",
        "Per-step figures are in metrics.jsonl, health and resume events in events.jsonl.",
        "",
    ]
    atomic_write_text(run_dir / "report.md", "\n".join(lines))
