"""`loom status DIR`: the runs under a directory, one line each, read from what the runs write
(metrics.jsonl, events.jsonl, heartbeat/, config.toml, launch/job.json) and, for Slurm jobs,
from `squeue` / `sacct`.

Reads only; a run directory being written at the same moment is fine (lines cut short by a
crash or a writer are skipped).
"""

from __future__ import annotations

import json
import time
import tomllib
from pathlib import Path

from loom.errors import LoomError
from loom.launch.slurm import job_state, read_job
from loom.train.report import HEALTH_EVENTS, read_jsonl

COLUMNS = ("run", "step", "loss", "tokens/s", "cost", "heartbeat", "health events", "job")


def is_run_dir(path: Path) -> bool:
    return any((path / name).exists() for name in ("metrics.jsonl", "config.toml", "launch/job.json"))


def run_dirs(directory: str | Path) -> list[Path]:
    """`directory` itself when it is a run, else the runs directly inside it."""
    directory = Path(directory)
    if not directory.is_dir():
        raise LoomError(f"{directory} is not a directory: give a run directory (runs/NAME) or the directory that "
                        "holds runs (run.dir, by default runs)")
    if is_run_dir(directory):
        return [directory]
    return sorted(p for p in directory.iterdir() if p.is_dir() and is_run_dir(p))


def _config(run_dir: Path) -> dict:
    for path in (run_dir / "config.toml", run_dir / "launch" / "config.toml"):
        try:
            return tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError):
            continue
    return {}


def run_status(run_dir: Path, now: float | None = None) -> dict:
    """One run's figures: step (of train.steps), last training loss, tokens/s and cost of its
    last logged step, heartbeat age, health events, and its launcher job with its state."""
    now = time.time() if now is None else now
    cfg = _config(run_dir)
    metrics = [r for r in read_jsonl(run_dir / "metrics.jsonl") if "loss" in r]
    last = metrics[-1] if metrics else {}
    events = [e for e in read_jsonl(run_dir / "events.jsonl") if e.get("event") in HEALTH_EVENTS]
    beats = []
    for path in sorted((run_dir / "heartbeat").glob("rank*.json")):
        try:
            beats.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    job = read_job(run_dir) or {}
    state = None
    if job.get("engine") == "slurm" and job.get("job_id"):
        state = job_state(str(job["job_id"]))
    newest_beat = max((b.get("time", 0.0) for b in beats), default=None)
    last_event = events[-1] if events else None
    return {
        "run": run_dir.name,
        "dir": str(run_dir),
        "step": last.get("step", 0),
        "steps": cfg.get("train", {}).get("steps"),
        "loss": last.get("loss"),
        "tokens_per_s": last.get("tokens_per_s"),
        "cost": last.get("cost"),
        "currency": cfg.get("cost", {}).get("currency", "USD"),
        "heartbeat_age_s": None if newest_beat is None else max(0.0, now - newest_beat),
        "heartbeat_ranks": len(beats),
        "health_events": len(events),
        "last_event": None if last_event is None else
        {"event": last_event["event"], "step": last_event.get("step", last_event.get("from_step"))},
        "engine": job.get("engine"),
        "job_id": job.get("job_id"),
        "job_state": state,
    }


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def _row(s: dict) -> list[str]:
    step = f"{s['step']}/{s['steps']}" if s["steps"] else str(s["step"])
    loss = f"{s['loss']:.4f}" if isinstance(s["loss"], (int, float)) else "-"
    rate = f"{s['tokens_per_s']:,.0f}" if isinstance(s["tokens_per_s"], (int, float)) else "-"
    cost = f"{s['cost']:.4f} {s['currency']}" if isinstance(s["cost"], (int, float)) else "-"
    events = str(s["health_events"])
    if s["last_event"]:
        events += f" (last: {s['last_event']['event']} at step {s['last_event']['step']})"
    job = "-"
    if s["engine"] == "slurm":
        job = f"slurm {s['job_id']} {s['job_state']}"
    elif s["engine"]:
        job = f"{s['engine']} {s['job_id'] or ''}".strip()
    return [s["run"], step, loss, rate, cost, _age(s["heartbeat_age_s"]), events, job]


def status_table(directory: str | Path) -> str:
    """The runs under `directory` as an aligned text table."""
    runs = run_dirs(directory)
    if not runs:
        return (f"no runs under {directory} (a run directory holds metrics.jsonl, config.toml or launch/job.json)\n")
    rows = [list(COLUMNS), *(_row(run_status(r)) for r in runs)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() + "\n" for row in rows)


def status_json(directory: str | Path) -> str:
    return json.dumps([run_status(r) for r in run_dirs(directory)], indent=2) + "\n"
