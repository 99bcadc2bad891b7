"""`loom launch --engine ray` on a local Ray instance the test starts: Ray Train's TorchTrainer runs
two workers (gloo on the CPU) that follow one process with the same global batch."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from conftest import tiny_config, tiny_overrides
from loom.train import train

pytestmark = pytest.mark.slow

# a cluster of this test's own: no token to find in ~/.ray, nothing shared with other Ray users
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
HEAD = """
import sys, ray
ray.init(num_cpus=2, include_dashboard=False, _temp_dir=sys.argv[1])
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()  # until the test closes it, or dies
ray.shutdown()
"""


@pytest.fixture(scope="module")
def ray_address():
    """A Ray instance of two CPUs in a child process; it ends, and its Ray processes with it
    (Ray's processes share the fate of the driver that started them), when the test closes the
    child's stdin or dies."""
    pytest.importorskip("ray.train.torch", reason="Ray Train is not installed: pip install 'ray[train]'")
    temp = tempfile.mkdtemp(prefix="loom-ray-")  # short: Ray's socket paths must fit in 107 bytes
    head = subprocess.Popen([sys.executable, "-c", HEAD, temp], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **RAY_ENV})
    try:
        address = head.stdout.readline().strip()
        if not address:
            pytest.fail(f"the Ray head did not start: {head.stderr.read()[-3000:]}")
        yield address
    finally:
        head.stdin.close()
        try:
            head.wait(timeout=120)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
        shutil.rmtree(temp, ignore_errors=True)


def losses(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if "loss" in r]


def test_two_ray_workers_follow_one_process_with_the_same_global_batch(ray_address, tiny_root):
    common = ["train.steps=12", "train.eval_every=100", "train.ckpt_every=100", "train.batch_tokens=256"]
    launch = [*common, "launch.procs_per_node=2", f'launch.ray_address="{ray_address}"']
    args = [arg for o in tiny_overrides(tiny_root, "ray-run", launch) for arg in ("--set", o)]
    result = subprocess.run([sys.executable, "-m", "loom", "launch", "--engine", "ray", *args], cwd=tiny_root,
                            capture_output=True, text=True, timeout=600,
                            env={**os.environ, **RAY_ENV, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    assert "trained 12 steps on Ray" in result.stdout
    run = tiny_root / "runs" / "ray-run"
    assert json.loads((run / "launch" / "job.json").read_text())["engine"] == "ray"
    assert (run / "checkpoints" / "step_000012").is_dir()
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert events[0]["event"] == "start" and events[0]["world_size"] == 2

    single = tiny_config(tiny_root, "ray-single", common)  # one process, two micro-batches
    train(single)
    a, b = losses(single.run_dir), losses(run)
    assert len(a) == len(b) == 12
    worst = max(abs(x - y) / abs(x) for x, y in zip(a, b))
    assert worst <= 1e-4, f"largest relative difference {worst:.2e}"
