"""The training loop: `Trainer.train()`, and `train(cfg)` that runs it in this process.

One optimizer step: `accum` micro-batches per process, each forward/backward under bf16
autocast on CUDA (fp32 elsewhere), gradients averaged across processes (DDP or FSDP2, as
`[parallel]` plans: `loom.train.parallelize`) on the last micro-batch only, the global
gradient norm clipped, AdamW stepped at the scheduled learning rate (`loom.train.optim`).
Validation loss is measured at the start, every `eval_every` steps and at the end; a checkpoint
is saved every `ckpt_every` steps, at the end and when the run stops early; rank 0 writes the run directory.

`Trainer.train` only sequences calls: `train_step`, then the guards (`loom.train.health`), the
optimizer step, the step's log, the stop policy and the checkpointer, each asked whether it is
their turn; each part owns its schedule. Three things plug in from outside, in
`Trainer.__init__` and nowhere else: the data (`data`, by default `ShardData` over the token
shards), the loss (`loss`, by default `next_token_loss`) and the parallelism plan
(`parallelize`, by default the plan `[parallel]` asks for: `loom.train.parallelize`); and a
new run may start from another run's weights (`init_from`: what `loom sft` does, with the
conversations of `loom.train.sft` as its data).

Resume is exact: the checkpoint carries the weights, the optimizer, the step, the loader's
position and every RNG state, so on the CPU N steps + resume + M steps equals N + M steps bit
for bit. Runs are reproducible: torch's, numpy's and Python's global generators are all seeded
from `run.seed` at the start, on every rank alike (the model must start the same on every rank,
and each rank's data comes from the loader's own seeded order, not from these generators), so
two identical runs on a CPU write byte-identical checkpoints but for their timing.json.

A run found complete (its checkpoint at `train.steps` or later) trains nothing: `train` returns
the figures the run recorded when it finished, marked `already_complete`.

Does not own: where tokens come from (the data source hands out batches), the network (`GPT`),
or how processes are launched (torchrun; see `distributed`).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from loom.checkpoint import (
    CheckpointWriter,
    ShardedCheckpointWriter,
    find_resumable,
    is_weights_only,
    load_checkpoint,
)
from loom.config import LoomConfig
from loom.data import ShardLoader, read_manifest, shard_dir, tokenizer_path
from loom.errors import ConfigError, DataError
from loom.model import GPT
from loom.train import distributed
from loom.train.cost import CostMeter, budget_exceeded
from loom.train.health import HANG_EXIT_CODE, FaultInjector, Guards, Heartbeat, Watchdog, stragglers
from loom.train.optim import autocast_context, lr_at, make_optimizer, moe_step
from loom.train.parallelize import data_coordinates, gradient_sync, is_sharded, plan_for
from loom.train.report import RunLog, first_logged_val_loss, read_jsonl, recorded_summary, run_summary, write_report
from loom.util import atomic_write_text, keep_freed_memory, remove_leftovers

# ---------------------------------------------------------------------------------------------
# What plugs in: the data, the loss, the parallelism plan
# ---------------------------------------------------------------------------------------------


class ShardData:
    """The default data source: the token shards at `data.dir`, read in fixed windows of
    `seq_len + 1` tokens. A data source gives each process its training batches (a loader with
    `next_batch`, `epoch`, `cursor` and a `state_dict`) and a fresh validation loader."""

    def __init__(self, cfg: LoomConfig):
        self.dir, self.seed, self.t = shard_dir(cfg), cfg.run.seed, cfg.train
        self.tokenizer = tokenizer_path(cfg)
        vocab = read_manifest(self.dir)["vocab_size"]
        if vocab > cfg.model.vocab_size:
            raise ConfigError(f"the shards in {self.dir} use {vocab} token ids but model.vocab_size is "
                              f"{cfg.model.vocab_size}; raise it or rebuild the data")

    def train_batches(self, rank: int, world_size: int) -> ShardLoader:
        return ShardLoader(self.dir, "train", self.t.seq_len, self.t.micro_batch, rank, world_size, self.seed)

    def val_batches(self, rank: int, world_size: int) -> ShardLoader:
        return ShardLoader(self.dir, "val", self.t.seq_len, self.t.micro_batch, rank, world_size, seed=self.seed)


def next_token_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The default loss: mean cross-entropy of every next token (the model computes it)."""
    return model(x, y)


