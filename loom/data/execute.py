"""Running the clean stage's tasks: here in a process pool, on a Ray cluster, or as a Slurm array.

The clean stage (`loom.data.clean`) splits its inputs into tasks, each a run of files from one
source, and writes a plan (`plan.json`) into its work directory. A task reads its files and
writes its own outputs there, finishing with a marker file (`tasks/NNNNN.json`, written last and
atomically), so any executor may run any task, twice or after a crash, and the merge that follows
sees the same outputs. This module only decides *where* tasks run; `run_task` is what they run.

Executors (`data.executor`, or `loom data build --executor`):
  - `local`: a process pool with `data.workers` processes (0: one per CPU), here. The workers
    end when the build does, however it ends (`kill -9` included).
  - `ray`: one Ray task per clean task, on the cluster at `data.ray_address` ("auto": the one
    this machine belongs to; empty: a Ray instance started here for the build). Every node must
    see `data.dir` at the same path (a shared file system) and have loom installed. What becomes
    of running tasks when the build is killed is left to Ray (a task shares the fate of the
    driver that owns it, in Ray's ownership model).
  - `slurm`: writes `data.dir/slurm/clean.sbatch` (an array job, one array task per clean task)
    and `merge.sbatch` (the same `loom data build` once the array has finished, which finds every
    task done and goes on to deduplicate, tokenize and shard), then submits both with `sbatch`;
    with `data.slurm.submit = false` it only writes them. The config is frozen into
    `data.dir/slurm/config.toml` so that the jobs run with exactly these settings.

Why no scheduler of our own: Ray and Slurm already place work, retry failed nodes and report;
loom's part is making tasks idempotent and their outputs deterministic, so that any of them
(or a re-run of the same command) can finish the job.
"""

from __future__ import annotations

import multiprocessing
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from loom.errors import ConfigError, DataError
from loom.util import end_with_parent

EXECUTORS = ("local", "ray", "slurm")


@dataclass
class SlurmConfig:
    partition: str = ""  # --partition (empty: the cluster's default)
    account: str = ""  # --account (empty: your default)
    time: str = "04:00:00"  # wall-clock limit of each array task and of the merge job
    cpus_per_task: int = 1  # a clean task runs in one process
    mem: str = "8G"  # memory of each array task; the merge job gets `merge_mem`
    merge_mem: str = "64G"  # the merge holds every MinHash signature (4 bytes x bands x rows per document)
    max_parallel: int = 0  # array tasks running at once (0: as many as Slurm allows)
    submit: bool = True  # false: write the scripts and stop, for you to submit them


class Submitted(Exception):
    """The tasks were handed to a batch scheduler; the build finishes in the job it submitted."""


def run_pending(cfg, work: Path, pending: list[int], run_task: Callable, on_done: Callable[[dict], None]) -> None:
    """Runs `run_task(cfg, work, index)` for each pending task index on the configured executor;
    `on_done(task_accounting)` hears of each finished task (in completion order). Raises
    `Submitted` for the slurm executor, whose jobs finish the build."""
    executor = cfg.data.executor
    if not pending:
        return
    if executor == "local":
        _run_local(cfg, work, pending, run_task, on_done)
    elif executor == "ray":
        _run_ray(cfg, work, pending, run_task, on_done)
    elif executor == "slurm":
        _submit_slurm(cfg, work, pending)
    else:
        raise ConfigError(f"data.executor {executor!r} is not known; use one of {', '.join(EXECUTORS)}")


def _run_local(cfg, work: Path, pending: list[int], run_task: Callable, on_done: Callable) -> None:
    workers = min(cfg.data.workers or os.cpu_count() or 1, len(pending))
    if workers == 1:
        for index in pending:
            on_done(run_task(cfg, work, index))
        return
    # fork where the platform has it: spawn would re-import the caller's main module, which
    # breaks scripts without a `__main__` guard. Tasks are submitted a few at a time. Workers end
    # with this process, even when it is killed (an orphaned worker would go on using CPU and
    # memory, and writing into the work directory, beside the next build); this thread makes,
    # uses and shuts down the pool, as `end_with_parent` needs.
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    queue = list(reversed(pending))
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=end_with_parent, initargs=(os.getpid(),)) as pool:
        running = set()
        while queue or running:
            while queue and len(running) < 2 * workers:
                running.add(pool.submit(run_task, cfg, work, queue.pop()))
            finished, running = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                on_done(future.result())


