"""The training loop: `train(cfg)`.

One optimizer step: `accum` micro-batches per process, each forward/backward under bf16
autocast on CUDA (fp32 elsewhere), gradients averaged across processes by DDP on the last
micro-batch only, the global gradient norm clipped, AdamW stepped at the scheduled learning
rate (linear warmup, then cosine decay to `lr * min_lr_ratio`). Validation loss is measured at
the start, every `eval_every` steps and at the end; a checkpoint is saved every `ckpt_every`
steps and at the end; rank 0 writes the run directory.

Resume is exact: the checkpoint carries the weights, the optimizer, the step, the loader's
position and every RNG state, so on the CPU N steps + resume + M steps equals N + M steps bit
for bit. Runs are reproducible: torch's, numpy's and Python's global generators are all seeded
from `run.seed` at the start, on every rank alike (the model must start the same on every rank,
and each rank's data comes from the loader's own seeded order, not from these generators), so
two identical runs on a CPU write byte-identical checkpoints but for their timing.json.

A run found complete (its checkpoint at `train.steps` or later) trains nothing: `train` returns
the figures the run recorded when it finished, marked `already_complete`.

Does not own: where tokens come from (a `ShardLoader` hands out batches), the network (`GPT`),
or how processes are launched (torchrun; see `distributed`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from loom.checkpoint import CheckpointWriter, find_resumable, load_checkpoint
from loom.config import LoomConfig
from loom.data import ShardLoader, read_manifest, shard_dir, tokenizer_path
from loom.errors import ConfigError, DataError, TrainingError
from loom.model import GPT
from loom.model.moe import update_balance_bias
from loom.train import distributed
from loom.train.cost import CostMeter, budget_exceeded, uses_bf16
from loom.train.health import HANG_EXIT_CODE, FaultInjector, Heartbeat, SpikeDetector, Watchdog, stragglers
from loom.util import atomic_write_text, remove_leftovers


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
    if uses_bf16(device, dtype):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> None:
    """Seeds every global generator a run could draw from: torch (CPU and CUDA), numpy, random."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


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
    Returns a summary: steps, first and last validation loss, tokens/s, cost, run directory;
    `already_complete` is True when the run had finished before and nothing was trained (the
    figures are then the ones recorded when it finished).
    """
    info = distributed.init_distributed(cfg.train.device)
    stop = StopRequest()
    try:
        return _train(cfg, resume, info, stop)
    finally:
        stop.restore()
        distributed.shutdown()


class Guards:
    """The loop's health state that must survive a resume: detector histories, known bad data
    windows, and counts of what happened."""

    def __init__(self, cfg):
        h = cfg.health
        self.cfg = h
        self.loss = SpikeDetector(h.loss_spike_zscore, h.spike_window, h.spike_min_steps)
        self.grad = SpikeDetector(h.grad_spike_zscore, h.spike_window, h.spike_min_steps)
        self.skip_windows: set[tuple[int, int]] = set()
        self.nonfinite_windows: list[tuple[int, int]] = []  # this run of non-finite steps
        self.spikes_in_row = 0
        self.rollbacks = 0  # in this process
        self.counts = {"skipped_steps": 0, "rollbacks": 0, "skipped_windows": 0}

    def state_dict(self) -> dict:
        return {"loss_history": self.loss.state_dict(), "grad_history": self.grad.state_dict(),
                "skip_windows": sorted(self.skip_windows), "counts": dict(self.counts)}

    def load_state_dict(self, state: dict) -> None:
        self.loss.load_state_dict(state.get("loss_history", []))
        self.grad.load_state_dict(state.get("grad_history", []))
        self.skip_windows = {tuple(w) for w in state.get("skip_windows", [])}
        self.counts.update(state.get("counts", {}))
        self.nonfinite_windows, self.spikes_in_row = [], 0

    def judge(self, loss: float, grad_norm: float, window: tuple[int, int], step: int, log) -> str:
        """What to do with a finished forward/backward: "step", "skip" or "rollback"."""
        h = self.cfg
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            self.nonfinite_windows.append(window)
            n = len(self.nonfinite_windows)
            log.event("nonfinite", step=step, loss=str(loss), grad_norm=str(grad_norm), in_a_row=n)
            log.say(f"[loom] step {step}: non-finite loss {loss} / gradient norm {grad_norm}; "
                    f"step skipped ({n} in a row)")
            return "rollback" if h.nonfinite_limit and n >= h.nonfinite_limit else "skip"
        self.nonfinite_windows = []
        actions = ["step"]
        for name, detector, value, action in (("loss", self.loss, loss, h.loss_spike_action),
                                              ("grad_norm", self.grad, grad_norm, h.grad_spike_action)):
            z = detector.check(value)
            if z is None:
                continue
            log.event(f"{name}_spike", step=step, value=value, zscore=round(z, 2), action=action)
            log.say(f"[loom] step {step}: {name} spike {value:.4g} ({z:.1f} deviations above the mean); {action}")
            actions.append("step" if action == "log" else action)
        if len(actions) == 1:
            self.spikes_in_row = 0
            return "step"
        self.spikes_in_row += 1
        if self.spikes_in_row >= h.spike_patience:  # a new level, not a spike: learn it
            log.event("spike_level_accepted", step=step, spikes_in_a_row=self.spikes_in_row)
            self.loss.load_state_dict([])
            self.grad.load_state_dict([])
            self.spikes_in_row = 0
            return "step"
        return "rollback" if "rollback" in actions else "skip" if "skip" in actions else "step"


def moe_step(model: GPT, cfg, stepped: bool, report: bool) -> dict:
    """After an optimizer step of an MoE model: the loads of the step summed over micro-batches and
    ranks, the auxiliary-loss-free bias update when configured, and (when `report`) the routing
    metrics; `{}` for a dense model. Every rank calls it at every step (it may all-reduce)."""
    layers = model.moe_layers()
    if not layers:
        return {}
    rate = cfg.model.moe.bias_update_rate
    record = {}
    if (rate > 0 and stepped) or report:
        counts = distributed.all_reduce_sum(torch.stack([layer.load_counts for layer in layers]))  # (L, E)
        if rate > 0 and stepped:
            for layer, layer_counts in zip(layers, counts):
                update_balance_bias(layer, layer_counts, rate)
        if report:
            load = counts / counts.sum(-1, keepdim=True).clamp_min(1)
            record["moe"] = [
                {"load": [round(x, 4) for x in row.tolist()], "imbalance": round(float(row.max() / row.mean()), 3),
                 "entropy": round(float(layer.stats["entropy"]), 4), "dropped": round(float(layer.stats["dropped"]), 5),
                 "aux_loss": round(float(layer.stats["aux_loss"]), 5)}
                for layer, row in zip(layers, load)
            ]
    for layer in layers:
        layer.load_counts.zero_()
    return record


def _hang_reporter(run_dir: Path, rank: int, log: RunLog):
    def report(waited: float, stacks: dict) -> None:
        record = {"time": time.time(), "event": "hang", "rank": rank, "waited_s": round(waited, 1), "stacks": stacks}
        with open(run_dir / "events.jsonl", "a") as f:  # every rank reports its own hang
            f.write(json.dumps(record) + "\n")
        print(f"[loom] rank {rank}: no step finished for {waited:.0f}s; thread stacks written to "
              f"{run_dir / 'events.jsonl'}; exiting with code {HANG_EXIT_CODE} so the launcher restarts the run",
              file=sys.stderr, flush=True)

    return report


def _train(cfg: LoomConfig, resume: str, info, stop: StopRequest) -> dict:
    t, h = cfg.train, cfg.health
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
        remove_leftovers(ckpt_root, ".tmp_step_*")  # saves cut short by a crash; not a live writer's
    distributed.barrier()

    seed_everything(cfg.run.seed)
    model = GPT(cfg.model).to(device)
    optimizer = make_optimizer(model, cfg, device)
    loader = ShardLoader(shard_dir(cfg), "train", t.seq_len, t.micro_batch, info.rank, info.world_size, cfg.run.seed)
    n_params = model.num_params()
    flops_per_token = model.flops_per_token(t.seq_len)
    meter = CostMeter(cfg, device, info.world_size, flops_per_token)
    guards = Guards(cfg)
    faults = FaultInjector(cfg.faults, info.rank)
    writer = CheckpointWriter(ckpt_root, t.keep_last, t.keep_every, t.async_checkpoint, cfg.faults.checkpoint_delay_s)
    heartbeat = Heartbeat(run_dir, info.rank, h.heartbeat_s)
    counters = {"step": 0, "tokens_seen": 0, "train_seconds": 0.0}

    def restore(path: Path) -> None:
        state = load_checkpoint(path, model, optimizer, device)
        loader.load_state_dict(state["loader"])
        timing = state["timing"]
        counters.update(step=state["step"], tokens_seen=state["tokens_seen"],
                        train_seconds=timing.get("train_seconds", 0.0))
        meter.load_state_dict(timing.get("cost", {}))
        guards.load_state_dict(state.get("health", {}))

    for note in notes:
        log.event("checkpoint_skipped", detail=note)
        log.say(f"[loom] {note}")
    if resume_from is not None:
        restore(resume_from)
        if counters["step"] >= t.steps:
            log.say(f"[loom] {run_dir} is already complete at step {counters['step']} (train.steps is {t.steps}): "
                    "nothing to train; raise train.steps to train on, or pick another run.name")
            recorded = recorded_summary(run_dir, counters["step"])
            if recorded is None:  # no end event (a crash after the last save, an older loom): what is on disk
                meter.started = time.monotonic()  # the wall time the checkpoint holds, none of this call's
                vals = [r["val_loss"] for r in _read_jsonl(log.metrics_path) if "val_loss" in r] or [None]
                recorded = _summary(run_dir, counters, None, False, vals[0], vals[-1], n_params, flops_per_token,
                                    guards, meter, info.world_size)
            return {**recorded, "run_dir": str(run_dir), "already_complete": True, "interrupted": False,
                    "stopped_because": None}
        log.truncate_after(counters["step"])
        log.event("resume", step=counters["step"], checkpoint=resume_from.name,
                  restart=int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")))
        log.say(f"[loom] resumed {run_dir} at step {counters['step']} from {resume_from.name}")
    else:
        log.event("start", world_size=info.world_size, device=str(device))

    log.say(f"[loom] {run_dir}: {n_params / 1e6:.2f}M parameters, {flops_per_token / 1e6:.1f} MFLOP/token, "
            f"{batch_tokens:,} tokens/step ({info.world_size} process(es) x {accum} micro-batch(es) x "
            f"{t.micro_batch} x {t.seq_len}), {t.steps} steps on {device}; MFU against the "
            f"{meter.peak_source} ({meter.peak / 1e12:.3g} TFLOP/s)")

    train_model = torch.compile(model) if t.compile else model
    if info.world_size > 1:
        train_model = DDP(train_model, device_ids=[device.index] if device.type == "cuda" else None)

    def checkpoint(at_step: int) -> None:
        if info.is_main:
            writer.save(at_step, model, optimizer,
                        {"loader": loader.state_dict(), "tokens_seen": counters["tokens_seen"],
                         "health": guards.state_dict()},
                        {"train_seconds": counters["train_seconds"], "cost": meter.state_dict()})
        distributed.barrier()

    def rollback(reason: str, bad_windows: list[tuple[int, int]]) -> None:
        if info.is_main:
            writer.wait()
        distributed.barrier()
        path, _ = find_resumable(ckpt_root)
        guards.rollbacks += 1
        if path is None or guards.rollbacks > h.max_rollbacks:
            why = (f"no checkpoint in {ckpt_root} to roll back to (lower train.ckpt_every)" if path is None
                   else f"more than health.max_rollbacks ({h.max_rollbacks}) rollbacks")
            log.event("stopped", step=counters["step"], reason=f"{reason}; {why}")
            raise TrainingError(f"training stopped at step {counters['step']}: {reason}, and {why}. "
                                f"See {run_dir / 'events.jsonl'}; check the data and lower train.lr before resuming")
        from_step = counters["step"]
        for layer in model.moe_layers():
            layer.load_counts.zero_()
        restore(path)
        log.truncate_after(counters["step"])  # the steps rolled back are redone; events keep the story
        guards.skip_windows |= set(bad_windows)
        guards.counts["rollbacks"] += 1
        log.event("rollback", from_step=from_step, to_step=counters["step"], reason=reason,
                  skip_windows=[list(w) for w in bad_windows])
        log.say(f"[loom] {reason}: rolled back from step {from_step} to {path.name}; "
                f"{len(bad_windows)} data window(s) will be skipped")

    watchdog = Watchdog(h.watchdog_factor, h.watchdog_min_s, h.watchdog_first_s,
                        _hang_reporter(run_dir, info.rank, log)).start()
    first_val = last_val = None
    stopped_because = None
    window_tokens, window_start = 0, time.perf_counter()
    recent_step_s: list[float] = []
    try:
        while True:
            step = counters["step"]
            if step % t.eval_every == 0 or step == t.steps:
                last_val = evaluate(train_model, cfg, info, device)
                first_val = last_val if first_val is None else first_val
                log.metric({"step": step, "val_loss": last_val, "elapsed_s": round(counters["train_seconds"], 3)})
                log.say(f"step {step:>6}/{t.steps}  val_loss {last_val:.4f}")
                watchdog.beat(step)
            if step >= t.steps:
                break

            step_start = time.perf_counter()
            while (loader.epoch, loader.cursor) in guards.skip_windows:
                window = (loader.epoch, loader.cursor)
                for _ in range(accum):
                    loader.next_batch()
                guards.counts["skipped_windows"] += 1
                log.event("window_skipped", step=step, window=list(window))
            window = (loader.epoch, loader.cursor)
            faults.maybe_stall(step)
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
                    if micro == 0:
                        loss = faults.poison_loss(step + 1, loss)
                    ((loss + model.aux_loss()) / accum).backward()  # MoE balancing losses (zero if dense)
                loss_sum += loss.detach().float()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip or float("inf"))
            over_budget = budget_exceeded(cfg, meter)
            # One collective for the loss, the gradient norm, a stop request and the budget, so
            # that every rank takes the same decision at the same step.
            flags = [float(stop.requested), float(over_budget is not None)]
            reduced = distributed.all_reduce_mean(
                torch.stack([loss_sum / accum, grad_norm.float(), *(torch.tensor(f, device=device) for f in flags)]))
            train_loss, grad_norm_value, stop_now, budget_now = reduced.tolist()  # .tolist() waits for the device
            action = guards.judge(train_loss, grad_norm_value, window, step + 1, log)
            if action == "rollback":
                optimizer.zero_grad(set_to_none=True)
                bad = guards.nonfinite_windows or [window]
                rollback("non-finite loss" if guards.nonfinite_windows else "loss or gradient spike", bad)
                watchdog.beat(counters["step"])
                continue
            if action == "step":
                optimizer.step()
            else:
                guards.counts["skipped_steps"] += 1
            optimizer.zero_grad(set_to_none=True)
            moe_record = moe_step(model, cfg, action == "step", (step + 1) % t.log_every == 0 or step + 1 == t.steps)
            step = counters["step"] = step + 1
            counters["tokens_seen"] += batch_tokens
            step_seconds = time.perf_counter() - step_start
            counters["train_seconds"] += step_seconds
            window_tokens += batch_tokens
            recent_step_s.append(step_seconds)
            watchdog.beat(step, step_seconds)
            heartbeat.beat(step)

            if info.world_size > 1 and step % h.straggler_every == 0:
                times = distributed.all_gather_floats(sum(recent_step_s) / len(recent_step_s), device)
                slow = stragglers(times, h.straggler_ratio)
                if slow:
                    log.event("stragglers", step=step, ranks=slow, step_seconds=[round(x, 4) for x in times])
                    slow_times = ", ".join(f"{times[r]:.3f}s" for r in slow)
                    log.say(f"[loom] step {step}: rank(s) {slow} are stragglers: mean step {slow_times} against "
                            f"a median of {statistics.median(times):.3f}s")
                recent_step_s = []
            if step % t.log_every == 0 or step == t.steps:
                now = time.perf_counter()
                tokens_per_s = window_tokens / max(now - window_start, 1e-9)
                window_tokens, window_start = 0, now
                cost = meter.snapshot(tokens_per_s)
                if meter.notice:
                    log.event("peak_raised", step=step, detail=meter.notice, peak_tflops=meter.peak / 1e12)
                    log.say(f"[loom] step {step}: {meter.notice}")
                    meter.notice = None
                log.metric({"step": step, "loss": train_loss, "lr": lr, "grad_norm": grad_norm_value,
                            "tokens_per_s": round(tokens_per_s, 1), "tokens": counters["tokens_seen"],
                            "elapsed_s": round(counters["train_seconds"], 3), **cost, **moe_record})
                log.say(f"step {step:>6}/{t.steps}  loss {train_loss:.4f}  lr {lr:.2e}  "
                        f"{tokens_per_s:,.0f} tok/s  MFU {cost['mfu']:.1%}  {cost['cost']:.2f} {meter.currency}  "
                        f"{counters['train_seconds']:.0f}s", transient=True)
            if budget_now > 0:
                stopped_because = over_budget or "a budget of another rank was reached"
            elif stop_now > 0:
                stopped_because = "interrupted"
            if step % t.ckpt_every == 0 or step == t.steps or stopped_because:
                checkpoint(step)
                watchdog.beat(step)
            if stopped_because == "interrupted":
                log.event("interrupted", step=step)
                log.say(f"[loom] interrupted: checkpoint saved at step {step}; run the same command to continue")
                break
            if stopped_because:
                log.event("budget_stop", step=step, reason=stopped_because, **meter.snapshot(0.0))
                log.say(f"[loom] stopped at step {step}: {stopped_because}; checkpoint saved. Raise the limit "
                        "in [budget] and run the same command to continue")
                break
    finally:
        watchdog.stop()
        if info.is_main:
            writer.wait()
    heartbeat.beat(counters["step"], force=True)

    if info.is_main:
        first_val = first_logged_val_loss(log.metrics_path, first_val)
    summary = _summary(run_dir, counters, stopped_because, stop.requested, first_val, last_val, n_params,
                       flops_per_token, guards, meter, info.world_size)
    if meter.notice:  # raised by the whole-run rate
        log.event("peak_raised", step=counters["step"], detail=meter.notice, peak_tflops=meter.peak / 1e12)
    # The end event keeps the figures, so that a later call on the finished run can show them.
    log.event("end", step=counters["step"], val_loss=last_val,
              summary={k: v for k, v in summary.items() if k not in ("run_dir", "already_complete")})
    if info.is_main:
        write_report(run_dir, cfg, summary)
    return summary


def _summary(run_dir: Path, counters: dict, stopped_because, interrupted: bool, first_val, last_val, n_params: int,
             flops_per_token: float, guards: Guards, meter: CostMeter, world_size: int) -> dict:
    tokens_per_s = counters["tokens_seen"] / max(counters["train_seconds"], 1e-9)
    return {
        "run_dir": str(run_dir),
        "already_complete": False,
        "interrupted": interrupted,
        "stopped_because": stopped_because,
        "steps": counters["step"],
        "tokens": counters["tokens_seen"],
        "first_val_loss": first_val,
        "final_val_loss": last_val,
        "train_seconds": counters["train_seconds"],
        "tokens_per_s": tokens_per_s,
        "parameters": n_params,
        "flops_per_token": flops_per_token,
        "health": dict(guards.counts),
        "cost": {**meter.snapshot(tokens_per_s), "currency": meter.currency, "price_per_device_hour": meter.price,
                 "price_source": meter.price_source, "peak_tflops": meter.peak / 1e12,
                 "peak_source": meter.peak_source, "world_size": world_size},
    }


def recorded_summary(run_dir: Path, step: int) -> dict | None:
    """The summary a finished run recorded in its end event at `step`, or None."""
    for event in reversed(_read_jsonl(run_dir / "events.jsonl")):
        if event.get("event") == "end" and event.get("step") == step and isinstance(event.get("summary"), dict):
            return event["summary"]
    return None


def first_logged_val_loss(metrics_path: Path, default: float | None) -> float | None:
    """The run's first validation loss, also when this process started from a resume."""
    for line in metrics_path.read_text().splitlines():
        rec = json.loads(line)
        if "val_loss" in rec:
            return rec["val_loss"]
    return default