# ---------------------------------------------------------------------------------------------
# The parts asked at every step, each with its own schedule
# ---------------------------------------------------------------------------------------------


class Validator:
    """Validation loss at step 0, every `eval_every` steps and at the last step: the mean over
    `eval_batches` micro-batches per process of a fresh validation loader (the same windows every
    time)."""

    def __init__(self, t, data, info: distributed.DistInfo, data_rank: int, data_ranks: int):
        self.t, self.data, self.info = t, data, info
        self.data_rank, self.data_ranks = data_rank, data_ranks
        self.first = self.last = None

    def due(self, step: int) -> bool:
        return step % self.t.eval_every == 0 or step == self.t.steps

    @torch.no_grad()
    def run(self, model: torch.nn.Module) -> float:
        loader = self.data.val_batches(self.data_rank, self.data_ranks)
        batches = min(self.t.eval_batches, loader.batches_per_epoch)
        device = self.info.device
        was_training = model.training
        model.eval()
        total = torch.zeros((), device=device)
        for _ in range(batches):
            x, y = loader.next_batch()
            with autocast_context(device, self.t.dtype):
                total += model(x.to(device), y.to(device)).float()
        model.train(was_training)
        self.last = distributed.all_reduce_mean(total / batches).item()
        self.first = self.last if self.first is None else self.first
        return self.last


class Checkpointer:
    """Checkpoints every `ckpt_every` steps, at the last step and when the run stops early
    (in the background with `async_checkpoint`): written whole by rank 0 while the others wait,
    or, for a sharded model, by every rank its own shards (`ShardedCheckpointWriter`)."""

    def __init__(self, root: Path, t, delay_s: float, info: distributed.DistInfo, sharded: bool):
        self.root, self.t, self.info, self.sharded = root, t, info, sharded
        if sharded:  # on CUDA always in the background: the GPU does not wait for the disk
            background = t.async_checkpoint or info.device.type == "cuda"
            self.writer = ShardedCheckpointWriter(root, t.keep_last, t.keep_every, background, delay_s)
        else:
            self.writer = CheckpointWriter(root, t.keep_last, t.keep_every, t.async_checkpoint, delay_s)

    def due(self, step: int, stopping: str | None) -> bool:
        return step % self.t.ckpt_every == 0 or step == self.t.steps or stopping is not None

    def save(self, step: int, model, optimizer, state: dict, timing: dict) -> None:
        if self.sharded or self.info.is_main:
            self.writer.save(step, model, optimizer, state, timing)
        distributed.barrier()

    def wait(self) -> None:
        """Until a background save has landed."""
        if self.sharded or self.info.is_main:
            self.writer.wait()

    def newest(self) -> Path | None:
        return find_resumable(self.root)[0]


class StopRequest:
    """Ctrl-C (SIGINT), SIGTERM or SIGUSR1 (what Slurm sends ahead of a job's time limit with
    `--signal=USR1@<seconds>`) asks the loop to stop after the current step and save a checkpoint,
    so nothing done is lost; a second Ctrl-C stops at once."""

    def __init__(self):
        self.requested = False
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


