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

What the loop does about a non-finite step or a spike (skip the optimizer step, roll back to
the last good checkpoint and skip the data window) lives in `trainer`; this module only detects.
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
