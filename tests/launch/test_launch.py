"""The [launch] settings, the sbatch script they make, what a job does after srun, and `loom
status` on real run directories; none of these needs Slurm or Ray running."""

import json
import subprocess
import time

import pytest

from conftest import run_loom, tiny_config
from loom.config import load_config, slurm_time_seconds
from loom.errors import ConfigError, LoomError
from loom.launch import after_srun, launch
from loom.launch.status import run_status
from loom.train import train


@pytest.mark.parametrize("override, message", [
    ("launch.gpu_per_node=2", "unknown key launch.gpu_per_node; did you mean launch.gpus_per_node"),
    ("launch.workers=2", "unknown key launch.workers; valid keys: engine, nodes, procs_per_node"),
    ('launch.engine="k8s"', "launch.engine 'k8s' is not known; use slurm or ray"),
    ("launch.nodes=0", "launch.nodes must be positive"),
    ('launch.time="4 hours"', "launch.time '4 hours' is not a Slurm time limit"),
    ('launch.time="1"', r"launch.signal_seconds \(120\) must be shorter than launch.time \(1 = 60s\)"),
    ("launch.signal_seconds=70000", "at most 65535"),
    ("launch.gpus_per_node=8", None),
    ('launch.mem="lots"', "launch.mem 'lots' is not a Slurm memory size"),
    ('launch.partition="gpu; rm -rf /"', "launch.partition .* must be a name without spaces"),
    ('launch.sbatch_lines=["exclusive"]', r"launch.sbatch_lines\[0\] 'exclusive' must be one sbatch option"),
    ('launch.setup=["module load a\\nmodule load b"]', r"launch.setup\[0\] holds a line break"),
    ("launch.port=80", "launch.port must be 0"),
    ('launch.ray_address="not an address"', "launch.ray_address 'not an address' is not a Ray address"),
    ("launch.requeue=1", "launch.requeue must be true or false"),
])
def test_bad_launch_settings_name_the_key_and_the_fix(override, message):
    if message is None:
        with pytest.raises(ConfigError, match="launch.procs_per_node .* must equal launch.gpus_per_node"):
            load_config(None, [override, "launch.procs_per_node=2"])
        return
    with pytest.raises(ConfigError, match=message) as e:
        load_config(None, [override])
    assert f"--set {override}" in str(e.value)  # and where it came from


def test_slurm_time_limits():
    assert slurm_time_seconds("90") == 5400
    assert slurm_time_seconds("10:30") == 630
    assert slurm_time_seconds("04:00:00") == 14400
    assert slurm_time_seconds("1-12") == 129600
    assert slurm_time_seconds("2-00:30:00") == 174600
    assert slurm_time_seconds("1:2:3:4") is None and slurm_time_seconds("soon") is None