def _read_jsonl(path: Path) -> list[dict]:
    records = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
    return records


def plot_loss_curve(metrics: list[dict], path: Path) -> bool:
    """loss_curve.png: training and validation loss against step. False when there is nothing
    to plot or matplotlib is missing."""
    train_pts = [(r["step"], r["loss"]) for r in metrics if "loss" in r and math.isfinite(r["loss"])]
    val_pts = [(r["step"], r["val_loss"]) for r in metrics if "val_loss" in r]
    if not train_pts and not val_pts:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train_pts:
        ax.plot(*zip(*train_pts), label="train", linewidth=1)
    if val_pts:
        ax.plot(*zip(*val_pts), "o-", label="validation", linewidth=1.5, markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return True


HEALTH_EVENTS = ("nonfinite", "loss_spike", "grad_norm_spike", "spike_level_accepted", "rollback", "window_skipped",
                 "hang", "stragglers", "checkpoint_skipped", "resume", "interrupted", "budget_stop", "stopped")


def write_report(run_dir: Path, cfg: LoomConfig, s: dict) -> None:
    m, c = cfg.model, s["cost"]
    metrics = _read_jsonl(run_dir / "metrics.jsonl")
    events = [e for e in _read_jsonl(run_dir / "events.jsonl") if e.get("event") in HEALTH_EVENTS]
    logged = [r for r in metrics if "tokens_per_s" in r]
    plotted = plot_loss_curve(metrics, run_dir / "loss_curve.png")
    energy = f"{c['energy_kwh']:.3f} kWh" if "energy_kwh" in c else "not measured (needs an NVIDIA GPU and pynvml)"
    lines = [
        f"# Run {cfg.run.name}",
        "",
        f"- model: {m.n_layer} layers, width {m.d_model}, {m.n_head} heads ({m.n_kv_head} key/value), "
        f"vocab {m.vocab_size}, {s['parameters'] / 1e6:.2f}M parameters, {s['flops_per_token'] / 1e6:.1f} MFLOP/token",
        f"- data: {cfg.data.dir} (sources: {', '.join(src.name for src in cfg.data.sources)}; see its data_card.md)",
        f"- trained: {s['steps']} steps, {s['tokens']:,} tokens, {s['train_seconds']:.0f}s of training "
        f"(mean {s['tokens_per_s']:,.0f} tokens/s over the whole run, resumes included)",
        f"- validation loss: {s['first_val_loss']:.4f} at the first evaluation, {s['final_val_loss']:.4f} at the end",
    ]
    if s.get("stopped_because") and s["stopped_because"] != "interrupted":
        lines.append(f"- **stopped early**: {s['stopped_because']}")
    lines += ["", "## Throughput and cost", "", "| measure | value |", "|---|---|",
              f"| tokens/s (whole run) | {s['tokens_per_s']:,.0f} |"]
    if logged:
        rates = sorted(r["tokens_per_s"] for r in logged)
        lines.append(f"| tokens/s (median logged window) | {rates[len(rates) // 2]:,.0f} |")
    lines += [
        f"| MFU (whole run) | {c['mfu']:.1%} against {c['peak_tflops']:.3g} TFLOP/s per device ({c['peak_source']}) |",
        f"| processes | {c['world_size']} |",
        f"| device-hours | {c['device_hours']:.4f} |",
        f"| cost | {c['cost']:.4f} {c['currency']} at {c['price_per_device_hour']:g} per device-hour "
        f"({c['price_source']}) |",
        f"| energy | {energy} |",
        "",
        "## Health",
        "",
        f"{s['health'].get('skipped_steps', 0)} optimizer steps skipped, {s['health'].get('rollbacks', 0)} rollbacks, "
        f"{s['health'].get('skipped_windows', 0)} data windows skipped.",
        "",
    ]
    if events:
        lines += ["| time (UTC) | event | step | detail |", "|---|---|---|---|"]
        for e in events[-50:]:
            detail = {k: v for k, v in e.items() if k not in ("time", "event", "step", "stacks")}
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.get("time", 0)))
            text = ", ".join(f"{k}={v}" for k, v in detail.items()).replace("|", "/")
            lines.append(f"| {when} | {e['event']} | {e.get('step', e.get('from_step', ''))} | {text[:200]} |")
        if len(events) > 50:
            lines.append(f"\n({len(events) - 50} earlier events in events.jsonl)")
    else:
        lines.append("No health events.")
    lines += ["", "![loss curve](loss_curve.png)" if plotted else "", "",
              "Per-step figures are in metrics.jsonl, every event in events.jsonl.", ""]
    atomic_write_text(run_dir / "report.md", "\n".join(lines))
