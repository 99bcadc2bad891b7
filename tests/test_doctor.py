"""`loom doctor` on this machine: green when healthy, red on a corrupt shard or an unwritable
run directory, and the collectives under torchrun."""

import json
import os
import subprocess
import sys

from conftest import tiny_overrides


def doctor(root, extra=(), args=(), torchrun=False):
    sets = [a for o in tiny_overrides(root, "doctor", extra) for a in ("--set", o)]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m"] \
        if torchrun else [sys.executable, "-m"]
    return subprocess.run([*launcher, "loom", "doctor", *sets, *args], cwd=root, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def checks_by_name(result):
    return {c["name"]: c for c in json.loads(result.stdout)["checks"]}


def test_a_healthy_cpu_setup_passes(tiny_root):
    result = doctor(tiny_root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ready" in result.stdout and "FAIL" not in result.stdout
    as_json = doctor(tiny_root, args=["--json"])
    checks = checks_by_name(as_json)
    assert json.loads(as_json.stdout)["ok"] is True
    for name in ("python", "torch", "config", "devices", "matmul", "run dir", "data", "loader"):
        assert checks[name]["status"] == "pass", checks[name]
    assert "every file matches its sha256" in checks["data"]["detail"]
    # the sandbox reports the layers it got; rlimits and the audit hook exist everywhere
    assert checks["sandbox"]["status"] in ("pass", "warn") and "audit-hook" in checks["sandbox"]["detail"]


def test_a_corrupted_shard_fails_with_a_fix(tiny_root, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_root / "data", data)
    shard = next((data / "shards").glob("train_*.bin"))
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 3] ^= 0xFF
    shard.write_bytes(bytes(raw))
    result = doctor(tiny_root, extra=[f'data.dir="{data}"'], args=["--json"])
    assert result.returncode == 1
    check = checks_by_name(result)["data"]
    assert check["status"] == "fail" and "sha256 does not match" in check["detail"]
    assert "loom data build" in check["fix"]


def test_an_unwritable_run_directory_fails_with_a_fix(tiny_root, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the run directory should go")
    result = doctor(tiny_root, extra=[f'run.dir="{blocker}/runs"'], args=["--json"])
    assert result.returncode == 1
    check = checks_by_name(result)["run dir"]
    assert check["status"] == "fail" and "cannot write" in check["detail"] and "run.dir" in check["fix"]


def test_a_bad_config_fails_without_a_traceback(tiny_root):
    result = doctor(tiny_root, extra=["train.lr=-1"])
    assert result.returncode == 1 and "train.lr must be positive" in result.stdout
    assert "Traceback" not in result.stderr


def test_collectives_under_torchrun(tiny_root):
    result = doctor(tiny_root, args=["--quick"], torchrun=True)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if "all-reduce" in line)
    assert line.startswith("PASS") and "2 ranks add up exactly" in line and "gloo" in line


def test_the_matmul_check_names_the_peak_training_measures_mfu_against(tiny_root, tmp_path):
    """doctor and training agree on the peak: with one shared measured record, the doctor's line
    gives the same figure and source a training run on this machine reports."""
    cache = tmp_path / "cache"
    env_extra = {"LOOM_CACHE_DIR": str(cache)}
    sets = [a for o in tiny_overrides(tiny_root, "doctor-peak") for a in ("--set", o)]
    result = subprocess.run([sys.executable, "-m", "loom", "doctor", "--json", "--quick", *sets], cwd=tiny_root,
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **env_extra})
    matmul = checks_by_name(result)["matmul"]
    assert matmul["status"] == "pass"
    measure = ("import json, torch; from loom.train.cost import peak_flops; "
               "print(json.dumps(peak_flops(torch.device('cpu'), dtype='float32')))")
    peak, source = json.loads(subprocess.run([sys.executable, "-c", measure], capture_output=True, text=True,
                                             timeout=300, check=True,
                                             env={**os.environ, "OMP_NUM_THREADS": "1", **env_extra}).stdout)
    recorded = json.loads((cache / "peaks.json").read_text())
    assert sum(entry["measurements"] for entry in recorded.values()) == 2  # the doctor's and the second process's
    if source.startswith("theoretical"):  # the second measurement can only raise a measured best, not a theory
        assert f"MFU is measured against {peak / 1e9:.1f} GFLOP/s, the {source}" in matmul["detail"]
    assert "theoretical fp32 peak of " in matmul["detail"]
