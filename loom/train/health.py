"""Health guards of a training run: what watches the loop and what it does when something is off.

  - `SpikeDetector`: a value (the loss, the gradient norm) far above its recent running mean,
    in standard deviations over the last `window` accepted values. Spikes are not added to the
    statistics, so one spike does not hide the next.
  - `Watchdog`: a thread that expects `beat()` after every step. When none comes within a
    timeout derived from recent step times (`factor` x their median, at least `min_s`; before the
    first step `first_s`, which covers start-up and compilation), it writes every thread's stack
    to `events.jsonl` and ends the process with `HANG_EXIT_CODE`, so that the launcher (torchrun
    `--max-restarts`, Slurm `--requeue`) restarts it and the run resumes from its last checkpoint.
    A hung collective cannot be interrupted from Python; ending the process is the only sure exit.
  - `Heartbeat`: `heartbeat/rank<R>.json` (time, step, rank, pid, host), replaced atomically at
    most every `every_s` seconds, for monitors outside the run.
  - `stragglers`: which ranks' recent mean step time is well above the median rank's.
  - `FaultInjector`: deliberate faults (a non-finite loss at given steps, a stall) that the tests
    and `loom doctor`-style drills use to prove the guards work on the real loop.

  - `Guards`: the health state that survives a resume, and the verdict on each step: take it,
    skip the optimizer step, or roll back to the last good checkpoint and skip the data window
    from then on (`judge`, `check_rollback`, `rolled_back`); the trainer restores the weights.
Precedents: OPT-175B's logbook (Zhang et al. 2022) restarted from earlier checkpoints and
skipped data after loss spikes; PaLM (Chowdhery et al. 2022, section 5.1) rolled back about 100
steps before a spike and skipped 200 to 500 batches.
"""

from __future__ import annotations

import json
import math
import os
import socket
import statistics
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from pathlib import Path

from loom.errors import TrainingError
from loom.util import atomic_write_text

HANG_EXIT_CODE = 75  # EX_TEMPFAIL: "try again"; what a launcher should answer with a restart


class SpikeDetector:
    """Flags values more than `zscore` deviations above the mean of the last `window` accepted
    values, once `min_values` have been seen. Non-finite values are not this detector's business
    (the loop skips them before asking)."""

    def __init__(self, zscore: float, window: int, min_values: int):
        self.zscore, self.min_values = zscore, min_values
        self.values: deque[float] = deque(maxlen=window)

    def check(self, value: float) -> float | None:
        """The value's z-score when it is a spike (and then it is not recorded), else None."""
        if len(self.values) >= self.min_values and self.zscore > 0:
            mean = statistics.fmean(self.values)
            # a floor on the deviation: a perfectly flat history must not make noise a spike
            deviation = max(statistics.pstdev(self.values), 1e-3 * abs(mean), 1e-12)
            z = (value - mean) / deviation
            if z > self.zscore:
                return z
        self.values.append(value)
        return None

    def state_dict(self) -> list[float]:
        return list(self.values)

    def load_state_dict(self, values: list[float]) -> None:
        self.values.clear()
        self.values.extend(values)


def thread_stacks() -> dict[str, str]:
    """Every thread's current stack, by thread name."""
    names = {t.ident: t.name for t in threading.enumerate()}
    return {f"{names.get(ident, 'thread')} ({ident})": "".join(traceback.format_stack(frame))
            for ident, frame in sys._current_frames().items()}


class Watchdog:
    """Ends the process when steps stop finishing; see the module docstring."""

    def __init__(self, factor: float, min_s: float, first_s: float, on_hang: Callable[[float, dict], None],
                 exit_code: int = HANG_EXIT_CODE):
        self.factor, self.min_s, self.first_s = factor, min_s, first_s
        self.on_hang, self.exit_code = on_hang, exit_code
        self.step_times: deque[float] = deque(maxlen=50)
        self.last = time.monotonic()
        self.step = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="loom-watchdog", daemon=True)

    def start(self) -> Watchdog:
        if self.factor > 0:
            self._thread.start()
        return self

    def beat(self, step: int, step_seconds: float | None = None) -> None:
        """A step finished (`step_seconds` long: counted in the timeout), or other slow but
        healthy work did (an evaluation, a checkpoint: not counted)."""
        if step_seconds is not None:
            self.step_times.append(step_seconds)
        self.step = step
        self.last = time.monotonic()

    def timeout(self) -> float:
        if not self.step_times:
            return self.first_s
        return max(self.min_s, self.factor * statistics.median(self.step_times))

    def _watch(self) -> None:
        while not self._stop.wait(min(1.0, self.min_s / 4)):
            waited = time.monotonic() - self.last
            if waited > self.timeout():
                try:
                    self.on_hang(waited, thread_stacks())
                finally:
                    os._exit(self.exit_code)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


