"""In-run guards on the real training loop: injected non-finite losses skipped and rolled back,
loss spikes, budgets, a save that cannot be written, and the report that tells of it all."""

import json
import math
import os
import resource
import subprocess
import sys

import pytest

from conftest import tiny_config, tiny_overrides
from loom.checkpoint import find_resumable, prune_checkpoints, verify_checkpoint
from loom.errors import TrainingError
from loom.train import train
from loom.train.health import SpikeDetector, stragglers


def events(run_dir, kind=None):
    records = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    return [e for e in records if kind is None or e["event"] == kind]


def test_spike_detector_flags_far_values_and_does_not_learn_them():
    d = SpikeDetector(zscore=4, window=50, min_values=10)
    for i in range(30):
        assert d.check(3.0 + 0.01 * (i % 3)) is None
    assert d.check(3.5) > 4
    assert len(d.values) == 30  # the spike was not added
    assert d.check(3.01) is None
    assert SpikeDetector(zscore=4, window=50, min_values=10).check(100.0) is None  # too early to judge


def test_stragglers_are_ranks_well_above_the_median():
    assert stragglers([1.0, 1.02, 0.98, 1.6], ratio=1.3) == [3]
    assert stragglers([1.0, 1.1], ratio=1.3) == []
    assert stragglers([2.0], ratio=1.3) == []


def test_a_nonfinite_step_is_skipped_and_training_goes_on(tiny_root):
    cfg = tiny_config(tiny_root, "nan-skip", ["faults.nan_at_steps=[2]", "health.nonfinite_limit=3"])
    summary = train(cfg)
    assert summary["steps"] == 6 and summary["health"]["skipped_steps"] == 1
    (nan,) = events(cfg.run_dir, "nonfinite")
    assert nan["step"] == 2 and nan["loss"] == "nan" and nan["in_a_row"] == 1
    assert math.isfinite(summary["final_val_loss"])
    assert "1 optimizer steps skipped" in (cfg.run_dir / "report.md").read_text()


