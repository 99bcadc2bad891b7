"""What a run tells: `RunLog` (metrics.jsonl, events.jsonl and the progress line), the summary
`train` returns, and report.md with its loss curve, written at the end.

Reads and writes only the run directory; knows nothing of how the steps were computed.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

from loom.config import LoomConfig
from loom.util import atomic_write_text


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


def run_summary(run_dir: Path, counters: dict, stopped_because, interrupted: bool, first_val, last_val, n_params: int,
             flops_per_token: float, guards, meter, world_size: int) -> dict:
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
    for event in reversed(read_jsonl(run_dir / "events.jsonl")):
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


def read_jsonl(path: Path) -> list[dict]:
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
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    events = [e for e in read_jsonl(run_dir / "events.jsonl") if e.get("event") in HEALTH_EVENTS]
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