def test_the_cli_prints_a_bad_setting_without_a_traceback(tmp_path):
    result = run_loom("launch", "--engine", "slurm", "--set", 'launch.time="tomorrow"', cwd=tmp_path, ok=False)
    assert "launch.time 'tomorrow' is not a Slurm time limit" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_sbatch_script_asks_for_the_launch_settings(tiny_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config(tiny_root, "script", [
        "launch.nodes=4", "launch.gpus_per_node=8", "launch.cpus_per_proc=12", 'launch.mem="480G"',
        'launch.time="1-00:00:00"', 'launch.partition="gpu"', 'launch.account="lm-team"', 'launch.qos="high"',
        "launch.signal_seconds=300", "launch.port=29400", 'launch.sbatch_lines=["--exclusive"]',
        'launch.setup=["module load cuda/12.4"]', "launch.submit=false"])
    said = launch(cfg, "slurm")
    script_path = cfg.run_dir / "launch" / "job.sbatch"
    assert f"wrote {script_path}" in said and "launch.submit = false" in said
    script = script_path.read_text()
    for line in ("#SBATCH --job-name=script", "#SBATCH --nodes=4", "#SBATCH --ntasks-per-node=1",
                 "#SBATCH --cpus-per-task=96", "#SBATCH --gpus-per-node=8", "#SBATCH --mem=480G",
                 "#SBATCH --time=1-00:00:00", "#SBATCH --partition=gpu", "#SBATCH --account=lm-team",
                 "#SBATCH --qos=high", "#SBATCH --requeue", "#SBATCH --signal=USR1@300", "#SBATCH --exclusive",
                 "#SBATCH --open-mode=append", f"#SBATCH --output={cfg.run_dir.resolve()}/launch/slurm-%j.out",
                 "module load cuda/12.4", "port=29400", "export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1",
                 "--nproc-per-node=8", "--max-restarts=3", '--rdzv-id="$SLURM_JOB_ID"'):
        assert line in script, line
    assert "trap \"\" USR1" in script  # the torchrun agents ignore the warning signal; the workers take it
    frozen = cfg.run_dir.resolve() / "launch" / "config.toml"
    assert f"-m loom train --config {frozen}" in script
    assert f"--config {frozen} --after-srun" in script
    assert load_config(frozen) == cfg  # the job trains exactly this config
    assert subprocess.run(["bash", "-n", str(script_path)]).returncode == 0
    assert not (cfg.run_dir / "launch" / "job.json").exists()  # nothing submitted

    plain = tiny_config(tiny_root, "plain", ["launch.signal_seconds=0", "launch.requeue=false", "launch.submit=false"])
    launch(plain)
    script = (plain.run_dir / "launch" / "job.sbatch").read_text()
    assert "--signal" not in script and "#SBATCH --no-requeue" in script and "--partition" not in script
    assert "--gpus-per-node" not in script and "--nproc-per-node=1" in script


def test_launch_refuses_what_cannot_run(tmp_path):
    cfg = tiny_config(tmp_path, "nodata", ["launch.submit=false"])
    with pytest.raises(LoomError, match="no token shards .* build them with `loom data build`"):
        launch(cfg, "slurm")
    with pytest.raises(ConfigError, match="engine 'pbs' is not known"):
        launch(cfg, "pbs")


def test_a_run_name_must_be_a_job_name(tiny_root):
    cfg = tiny_config(tiny_root, "my run", ["launch.submit=false"])
    with pytest.raises(ConfigError, match="run.name 'my run' is the Slurm job name"):
        launch(cfg, "slurm")


def test_after_srun_requeues_only_a_run_stopped_on_a_signal(tiny_root, tiny_run, monkeypatch):
    """What the job does once srun returns, on real runs: a finished run, a run stopped by its
    budget and a failed srun are not requeued (the requeue itself is tested against Slurm)."""
    said = []
    done = tiny_run[1]
    with pytest.raises(ConfigError, match="SLURM_JOB_ID is not set"):
        after_srun(done, 0, said.append)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    assert after_srun(done, 0, said.append) == 0 and "complete at step 6" in said[-1]
    assert after_srun(done, 3, said.append) == 3 and "srun exited with status 3" in said[-1]

    budget = tiny_config(tiny_root, "after-budget", ["budget.max_device_hours=1e-9"])
    assert train(budget)["steps"] < 6
    assert after_srun(budget, 0, said.append) == 0
    assert "not requeued" in said[-1] and "budget.max_device_hours reached" in said[-1]


def test_loom_status_lists_runs_with_their_figures(tiny_root, tmp_path):
    runs = tmp_path / "runs"
    cfg = tiny_config(tmp_path, "first")
    cfg.data.dir = str(tiny_root / "data")
    train(cfg)
    second = tiny_config(tmp_path, "second", ["train.steps=3"])
    second.data.dir = str(tiny_root / "data")
    train(second)
    # a run handed to Slurm on another cluster: its job is not known here
    (runs / "second" / "launch").mkdir()
    (runs / "second" / "launch" / "job.json").write_text(json.dumps({"engine": "slurm", "job_id": "987654"}))
    (runs / "not-a-run").mkdir()

    table = run_loom("status", str(runs), cwd=tmp_path).stdout
    lines = table.splitlines()
    assert lines[0].split() == ["run", "step", "loss", "tokens/s", "cost", "heartbeat", "health", "events", "job"]
    assert [line.split()[0] for line in lines[1:]] == ["first", "second"]
    first = run_status(runs / "first")
    assert first["step"] == 6 and first["steps"] == 6 and first["job_state"] is None
    assert f"{first['loss']:.4f}" in lines[1] and "6/6" in lines[1] and "ago" in lines[1]
    assert 0 <= first["heartbeat_age_s"] < time.time()  # a heartbeat was found
    assert "3/3" in lines[2] and "slurm 987654 unknown" in lines[2]

    one = json.loads(run_loom("status", str(runs / "second"), "--json", cwd=tmp_path).stdout)
    assert [r["run"] for r in one] == ["second"] and one[0]["job_id"] == "987654"
    assert "no runs under" in run_loom("status", str(runs / "not-a-run"), cwd=tmp_path).stdout
    missing = run_loom("status", str(tmp_path / "nowhere"), cwd=tmp_path, ok=False)
    assert "is not a directory" in missing.stderr and "Traceback" not in missing.stderr


def test_status_counts_health_events(tiny_root, tmp_path):
    cfg = tiny_config(tmp_path, "sick", ["faults.nan_at_steps=[2]"])
    cfg.data.dir = str(tiny_root / "data")
    train(cfg)
    s = run_status(cfg.run_dir)
    assert s["health_events"] >= 1 and s["last_event"]["event"] == "nonfinite" and s["last_event"]["step"] == 2
