"""Handing training runs to an existing engine, and what the runs are doing.

`launch(cfg, engine)`: `slurm` writes the run's sbatch script and submits it (`loom.launch.slurm`:
requeue on Slurm's warning signal, resume in the requeued job); `ray` trains on a Ray cluster
with Ray Train's TorchTrainer and returns when the run ends (`loom.launch.raytrain`).
`status_table(dir)`: `loom status`, the runs under a directory (`loom.launch.status`).

Does not own: scheduling (Slurm's and Ray's), the training loop (`loom.train`), what a process
does on a signal (`loom.train`'s StopRequest: finish the step, checkpoint, exit 0).
"""

from __future__ import annotations

from loom.config import LAUNCH_ENGINES, LoomConfig
from loom.errors import ConfigError
from loom.launch.slurm import after_srun
from loom.launch.status import status_json, status_table


def launch(cfg: LoomConfig, engine: str | None = None) -> str:
    """Hands the run to `engine` (default `launch.engine`); returns what happened, in words."""
    engine = engine or cfg.launch.engine
    if engine not in LAUNCH_ENGINES:
        raise ConfigError(f"engine {engine!r} is not known; use {' or '.join(LAUNCH_ENGINES)}")
    if engine == "slurm":
        from loom.data import read_manifest, shard_dir
        from loom.launch.slurm import submit

        read_manifest(shard_dir(cfg))  # no shards: say so now, not in the job's log
        return submit(cfg)
    from loom.launch.raytrain import run_on_ray

    s = run_on_ray(cfg)
    state = "stopped after" if s.get("interrupted") else "trained"
    val = s.get("final_val_loss")
    return (f"{state} {s['steps']} steps on Ray: validation loss {val:.4f}; run in {s['run_dir']}"
            if isinstance(val, float) else f"{state} {s['steps']} steps on Ray; run in {s['run_dir']}")


__all__ = ["after_srun", "launch", "status_json", "status_table"]