class StopPolicy:
    """Stopping before `train.steps`: a budget of `[budget]` reached, or a stop request. Both are
    decided from flags all-reduced with the step's loss, so every rank stops at the same step."""

    def __init__(self, budget_cfg, meter: CostMeter, request: StopRequest):
        self.budget, self.meter, self.request = budget_cfg, meter, request
        self.over_budget: str | None = None
        self.reason: str | None = None

    def flags(self) -> list[float]:
        """This rank's (stop requested, over budget), for the step's collective."""
        self.over_budget = budget_exceeded(self.budget, self.meter)
        return [float(self.request.requested), float(self.over_budget is not None)]

    def decide(self, stop_now: float, budget_now: float) -> str | None:
        """Why the run stops after this step ("interrupted" or the budget in words), or None."""
        if budget_now > 0:
            self.reason = self.over_budget or "a budget of another rank was reached"
        elif stop_now > 0:
            self.reason = "interrupted"
        return self.reason


class ThroughputLog:
    """Every `log_every` steps, a metrics record and the progress line: loss, learning rate,
    gradient norm, tokens/s over the window since the last record, MFU and cost; every
    `straggler_every` steps on several processes, which ranks are slow."""

    def __init__(self, t, h, meter: CostMeter, log: RunLog, info: distributed.DistInfo):
        self.t, self.h, self.meter, self.log, self.info = t, h, meter, log, info
        self.window_tokens, self.window_start = 0, time.perf_counter()
        self.recent_step_s: list[float] = []

    def start(self) -> None:
        """The first window starts with the loop (its first validation included)."""
        self.window_tokens, self.window_start = 0, time.perf_counter()

    def after_step(self, step: int, tokens: int, seconds: float, result: StepResult, counters: dict) -> None:
        self.window_tokens += tokens
        self.recent_step_s.append(seconds)
        if self.info.world_size > 1 and step % self.h.straggler_every == 0:
            self._stragglers(step)
        if step % self.t.log_every and step != self.t.steps:
            return
        now = time.perf_counter()
        tokens_per_s = self.window_tokens / max(now - self.window_start, 1e-9)
        self.window_tokens, self.window_start = 0, now
        cost = self.meter.snapshot(tokens_per_s)
        if self.meter.notice:
            self.log.event("peak_raised", step=step, detail=self.meter.notice, peak_tflops=self.meter.peak / 1e12)
            self.log.say(f"[loom] step {step}: {self.meter.notice}")
            self.meter.notice = None
        self.log.metric({"step": step, "loss": result.loss, "lr": result.lr, "grad_norm": result.grad_norm,
                         "tokens_per_s": round(tokens_per_s, 1), "tokens": counters["tokens_seen"],
                         "elapsed_s": round(counters["train_seconds"], 3), **cost, **result.moe})
        self.log.say(f"step {step:>6}/{self.t.steps}  loss {result.loss:.4f}  lr {result.lr:.2e}  "
                     f"{tokens_per_s:,.0f} tok/s  MFU {cost['mfu']:.1%}  {cost['cost']:.2f} {self.meter.currency}  "
                     f"{counters['train_seconds']:.0f}s", transient=True)

    def _stragglers(self, step: int) -> None:
        times = distributed.all_gather_floats(sum(self.recent_step_s) / len(self.recent_step_s), self.info.device)
        slow = stragglers(times, self.h.straggler_ratio)
        if slow:
            self.log.event("stragglers", step=step, ranks=slow, step_seconds=[round(x, 4) for x in times])
            slow_times = ", ".join(f"{times[r]:.3f}s" for r in slow)
            self.log.say(f"[loom] step {step}: rank(s) {slow} are stragglers: mean step {slow_times} against "
                         f"a median of {statistics.median(times):.3f}s")
        self.recent_step_s = []


@dataclass
class StepResult:
    """What `train_step` computed, the same on every rank: the mean loss over the global batch,
    the gradient norm before clipping, the learning rate, the data window, the stop flags."""

    loss: float
    grad_norm: float
    lr: float
    window: tuple[int, int]
    stop_now: float
    budget_now: float
    started: float  # perf_counter at the step's start
    moe: dict | None = None  # routing metrics after the optimizer step (MoE only)


# ---------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seeds every global generator a run could draw from: torch (CPU and CUDA), numpy, random."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


