"""Identical runs write identical checkpoints; a finished run run again trains nothing and says so."""

import io
import json

from conftest import rewind_to_step_3, run_loom, tiny_config, tiny_overrides
from loom.checkpoint import FILES, verify_checkpoint
from loom.train import train


def sets(overrides):
    return [arg for o in overrides for arg in ("--set", o)]


def manifest_lines(ckpt):
    return dict(reversed(line.split("  ")) for line in (ckpt / "MANIFEST").read_text().splitlines())


def test_two_identical_training_processes_write_byte_identical_checkpoints(tiny_root):
    """Two `loom train` processes with one config in two run directories: every checkpoint file but
    timing.json is the same bytes (weights, optimizer, every RNG state, the loop's state), and the
    MANIFESTs differ only in timing.json's line."""
    for name in ("twin-a", "twin-b"):
        run_loom("train", *sets(tiny_overrides(tiny_root, name)), cwd=tiny_root)
    runs = tiny_root / "runs"
    for step in ("step_000003", "step_000006"):
        a, b = runs / "twin-a" / "checkpoints" / step, runs / "twin-b" / "checkpoints" / step
        for name in FILES:
            assert (a / name).read_bytes() == (b / name).read_bytes(), f"{step}/{name} differs"
        lines_a, lines_b = manifest_lines(a), manifest_lines(b)
        assert set(lines_a) == {*FILES, "timing.json"} == set(lines_b)
        assert {k: v for k, v in lines_a.items() if k != "timing.json"} == \
               {k: v for k, v in lines_b.items() if k != "timing.json"}
        timing = json.loads((a / "timing.json").read_text())
        assert timing["train_seconds"] > 0 and timing["cost"]["wall_seconds"] >= timing["train_seconds"]
        state = json.loads((a / "state.json").read_text())
        assert "train_seconds" not in state and "cost" not in state  # the wall clock lives apart


def test_a_checkpoint_from_before_timing_json_still_resumes(tiny_root):
    """A checkpoint in the older layout (wall-clock figures in state.json, no timing.json) verifies,
    resumes, and carries its seconds and wall time on."""
    cfg = tiny_config(tiny_root, "old-layout")
    train(cfg)
    ckpts = cfg.run_dir / "checkpoints"
    rewind_to_step_3(ckpts.parent)
    old = ckpts / "step_000003"
    timing = json.loads((old / "timing.json").read_text())
    state = json.loads((old / "state.json").read_text())
    (old / "state.json").write_text(json.dumps({**state, "train_seconds": timing["train_seconds"] + 1000,
                                                "cost": {**timing["cost"], "wall_seconds": 5000.0}}))
    (old / "timing.json").unlink()
    from loom.util import sha256_file

    (old / "MANIFEST").write_text("".join(f"{sha256_file(old / n)}  {n}\n" for n in FILES))
    assert verify_checkpoint(old) is None
    summary = train(cfg, resume="always")
    assert summary["steps"] == 6 and not summary["already_complete"]
    assert summary["train_seconds"] > 1000  # the older checkpoint's seconds, carried on
    new_timing = json.loads((ckpts / "step_000006" / "timing.json").read_text())
    assert new_timing["cost"]["wall_seconds"] > 5000


def test_a_finished_run_trained_again_trains_nothing_and_shows_what_it_recorded(tiny_root):
    cfg = tiny_config(tiny_root, "finished")
    first = train(cfg)
    assert first["already_complete"] is False
    metrics = (cfg.run_dir / "metrics.jsonl").read_bytes()
    report = (cfg.run_dir / "report.md").read_bytes()
    again = train(cfg)
    assert again["already_complete"] is True and again["steps"] == 6
    for key in ("first_val_loss", "final_val_loss", "train_seconds", "tokens", "tokens_per_s"):
        assert again[key] == first[key], key
    assert again["cost"] == first["cost"]  # the MFU and the money recorded, not this call's
    assert (cfg.run_dir / "metrics.jsonl").read_bytes() == metrics  # nothing re-evaluated or logged
    assert (cfg.run_dir / "report.md").read_bytes() == report

    # Without the end event (a crash after the last save, or an older loom): the figures on disk.
    events = cfg.run_dir / "events.jsonl"
    events.write_text("".join(line + "\n" for line in events.read_text().splitlines()
                              if json.loads(line)["event"] != "end"))
    bare = train(cfg)
    assert bare["already_complete"] is True
    assert (bare["first_val_loss"], bare["final_val_loss"]) == (first["first_val_loss"], first["final_val_loss"])
    assert bare["train_seconds"] == first["train_seconds"]
    assert bare["cost"]["device_hours"] <= first["cost"]["device_hours"] + 1e-6


def test_loom_train_and_quickstart_on_a_finished_run_say_it_was_complete(tiny_root):
    from loom.data import read_manifest, shard_dir
    from loom.pipeline import quickstart

    overrides = tiny_overrides(tiny_root, "done-cli", ["sample.max_new_tokens=10"])
    run_loom("train", *sets(overrides), cwd=tiny_root)
    again = run_loom("train", *sets(overrides), cwd=tiny_root)
    assert again.stdout.startswith("run already complete at step 6 (trained earlier): validation loss ")
    assert "already complete at step 6" in again.stderr and "resumed" not in again.stderr

    cfg = tiny_config(tiny_root, "done-cli", ["sample.max_new_tokens=10"])
    recorded = next(json.loads(line)["summary"] for line in (cfg.run_dir / "events.jsonl").read_text().splitlines()
                    if json.loads(line)["event"] == "end")
    out = io.StringIO()
    quickstart(cfg, out=out)
    last = out.getvalue().strip().splitlines()[-1]
    first, final = recorded["first_val_loss"], recorded["final_val_loss"]
    assert last.startswith(f"run already complete at step 6 (trained earlier): validation loss {first:.3f} -> "
                           f"{final:.3f} ({100 * (1 - final / first):.0f}% lower) in "
                           f"{recorded['train_seconds']:.0f}s of training at {recorded['cost']['mfu']:.0%} MFU")
    by_domain = read_manifest(shard_dir(cfg))["splits"]["train"]["tokens_by_domain"]
    text = by_domain.get("text", 0) / sum(by_domain.values())
    assert f"trained on {recorded['tokens']} tokens (train split {text:.0%} text, {1 - text:.0%} code)" in last
