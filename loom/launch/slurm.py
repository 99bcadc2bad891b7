"""A training run as a Slurm batch job: the sbatch script, its submission, and what the job does
when it is told to stop.

`submit(cfg)` freezes the config into `<run>/launch/config.toml`, writes `<run>/launch/job.sbatch`
(atomically) and submits it with `sbatch --parsable`; the job id goes into `<run>/launch/job.json`
for `loom status`. The script:

  - asks for what `[launch]` says: `--job-name` = `run.name` (so `squeue` tells team mates whose
    run it is), `--nodes`, one task per node with `cpus_per_proc` x processes CPUs,
    `--gpus-per-node`, `--mem`, `--time`, `--partition`, `--account`, `--qos`, `--requeue`,
    `--signal=USR1@signal_seconds`, then `launch.sbatch_lines`; every attempt of the job appends
    to `<run>/launch/slurm-<job id>.out`.
  - runs `srun`: one torchrun agent per node, meeting at a c10d rendezvous on the allocation's
    first node (`--rdzv-id` the job id, so two jobs never meet), with `--max-restarts` for failed
    workers; each agent starts the node's training processes, `loom train --config <frozen>`.

Signals and requeue. Slurm's warning (SIGUSR1, `signal_seconds` before the time limit, or
`scancel --signal=USR1 JOB`) goes to every process of the job step on every node. The torchrun
agents are started with SIGUSR1 ignored (a signal it does not handle would kill an agent); the
training processes catch it (`loom.train`'s StopRequest), agree at the end of the current step,
save a checkpoint and exit 0, and so do the agents. The script then runs `loom launch --after-srun
STATUS`, which requeues the job (`scontrol requeue`) when the run stopped on that signal short
of `train.steps` (not when it finished, failed, or stopped for a budget). SIGTERM (`scontrol
requeue`, preemption, `scancel`, the time limit itself) reaches every process as well: the
agents pass it on to their workers, which checkpoint the same way within Slurm's `KillWait`, and
Slurm itself requeues a job it was asked to requeue or preempted. A requeued job runs the same
script again, and `loom train` resumes from the newest valid checkpoint: the same final weights
as a run never interrupted.

No process outlives the job: slurmstepd ends every process of a step when it ends, and an agent
that ends ends its workers. What runs where is Slurm's business; loom only writes the script.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from loom.config import LoomConfig
from loom.errors import ConfigError, LoomError
from loom.util import atomic_write_text

# squeue/sacct states after which a job no longer runs nor will by itself
DONE_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
               "BOOT_FAIL", "DEADLINE", "REVOKED", "SPECIAL_EXIT"}
JOB_NAME = re.compile(r"[\w.+-]+")


def launch_dir(cfg: LoomConfig) -> Path:
    return cfg.run_dir / "launch"


def sbatch_script(cfg: LoomConfig, config_path: Path) -> str:
    """The batch script of the run (see the module's docstring), training with `config_path`."""
    la, run_dir = cfg.launch, cfg.run_dir.resolve()
    procs = la.procs
    cpus = la.cpus_per_proc * procs
    python, config = shlex.quote(sys.executable), shlex.quote(str(config_path.resolve()))
    options = [f"--job-name={cfg.run.name}", f"--nodes={la.nodes}", "--ntasks-per-node=1", f"--cpus-per-task={cpus}"]
    if la.gpus_per_node:
        options.append(f"--gpus-per-node={la.gpus_per_node}")
    for flag, value in (("mem", la.mem), ("time", la.time), ("partition", la.partition), ("account", la.account),
                        ("qos", la.qos)):
        if value:
            options.append(f"--{flag}={value}")
    options.append("--requeue" if la.requeue else "--no-requeue")
    if la.signal_seconds:
        options.append(f"--signal=USR1@{la.signal_seconds}")
    options += ["--open-mode=append", f"--output={run_dir / 'launch'}/slurm-%j.out",
                *la.sbatch_lines]
    port = str(la.port) if la.port else "$((20000 + SLURM_JOB_ID % 20000))"
    step_options = f"--ntasks-per-node=1 --cpus-per-task={cpus}" + (
        f" --gpus-per-node={la.gpus_per_node}" if la.gpus_per_node else "")
    lines = [
        "#!/bin/bash",
        f"# by `loom launch --engine slurm` for run {cfg.run.name}; resubmit: sbatch {run_dir}/launch/job.sbatch",
        *[f"#SBATCH {option}" for option in options],
        "set -uo pipefail",
        f"cd {shlex.quote(os.getcwd())}",
        *la.setup,
        "# torchrun --max-restarts with gloo: restarted workers would meet stale keys in a shared store",
        "export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1",
        f"export OMP_NUM_THREADS={la.cpus_per_proc}",
        'head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        f"port={port}",
        'echo "[loom] job $SLURM_JOB_ID, attempt $((${SLURM_RESTART_COUNT:-0} + 1)), on $SLURM_JOB_NODELIST;'
        ' rendezvous at $head:$port"',
        "# one torchrun agent per node, started with SIGUSR1 ignored: Slurm's warning signal is for the",
        "# training processes, which checkpoint and exit 0 (loom train's StopRequest)",
        f"srun {step_options} --kill-on-bad-exit=1 bash -c 'trap \"\" USR1; exec \"$@\"' torchrun \\",
        f"    {python} -m torch.distributed.run --nnodes=\"$SLURM_NNODES\" --nproc-per-node={procs} \\",
        f"    --rdzv-backend=c10d --rdzv-endpoint=\"$head:$port\" --rdzv-id=\"$SLURM_JOB_ID\" "
        f"--max-restarts={la.max_restarts} \\",
        f"    -m loom train --config {config}",
        "status=$?",
        "# stopped by the signal before the last step: requeue this job, which resumes the run",
        f"exec {python} -m loom launch --engine slurm --config {config} --after-srun \"$status\"",
    ]
    return "\n".join(lines) + "\n"


def job_state(job_id: str) -> str:
    """The job's state from squeue, else sacct (PENDING, RUNNING, COMPLETED, ...), or a phrase
    saying why it is not known."""
    if shutil.which("squeue"):
        out = subprocess.run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.split()[0]
    if shutil.which("sacct"):
        out = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.split()[0]
    if not shutil.which("squeue") and not shutil.which("sacct"):
        return "unknown (no squeue or sacct here)"
    return "unknown (not in squeue or sacct)"


def read_job(run_dir: Path) -> dict | None:
    """What `loom launch` recorded of the run's job (`launch/job.json`), or None."""
    try:
        return json.loads((run_dir / "launch" / "job.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


def submit(cfg: LoomConfig) -> str:
    """Writes the run's sbatch script and, unless `launch.submit` is false, submits it; returns
    what was done, in words."""
    if not JOB_NAME.fullmatch(cfg.run.name):
        raise ConfigError(f"run.name {cfg.run.name!r} is the Slurm job name: use letters, digits, '.', '_', '+' "
                          "and '-' only")
    previous = read_job(cfg.run_dir)
    if previous and previous.get("engine") == "slurm" and previous.get("job_id") and shutil.which("squeue"):
        state = job_state(previous["job_id"])
        if not state.startswith("unknown") and state not in DONE_STATES:
            raise LoomError(f"run {cfg.run.name} already has Slurm job {previous['job_id']} ({state}); wait for it "
                            f"(loom status {cfg.run.dir}) or cancel it (scancel {previous['job_id']}) first")
    out = launch_dir(cfg)
    frozen, script = out / "config.toml", out / "job.sbatch"
    atomic_write_text(frozen, cfg.to_toml())
    atomic_write_text(script, sbatch_script(cfg, frozen))
    script.chmod(0o755)
    if not cfg.launch.submit:
        return f"wrote {script} (launch.submit = false); submit it with: sbatch {script}"
    if shutil.which("sbatch") is None:
        raise LoomError(f"sbatch is not on PATH: run loom launch on a Slurm login node, or set launch.submit = false "
                        f"and submit {script} where Slurm is")
    result = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True)
    if result.returncode != 0:
        raise LoomError(f"sbatch {script} failed: {result.stderr.strip() or result.stdout.strip()}; check the "
                        "[launch] settings (partition, account, qos, time) against `sinfo` and your associations")
    job_id = result.stdout.strip().split(";")[0]
    atomic_write_text(out / "job.json", json.dumps({"engine": "slurm", "job_id": job_id, "script": str(script),
                                                     "submitted": time.time()}) + "\n")
    la = cfg.launch
    return (f"submitted Slurm job {job_id} ({cfg.run.name}: {la.nodes} node(s) x {la.procs} process(es)); log "
            f"{out / f'slurm-{job_id}.out'}; follow it with: loom status {cfg.run.dir}")


def last_end(run_dir: Path) -> dict | None:
    """The run's last `end` event (what `loom train` writes when it returns), or None."""
    from loom.train.report import read_jsonl

    ends = [e for e in read_jsonl(run_dir / "events.jsonl") if e.get("event") == "end"]
    return ends[-1] if ends else None


def after_srun(cfg: LoomConfig, status: int, say=print) -> int:
    """Inside the job, once srun has returned with `status`: requeues the job when the run
    stopped on a signal before `train.steps`. `say(line)` hears what was decided (before the
    requeue, which ends this process); returns the job's exit status."""
    code, why = _decide(cfg, status)
    if code is not None:
        say(f"[loom] {why}")
        return code
    job_id = os.environ["SLURM_JOB_ID"]
    say(f"[loom] run {cfg.run.name} {why}: requeueing job {job_id}, which resumes from there")
    result = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True)
    if result.returncode != 0:
        say(f"[loom] scontrol requeue {job_id} failed: {result.stderr.strip()}; sbatch "
            f"{launch_dir(cfg) / 'job.sbatch'} to continue the run")
        return 1
    return 0


def _decide(cfg: LoomConfig, status: int) -> tuple[int | None, str]:
    """(exit status, why) when the job ends here; (None, why) when it is to be requeued."""
    if not os.environ.get("SLURM_JOB_ID"):
        raise ConfigError("--after-srun runs inside a Slurm job (SLURM_JOB_ID is not set): the sbatch script that "
                          "loom launch writes calls it after srun")
    if status != 0:
        return status, f"srun exited with status {status}: the job ends as failed, not requeued; see this log"
    end = last_end(cfg.run_dir)
    if end is None:
        return 1, f"no end of training recorded in {cfg.run_dir / 'events.jsonl'}; not requeued"
    step, why = end.get("step", 0), end.get("summary", {}).get("stopped_because")
    if step >= cfg.train.steps:
        return 0, f"run {cfg.run.name} complete at step {step}"
    if why != "interrupted":
        return 0, f"run {cfg.run.name} stopped at step {step} ({why}); not requeued"
    if not cfg.launch.requeue:
        return 0, (f"run {cfg.run.name} stopped on a signal at step {step}; launch.requeue is false, so not requeued: "
                   f"sbatch {launch_dir(cfg) / 'job.sbatch'} to continue")
    return None, f"stopped on a signal at step {step} of {cfg.train.steps}"
