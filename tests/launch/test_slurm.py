"""`loom launch --engine slurm` against a real Slurm: munged, slurmctld and slurmd started on this
machine (tests/launch/local_slurm.py). One run is submitted, stopped by Slurm's warning signal
(SIGUSR1) and requeued by its own job, stopped again by `scontrol requeue` (SIGTERM), and ends
with the same weights as a torchrun run that was never interrupted."""

import json
import os
import subprocess
import sys
import time
import tomllib

import pytest
import tomli_w
from local_slurm import LocalSlurm, missing

from conftest import tiny_overrides
from loom.launch.slurm import DONE_STATES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def slurm():
    why = missing()
    if why:
        pytest.skip(why)
    with LocalSlurm() as cluster:
        yield cluster


def sets(overrides):
    return [arg for o in overrides for arg in ("--set", o)]


def records(path):
    out = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def wait_for(condition, what: str, slurm: LocalSlurm, job: str, log) -> None:
    """Polls until `condition()`; fails with the job's log when the job ended first (or after ten
    minutes, so that a broken cluster cannot hang the suite)."""
    for _ in range(3000):
        if condition():
            return
        state = slurm.squeue_state(job)
        if state in DONE_STATES and not condition():
            pytest.fail(f"job {job} is {state} before {what}:\n{log()}")
        time.sleep(0.2)
    pytest.fail(f"gave up waiting for {what}:\n{log()}\n{slurm.logs()}")


def test_requeued_on_usr1_and_on_scontrol_requeue_resumes_to_the_uninterrupted_weights(slurm, tiny_root):
    extra = ["train.steps=24", "train.ckpt_every=5", "train.eval_every=100", "launch.procs_per_node=2",
             'launch.time="10"', "launch.signal_seconds=60", "launch.max_restarts=1",
             # step 10 waits 5 s: the test's signal lands inside it, whatever this machine's speed
             "faults.stall_at_step=9", "faults.stall_seconds=5"]
    env = {**slurm.env, "PYTHONUNBUFFERED": "1"}
    submitted = subprocess.run([sys.executable, "-m", "loom", "launch", "--engine", "slurm",
                                *sets(tiny_overrides(tiny_root, "slurm-run", extra))],
                               cwd=tiny_root, env=env, capture_output=True, text=True, timeout=120)
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    run = tiny_root / "runs" / "slurm-run"
    job = json.loads((run / "launch" / "job.json").read_text())["job_id"]
    assert f"submitted Slurm job {job}" in submitted.stdout
    log = run / "launch" / f"slurm-{job}.out"

    def job_log() -> str:
        return log.read_text(errors="replace")[-6000:] if log.is_file() else "(no job log yet)"

    script = (run / "launch" / "job.sbatch").read_text()
    for line in ("#SBATCH --job-name=slurm-run", "#SBATCH --requeue", "#SBATCH --signal=USR1@60",
                 "#SBATCH --nodes=1", "#SBATCH --cpus-per-task=2"):
        assert line in script

    # a second launch of the same run while its job is queued or running is refused
    again = subprocess.run([sys.executable, "-m", "loom", "launch", "--engine", "slurm",
                            *sets(tiny_overrides(tiny_root, "slurm-run", extra))],
                           cwd=tiny_root, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and f"already has Slurm job {job}" in again.stderr, again.stderr

    def steps_logged() -> set[int]:
        return {r["step"] for r in records(run / "metrics.jsonl") if "loss" in r}

    def events(kind: str) -> list[dict]:
        return [e for e in records(run / "events.jsonl") if e.get("event") == kind]

    # 1. Slurm's warning signal, as the time limit would send it (to the job's steps, not the
    # batch shell), while step 10 is under way: the workers save step 10, the job requeues itself
    wait_for(lambda: 9 in steps_logged(), "step 9", slurm, job, job_log)
    frozen = run / "launch" / "config.toml"  # what the next attempt reads: stall again at step 15
    settings = tomllib.loads(frozen.read_text())
    settings["faults"]["stall_at_step"] = 14
    frozen.write_text(tomli_w.dumps(settings))
    slurm.run("scancel", "--signal=USR1", job)
    wait_for(lambda: events("resume"), "the requeued job to resume", slurm, job, job_log)
    assert [e["step"] for e in events("interrupted")] == [10]
    assert events("resume")[0]["step"] == 10
    assert f"requeueing job {job}" in job_log()

    # 2. scontrol requeue (SIGTERM to every process, as preemption) while step 15 is under way
    wait_for(lambda: 14 in steps_logged(), "step 14 of the second attempt", slurm, job, job_log)
    slurm.run("scontrol", "requeue", job)
    wait_for(lambda: any(e.get("step") == 24 for e in events("end")), "the run to finish", slurm, job, job_log)
    wait_for(lambda: slurm.squeue_state(job) == "COMPLETED", "the job to complete", slurm, job, job_log)
    assert [e["step"] for e in events("interrupted")] == [10, 15]
    assert [e["step"] for e in events("resume")] == [10, 15]
    assert log.read_text().count("[loom] job ") == 3  # three attempts of one job
    assert sorted(steps_logged()) == list(range(1, 25))

    # the same run never interrupted, under torchrun here
    reference = tiny_overrides(tiny_root, "slurm-reference", extra[:4])
    whole = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                            "-m", "loom", "train", *sets(reference)], cwd=tiny_root, capture_output=True, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert whole.returncode == 0, whole.stderr[-3000:]
    final = "checkpoints/step_000024/model.safetensors"
    assert (run / final).read_bytes() == (tiny_root / "runs" / "slurm-reference" / final).read_bytes()
    ours, theirs = ([r["loss"] for r in records(d / "metrics.jsonl") if "loss" in r]
                    for d in (run, tiny_root / "runs" / "slurm-reference"))
    assert ours == theirs

    status = subprocess.run([sys.executable, "-m", "loom", "status", str(tiny_root / "runs")], cwd=tiny_root,
                            env=slurm.env, capture_output=True, text=True, timeout=120).stdout
    row = next(line for line in status.splitlines() if line.startswith("slurm-run "))
    assert "24/24" in row and f"slurm {job} COMPLETED" in row and "resume at step 15" in row