def _run_ray(cfg, work: Path, pending: list[int], run_task: Callable, on_done: Callable) -> None:
    try:
        import ray
    except ImportError:
        raise ConfigError("data.executor = 'ray' needs Ray: pip install 'ray[default]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        # empty: "local", a new instance, even where a `ray start` cluster (or a stale record of one) exists
        address = cfg.data.ray_address or "local"
        kwargs = {} if cfg.data.ray_address else {"num_cpus": cfg.data.workers or os.cpu_count() or 1}
        ray.init(address=address, include_dashboard=False, log_to_driver=False, **kwargs)
    try:
        remote = ray.remote(num_cpus=1, max_retries=2)(run_task)
        refs = [remote.remote(cfg, work, index) for index in pending]
        while refs:
            finished, refs = ray.wait(refs, num_returns=1)
            for ref in finished:
                on_done(ray.get(ref))
    finally:
        if started_here:
            ray.shutdown()


def slurm_scripts(cfg, work: Path, pending: list[int]) -> tuple[Path, Path]:
    """Writes the array job and the merge job; returns their paths."""
    from loom.util import atomic_write_text

    s = cfg.data.slurm
    out = Path(cfg.data.dir).resolve() / "slurm"
    out.mkdir(parents=True, exist_ok=True)
    frozen = out / "config.toml"
    data = cfg.to_dict()
    data["data"]["executor"] = "local"  # the merge job runs here, on its own node
    import tomli_w

    atomic_write_text(frozen, tomli_w.dumps(data))
    loom = f"{shlex.quote(sys.executable)} -m loom"
    header = ["#!/bin/bash"]
    for flag, value in (("partition", s.partition), ("account", s.account), ("time", s.time)):
        if value:
            header.append(f"#SBATCH --{flag}={value}")
    cwd = shlex.quote(os.getcwd())
    contiguous = pending == list(range(pending[0], pending[-1] + 1))
    array = f"{pending[0]}-{pending[-1]}" if contiguous else ",".join(map(str, pending))
    limit = f"%{s.max_parallel}" if s.max_parallel else ""
    clean = header + [
        "#SBATCH --job-name=loom-clean",
        f"#SBATCH --array={array}{limit}",
        f"#SBATCH --cpus-per-task={s.cpus_per_task}",
        f"#SBATCH --mem={s.mem}",
        f"#SBATCH --output={out}/clean-%A_%a.log",
        "set -euo pipefail",
        f"cd {cwd}",
        f"exec {loom} data run-task --config {shlex.quote(str(frozen))} --task \"$SLURM_ARRAY_TASK_ID\"",
    ]
    merge = header + [
        "#SBATCH --job-name=loom-merge",
        f"#SBATCH --cpus-per-task={max(s.cpus_per_task, 4)}",
        f"#SBATCH --mem={s.merge_mem}",
        f"#SBATCH --output={out}/merge-%j.log",
        "set -euo pipefail",
        f"cd {cwd}",
        f"exec {loom} data build --config {shlex.quote(str(frozen))}",
    ]
    clean_path, merge_path = out / "clean.sbatch", out / "merge.sbatch"
    atomic_write_text(clean_path, "\n".join(clean) + "\n")
    atomic_write_text(merge_path, "\n".join(merge) + "\n")
    return clean_path, merge_path


def _submit_slurm(cfg, work: Path, pending: list[int]) -> None:
    clean_path, merge_path = slurm_scripts(cfg, work, pending)
    how = f"sbatch {clean_path}, then sbatch --dependency=afterok:<its job id> {merge_path}"
    if not cfg.data.slurm.submit:
        raise Submitted(f"wrote {len(pending)} array tasks to {clean_path} and the merge job to {merge_path}; "
                        f"submit them with: {how}")
    if shutil.which("sbatch") is None:
        raise DataError(f"data.executor = 'slurm' but sbatch is not on PATH; run on a Slurm login node, or set "
                        f"data.slurm.submit = false and submit by hand ({how})")
    job = _sbatch([str(clean_path)])
    merge_job = _sbatch([f"--dependency=afterok:{job}", str(merge_path)])
    raise Submitted(f"submitted Slurm array job {job} ({len(pending)} clean tasks) and merge job {merge_job}, "
                    f"which deduplicates, tokenizes and writes the shards; logs in {clean_path.parent}")


def _sbatch(args: list[str]) -> str:
    started = time.time()
    result = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise DataError(f"sbatch {' '.join(args)} failed after {time.time() - started:.0f}s: "
                        f"{result.stderr.strip() or result.stdout.strip()}")
    return result.stdout.strip().split(";")[0]