Loss = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
# takes the model built on the meta device; returns the module to train, its parameters materialized
Parallelize = Callable[[GPT, distributed.DistInfo, object], torch.nn.Module]


class Trainer:
    """One training run in this process: builds the model, optimizer and parts, resumes from the
    newest valid checkpoint (`resume`: "auto", "always" or "never"), and trains in `train()`."""

    def __init__(self, cfg: LoomConfig, info: distributed.DistInfo, stop: StopRequest, resume: str = "auto", *,
                 data=None, loss: Loss = next_token_loss, parallelize: Parallelize | None = None,
                 init_from: Path | None = None):
        self.cfg, self.t, self.info, self.device = cfg, cfg.train, info, info.device
        self.run_dir, t = cfg.run_dir, cfg.train
        self.data = data or ShardData(cfg)
        self.loss, self.parallelize = loss, parallelize or plan_for(cfg.parallel, info, cfg.run.seed)
        # the ranks of one tensor-parallel group read the same batches: one data rank among data_ranks
        self.data_rank, self.data_ranks = data_coordinates(cfg.parallel, info.world_size, info.rank)
        per_step = t.micro_batch * t.seq_len * self.data_ranks
        self.batch_tokens = t.batch_tokens or per_step
        if self.batch_tokens % per_step:
            raise ConfigError(
                f"train.batch_tokens ({self.batch_tokens}) is not a multiple of micro_batch * seq_len * data-parallel "
                f"ranks ({t.micro_batch} * {t.seq_len} * {self.data_ranks} = {per_step})"
            )
        self.accum = self.batch_tokens // per_step

        ckpt_root = self.run_dir / "checkpoints"
        resume_from, notes = (None, []) if resume == "never" else find_resumable(ckpt_root)
        if resume == "never" and any(ckpt_root.glob("step_*")):
            raise ConfigError(f"{self.run_dir} already holds checkpoints; resume it or pick another run.name")
        if resume_from is not None and is_weights_only(resume_from):  # an imported model: a fresh start
            init_from, resume_from = resume_from, None
        if resume == "always" and resume_from is None:
            raise DataError(f"no valid checkpoint to resume in {ckpt_root}" +
                            (f" ({'; '.join(notes)})" if notes else ""))

        self.log = RunLog(self.run_dir, info.is_main)
        if info.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_dir / "config.toml", cfg.to_toml())
            shutil.copyfile(self.data.tokenizer, self.run_dir / "tokenizer.json")
            remove_leftovers(ckpt_root, ".tmp_step_*")  # saves cut short by a crash; not a live writer's
        distributed.barrier()

        if self.device.type == "cpu":  # big tensors freed each step are reused, not faulted in anew
            keep_freed_memory()
        seed_everything(cfg.run.seed)
        with torch.device("meta"):  # shapes only: the plan gives each rank storage for its pieces
            self.model = GPT(cfg.model)
        self.n_params = self.model.num_params()
        self.flops_per_token = self.model.flops_per_token(t.seq_len)
        # the plan first: sharding replaces the parameters, which the optimizer must then hold
        self.train_model: torch.nn.Module = self.parallelize(self.model, info, t)
        self.sharded = is_sharded(self.model)
        self.optimizer = make_optimizer(self.model, t, self.device)
        self.batches = self.data.train_batches(self.data_rank, self.data_ranks)
        self.meter = CostMeter(cfg.cost, t.dtype, self.device, info.world_size, self.flops_per_token)
        self.guards = Guards(cfg.health)
        self.faults = FaultInjector(cfg.faults, info.rank)
        self.validator = Validator(t, self.data, info, self.data_rank, self.data_ranks)
        self.checkpointer = Checkpointer(ckpt_root, t, cfg.faults.checkpoint_delay_s, info,  # a fault drill's delay
                                         self.sharded)
        self.stop = StopPolicy(cfg.budget, self.meter, stop)
        self.throughput = ThroughputLog(t, cfg.health, self.meter, self.log, info)
        self.heartbeat = Heartbeat(self.run_dir, info.rank, cfg.health.heartbeat_s)
        self.watchdog = Watchdog(cfg.health.watchdog_factor, cfg.health.watchdog_min_s, cfg.health.watchdog_first_s,
                                 _hang_reporter(self.run_dir, info.rank))
        self.step, self.tokens_seen, self.train_seconds = 0, 0, 0.0

        for note in notes:
            self.log.event("checkpoint_skipped", detail=note)
            self.log.say(f"[loom] {note}")
        self.complete = False
        if resume_from is None:
            if init_from is not None:  # a new run that starts from another's weights (SFT)
                load_checkpoint(init_from, self.model, device=self.device, sharded=self.sharded)
            self.log.event("start", world_size=info.world_size, device=str(self.device),
                           **({"init_from": str(init_from)} if init_from else {}))
            return
        self.restore(resume_from)
        if self.step >= t.steps:
            self.complete = True
            return
        self.log.truncate_after(self.step)
        self.log.event("resume", step=self.step, checkpoint=resume_from.name,
                       restart=int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")))
        self.log.say(f"[loom] resumed {self.run_dir} at step {self.step} from {resume_from.name}")

    def train(self) -> dict:
        """Trains to `train.steps`, or until a guard, a budget or a stop request ends the run;
        returns the summary (`report.run_summary`)."""
        if self.complete:
            return self.recorded()
        self.begin()
        try:
            while True:
                if self.validator.due(self.step):
                    self.validate()
                if self.step >= self.t.steps:
                    break
                result = self.train_step()
                action = self.guards.judge(result.loss, result.grad_norm, result.window, self.step + 1, self.log)
                if action == "rollback":
                    self.rollback(result)
                    continue
                self.optimizer_step(result, action)
                stopping = self.stop.decide(result.stop_now, result.budget_now)
                if self.checkpointer.due(self.step, stopping):
                    self.save()
                if stopping:
                    self.say_stopped(stopping)
                    break
        finally:
            self.watchdog.stop()
            self.checkpointer.wait()
        return self.finish()

    # --- the steps --------------------------------------------------------------------------

    def train_step(self) -> StepResult:
        """Forward and backward over the global batch, the clipped gradient norm, and one
        collective for what every rank must agree on. The optimizer has not stepped yet."""
        t, step, device = self.t, self.step, self.device
        started = time.perf_counter()
        self.skip_known_bad_windows()
        window = (self.batches.epoch, self.batches.cursor)
        self.faults.maybe_stall(step)
        lr = lr_at(step, t)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), device=device)
        for micro in range(self.accum):
            x, y = self.batches.next_batch()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            sync = micro == self.accum - 1 or self.info.world_size == 1
            with gradient_sync(self.train_model, sync), autocast_context(device, t.dtype):
                loss = self.loss(self.train_model, x, y)
                if micro == 0:
                    loss = self.faults.poison_loss(step + 1, loss)
                ((loss + self.model.aux_loss()) / self.accum).backward()  # MoE balancing losses (zero if dense)
            loss_sum += loss.detach().float()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip or float("inf"))
        if hasattr(grad_norm, "full_tensor"):  # sharded parameters: the norm is a DTensor
            grad_norm = grad_norm.full_tensor()
        flags = [torch.tensor(f, device=device) for f in self.stop.flags()]
        reduced = distributed.all_reduce_mean(torch.stack([loss_sum / self.accum, grad_norm.float(), *flags]))
        loss_value, grad_norm_value, stop_now, budget_now = reduced.tolist()  # .tolist() waits for the device
        return StepResult(loss_value, grad_norm_value, lr, window, stop_now, budget_now, started)

    def optimizer_step(self, result: StepResult, action: str) -> None:
        """The guards' verdict carried out ("step", or "skip": no update), then the step counted,
        timed and logged."""
        if action == "step":
            self.optimizer.step()
        else:
            self.guards.counts["skipped_steps"] += 1
        self.optimizer.zero_grad(set_to_none=True)
        report = (self.step + 1) % self.t.log_every == 0 or self.step + 1 == self.t.steps
        result.moe = moe_step(self.model, self.cfg.model.moe.bias_update_rate, action == "step", report)
        self.step += 1
        self.tokens_seen += self.batch_tokens
        seconds = time.perf_counter() - result.started
        self.train_seconds += seconds
        self.watchdog.beat(self.step, seconds)
        self.heartbeat.beat(self.step)
        self.throughput.after_step(self.step, self.batch_tokens, seconds, result, self.counters())

    def skip_known_bad_windows(self) -> None:
        """Data windows a rollback marked bad are passed over, the same way on every rank."""
        while (self.batches.epoch, self.batches.cursor) in self.guards.skip_windows:
            window = (self.batches.epoch, self.batches.cursor)
            for _ in range(self.accum):
                self.batches.next_batch()
            self.guards.counts["skipped_windows"] += 1
            self.log.event("window_skipped", step=self.step, window=list(window))

    # --- the parts' turns -------------------------------------------------------------------

    def validate(self) -> None:
        loss = self.validator.run(self.train_model)
        self.log.metric({"step": self.step, "val_loss": loss, "elapsed_s": round(self.train_seconds, 3)})
        self.log.say(f"step {self.step:>6}/{self.t.steps}  val_loss {loss:.4f}")
        self.watchdog.beat(self.step)

    def save(self) -> None:
        self.checkpointer.save(self.step, self.model, self.optimizer,
                               {"loader": self.batches.state_dict(), "tokens_seen": self.tokens_seen,
                                "health": self.guards.state_dict()},
                               {"train_seconds": self.train_seconds, "cost": self.meter.state_dict()})
        self.watchdog.beat(self.step)

    def restore(self, path: Path) -> None:
        state = load_checkpoint(path, self.model, self.optimizer, self.device, sharded=self.sharded)
        self.batches.load_state_dict(state["loader"])
        timing = state["timing"]
        self.step, self.tokens_seen = state["step"], state["tokens_seen"]
        self.train_seconds = timing.get("train_seconds", 0.0)
        self.meter.load_state_dict(timing.get("cost", {}))
        self.guards.load_state_dict(state.get("health", {}))

    def rollback(self, result: StepResult) -> None:
        """Back to the newest valid checkpoint, skipping the bad data windows from then on."""
        self.optimizer.zero_grad(set_to_none=True)
        reason = "non-finite loss" if self.guards.nonfinite_windows else "loss or gradient spike"
        bad_windows = self.guards.nonfinite_windows or [result.window]
        self.checkpointer.wait()
        distributed.barrier()
        path = self.guards.check_rollback(self.checkpointer.newest(), self.step, reason, self.checkpointer.root,
                                          self.run_dir, self.log)
        from_step = self.step
        for layer in self.model.moe_layers():
            layer.load_counts.zero_()
        self.restore(path)
        self.log.truncate_after(self.step)  # the steps rolled back are redone; events keep the story
        self.guards.rolled_back(reason, bad_windows, from_step, self.step, path.name, self.log)
        self.watchdog.beat(self.step)

    # --- start and end ----------------------------------------------------------------------

    def begin(self) -> None:
        t = self.t
        self.log.say(f"[loom] {self.run_dir}: {self.n_params / 1e6:.2f}M parameters, "
                     f"{self.flops_per_token / 1e6:.1f} MFLOP/token, {self.batch_tokens:,} tokens/step "
                     f"({self.data_ranks} data-parallel rank(s) x {self.accum} micro-batch(es) x {t.micro_batch} x "
                     f"{t.seq_len}), {t.steps} steps on {self.device}; MFU against the "
                     f"{self.meter.peak_source} ({self.meter.peak / 1e12:.3g} TFLOP/s)")
        self.watchdog.start()
        self.throughput.start()

    def say_stopped(self, reason: str) -> None:
        if reason == "interrupted":
            self.log.event("interrupted", step=self.step)
            self.log.say(f"[loom] interrupted: checkpoint saved at step {self.step}; run the same command to continue")
            return
        self.log.event("budget_stop", step=self.step, reason=reason, **self.meter.snapshot(0.0))
        self.log.say(f"[loom] stopped at step {self.step}: {reason}; checkpoint saved. Raise the limit "
                     "in [budget] and run the same command to continue")

    def counters(self) -> dict:
        return {"step": self.step, "tokens_seen": self.tokens_seen, "train_seconds": self.train_seconds}

    def summary(self, first_val, last_val) -> dict:
        return run_summary(self.run_dir, self.counters(), self.stop.reason, self.stop.request.requested, first_val,
                           last_val, self.n_params, self.flops_per_token, self.guards, self.meter,
                           self.info.world_size)

    def finish(self) -> dict:
        self.heartbeat.beat(self.step, force=True)
        first_val = self.validator.first
        if self.info.is_main:
            first_val = first_logged_val_loss(self.log.metrics_path, first_val)
        summary = self.summary(first_val, self.validator.last)
        if self.meter.notice:  # raised by the whole-run rate
            self.log.event("peak_raised", step=self.step, detail=self.meter.notice, peak_tflops=self.meter.peak / 1e12)
        # The end event keeps the figures, so that a later call on the finished run can show them.
        self.log.event("end", step=self.step, val_loss=self.validator.last,
                       summary={k: v for k, v in summary.items() if k not in ("run_dir", "already_complete")})
        if self.info.is_main:
            write_report(self.run_dir, self.cfg, summary)
        return summary

    def recorded(self) -> dict:
        """The summary of a run that was complete before this call: what it recorded."""
        self.log.say(f"[loom] {self.run_dir} is already complete at step {self.step} (train.steps is "
                     f"{self.t.steps}): nothing to train; raise train.steps to train on, or pick another run.name")
        summary = recorded_summary(self.run_dir, self.step)
        if summary is None:  # no end event (a crash after the last save, an older loom): what is on disk
            self.meter.started = time.monotonic()  # the wall time the checkpoint holds, none of this call's
            vals = [r["val_loss"] for r in read_jsonl(self.log.metrics_path) if "val_loss" in r] or [None]
            summary = self.summary(vals[0], vals[-1])
        return {**summary, "run_dir": str(self.run_dir), "already_complete": True, "interrupted": False,
                "stopped_because": None}