class Heartbeat:
    """`<run>/heartbeat/rank<R>.json`, rewritten at most every `every_s` seconds."""

    def __init__(self, run_dir: Path, rank: int, every_s: float):
        self.path = Path(run_dir) / "heartbeat" / f"rank{rank}.json"
        self.rank, self.every_s = rank, every_s
        self.host = socket.gethostname()
        self._last = -math.inf

    def beat(self, step: int, force: bool = False) -> None:
        now = time.monotonic()
        if self.every_s <= 0 or (not force and now - self._last < self.every_s):
            return
        self._last = now
        record = {"time": time.time(), "step": step, "rank": self.rank, "pid": os.getpid(), "host": self.host}
        atomic_write_text(self.path, json.dumps(record) + "\n")


def stragglers(step_seconds: list[float], ratio: float) -> list[int]:
    """Ranks whose mean step time is more than `ratio` times the median rank's."""
    if len(step_seconds) < 2:
        return []
    median = statistics.median(step_seconds)
    return [rank for rank, s in enumerate(step_seconds) if median > 0 and s > ratio * median]


class FaultInjector:
    """Deliberate faults from the `[faults]` config section, each injected once per process
    (a run restarted after a fault does not meet it again, as with a transient hardware fault)."""

    def __init__(self, cfg, rank: int):
        self.cfg, self.rank = cfg, rank
        self.nan_steps = set(cfg.nan_at_steps)
        self.spike_steps = set(cfg.spike_at_steps)
        self.stalled = False

    def poison_loss(self, step: int, loss):
        """The loss, or NaN in its place, or a multiple of it, at a configured step (once)."""
        if step in self.nan_steps:
            self.nan_steps.discard(step)
            return loss * float("nan")
        if step in self.spike_steps:
            self.spike_steps.discard(step)
            return loss * self.cfg.spike_factor
        return loss

    def maybe_stall(self, step: int) -> None:
        restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
        rank_matches = self.cfg.stall_rank < 0 or self.cfg.stall_rank == self.rank
        if (self.cfg.stall_at_step >= 0 and step == self.cfg.stall_at_step and not self.stalled
                and restarts == 0 and rank_matches):
            self.stalled = True
            time.sleep(self.cfg.stall_seconds)


class Guards:
    """The loop's health state that must survive a resume: detector histories, known bad data
    windows, and counts of what happened."""

    def __init__(self, h):  # h: the [health] section
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

    def check_rollback(self, path: Path | None, step: int, reason: str, ckpt_root: Path, run_dir: Path, log) -> Path:
        """Counts a rollback to `path` (the newest valid checkpoint) and returns it; raises
        `TrainingError` when there is none or when this process has rolled back too often."""
        self.rollbacks += 1
        if path is None or self.rollbacks > self.cfg.max_rollbacks:
            why = (f"no checkpoint in {ckpt_root} to roll back to (lower train.ckpt_every)" if path is None
                   else f"more than health.max_rollbacks ({self.cfg.max_rollbacks}) rollbacks")
            log.event("stopped", step=step, reason=f"{reason}; {why}")
            raise TrainingError(f"training stopped at step {step}: {reason}, and {why}. "
                                f"See {run_dir / 'events.jsonl'}; check the data and lower train.lr before resuming")
        return path

    def rolled_back(self, reason: str, bad_windows: list[tuple[int, int]], from_step: int, to_step: int,
                    checkpoint: str, log) -> None:
        """After the weights were restored: the bad data windows are skipped from now on."""
        self.skip_windows |= set(bad_windows)
        self.counts["rollbacks"] += 1
        log.event("rollback", from_step=from_step, to_step=to_step, reason=reason,
                  skip_windows=[list(w) for w in bad_windows])
        log.say(f"[loom] {reason}: rolled back from step {from_step} to {checkpoint}; "
                f"{len(bad_windows)} data window(s) will be skipped")