def test_nonfinite_steps_in_a_row_roll_back_and_skip_their_data(tiny_root):
    cfg = tiny_config(tiny_root, "nan-rollback", ["faults.nan_at_steps=[5, 6]", "health.nonfinite_limit=2",
                                                   "train.steps=8"])
    summary = train(cfg)
    assert summary["steps"] == 8 and math.isfinite(summary["final_val_loss"])
    (rollback,) = events(cfg.run_dir, "rollback")
    # step 5 was skipped (it counts as a step), step 6 failed again: back to the step-3 checkpoint
    assert rollback["from_step"] == 5 and rollback["to_step"] == 3
    assert len(rollback["skip_windows"]) == 2
    skipped = events(cfg.run_dir, "window_skipped")
    assert [e["window"] for e in skipped] == rollback["skip_windows"]
    assert summary["health"]["rollbacks"] == 1 and summary["health"]["skipped_windows"] == 2
    steps = [json.loads(line)["step"] for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == list(range(1, 9))  # the rolled-back steps' records were replaced
    report = (cfg.run_dir / "report.md").read_text()
    assert "| rollback |" in report and "1 rollbacks" in report
    # the known bad windows are part of the checkpoint: a resume keeps skipping them
    state = json.loads((cfg.run_dir / "checkpoints" / "step_000008" / "state.json").read_text())
    assert state["health"]["skip_windows"] == rollback["skip_windows"]


def test_without_a_checkpoint_to_roll_back_to_the_run_stops_clearly(tiny_root):
    cfg = tiny_config(tiny_root, "nan-stop", ["faults.nan_at_steps=[1, 2]", "health.nonfinite_limit=2"])
    with pytest.raises(TrainingError, match="no checkpoint .* to roll back to"):
        train(cfg)
    assert events(cfg.run_dir, "stopped")


def test_a_loss_spike_is_detected_and_its_step_skipped(tiny_root):
    cfg = tiny_config(tiny_root, "spike", ["train.steps=16", "train.eval_every=100", "faults.spike_at_steps=[14]",
                                           "faults.spike_factor=5", "health.spike_min_steps=8",
                                           "health.loss_spike_zscore=4", 'health.loss_spike_action="skip"'])
    summary = train(cfg)
    spikes = events(cfg.run_dir, "loss_spike")
    assert [e["step"] for e in spikes] == [14] and spikes[0]["action"] == "skip"
    assert summary["health"]["skipped_steps"] == 1


def test_a_budget_stops_the_run_with_a_checkpoint_and_says_why(tiny_root):
    cfg = tiny_config(tiny_root, "budget", ["budget.max_cost=0.0000001", "cost.price_per_device_hour=1000"])
    summary = train(cfg)
    assert summary["stopped_because"].startswith("budget.max_cost reached")
    assert summary["steps"] < 6
    path, _ = find_resumable(cfg.run_dir / "checkpoints")
    assert path.name == f"step_{summary['steps']:06d}"
    (stop,) = events(cfg.run_dir, "budget_stop")
    assert stop["cost"] >= 0.0000001
    assert "stopped early" in (cfg.run_dir / "report.md").read_text()
    # a raised budget continues the same run
    more = tiny_config(tiny_root, "budget", ["cost.price_per_device_hour=1000"])
    assert train(more)["steps"] == 6


def test_metrics_carry_mfu_and_cost_and_the_report_a_loss_curve(tiny_root):
    cfg = tiny_config(tiny_root, "costed", ["cost.price_per_device_hour=2.0", "cost.peak_tflops=0.1"])
    summary = train(cfg)
    logged = [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in logged if "loss" in r]
    assert all(0 < r["mfu"] < 1 and r["cost"] >= 0 and r["device_hours"] > 0 for r in steps)
    assert steps[-1]["cost"] == pytest.approx(steps[-1]["device_hours"] * 2.0, abs=3e-6)  # both rounded
    assert summary["cost"]["peak_source"] == "cost.peak_tflops"
    assert (cfg.run_dir / "loss_curve.png").stat().st_size > 5000
    report = (cfg.run_dir / "report.md").read_text()
    assert "MFU" in report and "USD" in report and "loss_curve.png" in report


def test_retention_keeps_the_newest_and_every_nth(tmp_path):
    root = tmp_path / "checkpoints"
    for step in (2, 4, 6, 8, 10, 12):
        (root / f"step_{step:06d}").mkdir(parents=True)
    (root / "latest").write_text("step_000012\n")
    removed = prune_checkpoints(root, keep_last=2, keep_every=4)
    assert sorted(removed) == ["step_000002", "step_000006"]
    assert sorted(p.name for p in root.glob("step_*")) == ["step_000004", "step_000008", "step_000010",
                                                           "step_000012"]
    (root / "latest").write_text("step_000004\n")  # whatever `latest` names survives
    assert prune_checkpoints(root, keep_last=1, keep_every=0) == ["step_000008", "step_000010"]


def test_training_keeps_only_the_newest_checkpoints(tiny_root):
    cfg = tiny_config(tiny_root, "retention", ["train.ckpt_every=1", "train.keep_last=2"])
    train(cfg)
    assert sorted(p.name for p in (cfg.run_dir / "checkpoints").glob("step_*")) == ["step_000005", "step_000006"]


def test_background_checkpoints_equal_foreground_ones(tiny_root):
    fg = tiny_config(tiny_root, "ckpt-fg")
    bg = tiny_config(tiny_root, "ckpt-bg", ["train.async_checkpoint=true"])
    train(fg)
    train(bg)
    for step in ("step_000003", "step_000006"):
        assert verify_checkpoint(bg.run_dir / "checkpoints" / step) is None
        a = (fg.run_dir / "checkpoints" / step / "model.safetensors").read_bytes()
        b = (bg.run_dir / "checkpoints" / step / "model.safetensors").read_bytes()
        assert a == b


def test_a_checkpoint_that_cannot_be_written_is_a_clear_error_and_the_previous_one_survives(tiny_root):
    cfg = tiny_config(tiny_root, "full-disk", ["train.steps=3"])
    train(cfg)
    # Resume for 3 more steps in a process that may not write files over 64 KiB: the next
    # checkpoint hits "File too large" as it would hit "No space left on device".
    args = [sys.executable, "-m", "loom", "train",
            *[a for o in tiny_overrides(tiny_root, "full-disk", ["train.steps=6"]) for a in ("--set", o)]]

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    result = subprocess.run(args, cwd=tiny_root, capture_output=True, text=True, timeout=300,
                            preexec_fn=limit_file_size, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "could not write checkpoint step 6" in last and "previous checkpoint is intact" in last
    assert "Traceback" not in result.stderr
    path, notes = find_resumable(cfg.run_dir / "checkpoints")
    assert path.name == "step_000003" and notes == []
    assert not list((cfg.run_dir / "checkpoints").glob(".tmp_*"))