def _hang_reporter(run_dir: Path, rank: int):
    def report(waited: float, stacks: dict) -> None:
        record = {"time": time.time(), "event": "hang", "rank": rank, "waited_s": round(waited, 1), "stacks": stacks}
        with open(run_dir / "events.jsonl", "a") as f:  # every rank reports its own hang
            f.write(json.dumps(record) + "\n")
        print(f"[loom] rank {rank}: no step finished for {waited:.0f}s; thread stacks written to "
              f"{run_dir / 'events.jsonl'}; exiting with code {HANG_EXIT_CODE} so the launcher restarts the run",
              file=sys.stderr, flush=True)

    return report


def train(cfg: LoomConfig, resume: str = "auto", **plugs) -> dict:
    """Trains the model `cfg` describes on the shards at `data.dir`.

    resume: "auto" continues from the newest valid checkpoint of the run if there is one,
    "always" requires one, "never" refuses to touch a run directory that already has one.
    Returns a summary: steps, first and last validation loss, tokens/s, cost, run directory;
    `already_complete` is True when the run had finished before and nothing was trained (the
    figures are then the ones recorded when it finished). `plugs` go to `Trainer` (data, loss,
    parallelize, init_from).
    """
    info = distributed.init_distributed(cfg.train.device)
    stop = StopRequest()
    try:
        return Trainer(cfg, info, stop, resume, **plugs).train()
    finally:
        stop.restore()
        distributed.shutdown()
