"""`loom doctor`: a preflight check of the machine, the data and the config before a run.

Each check gives pass, warn, fail or skip, a detail and, when not a pass, how to fix it. The
checks: Python and torch versions; CUDA and the driver; each visible device with its free memory
and bf16 support; a matrix-product throughput test against the peak MFU is measured against
(a GPU's datasheet figure, a CPU's theoretical rate: `loom.train.cost.peak_flops`); GPU ECC
errors, retired pages and XID errors through NVML and the kernel log where available; under
torchrun, an all-reduce that must add up exactly and its bandwidth; free space and write speed
at the run directory against the checkpoints the run will keep; the data shards present and
matching their manifest's checksums; the loader's throughput against what training will ask of
it; and the config itself. Nothing here changes the machine: the write test writes one
temporary file in the run directory and deletes it, and off the datasheet table the
matrix-product rate it measures is added to loom's per-machine record of measured peaks
(`loom.train.cost.measured_peak`), as every training process adds its own.

Does not own: fixing anything (each line says how), or the in-run guards (`loom.train.health`).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from loom.errors import LoomError

ORDER = {"fail": 0, "warn": 1, "pass": 2, "skip": 3}


@dataclass
class Check:
    name: str
    status: str  # pass | warn | fail | skip
    detail: str
    fix: str = ""


def run_checks(config_source: str | None, overrides=(), quick: bool = False) -> list[Check]:
    """Every check, in order; `quick` skips the slow ones (shard checksums read every byte)."""
    checks = [check_python(), check_torch()]
    cfg = None
    try:
        from loom.config import load_config

        cfg = load_config(config_source, overrides)
        checks.append(Check("config", "pass", f"{config_source or 'quickstart'} resolves"))
    except LoomError as e:
        checks.append(Check("config", "fail", str(e), "fix the key named above"))
    from loom.train.distributed import pick_device

    device = pick_device(cfg.train.device if cfg else "auto")
    checks += check_devices(device)
    checks.append(check_matmul(device, cfg.train.dtype if cfg else "auto"))
    checks += check_nvml()
    checks.append(check_all_reduce(device))
    checks.append(check_sandbox())
    if cfg is not None:
        checks.append(check_run_dir(cfg))
        checks += check_data(cfg, quick)
    return checks


def check_python() -> Check:
    v = sys.version_info
    ok = v >= (3, 11)
    return Check("python", "pass" if ok else "fail", platform.python_version(),
                 "" if ok else "loom needs Python 3.11 or newer")


def check_torch() -> Check:
    cuda = torch.version.cuda
    detail = f"torch {torch.__version__}" + (f", built for CUDA {cuda}" if cuda else ", CPU build")
    if torch.cuda.is_available():
        driver = _nvidia_smi("driver_version")
        detail += f"; driver {driver[0]}" if driver else ""
    return Check("torch", "pass", detail)


def _nvidia_smi(field: str) -> list[str]:
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def check_devices(device: torch.device) -> list[Check]:
    if device.type != "cuda":
        cores = os.cpu_count() or 1
        free = _available_ram()
        detail = f"CPU only: {cores} cores, {torch.get_num_threads()} torch threads"
        detail += f", {free / 1e9:.1f} GB RAM available" if free else ""
        return [Check("devices", "pass", detail)]
    checks = []
    for i in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(i)
        name = torch.cuda.get_device_name(i)
        bf16 = torch.cuda.is_bf16_supported()
        status = "pass" if bf16 and free > 0.5 * total else "warn"
        fix = ""
        if not bf16:
            fix = "no bf16 on this GPU: set train.dtype = \"float32\" (slower) or use an Ampere or newer GPU"
        elif free <= 0.5 * total:
            fix = "another process holds over half of this GPU's memory: check nvidia-smi"
        checks.append(Check(f"cuda:{i}", status, f"{name}, {free / 1e9:.1f} of {total / 1e9:.1f} GB free, "
                                                 f"bf16 {'yes' if bf16 else 'no'}", fix))
    return checks


def _available_ram() -> int:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def check_matmul(device: torch.device, dtype: str = "auto") -> Check:
    """A matrix product's rate here against the peak training measures MFU against. The peak
    must be an upper bound: a measured rate above it means the peak is wrong here."""
    from loom.train import cost

    rate = cost.matmul_peak(device)
    if device.type == "cuda" and (key := cost.table_key(cost.device_name(device), cost.PEAK_TFLOPS)):
        share = rate / (cost.PEAK_TFLOPS[key] * 1e12)
        status = "pass" if share >= 0.5 else "warn"
        return Check("matmul", status, f"{rate / 1e12:.1f} TFLOP/s bf16, {share:.0%} of the {key.upper()} "
                                       f"datasheet peak", "" if status == "pass" else
                     "under half the datasheet peak: check clocks and power (nvidia-smi -q -d PERFORMANCE), "
                     "thermal throttling, or other processes on the GPU")
    best, count = cost.measured_peak(device)
    peak, source = cost.peak_flops(device, dtype=dtype)
    unit, scale = ("TFLOP/s bf16", 1e12) if device.type == "cuda" else ("GFLOP/s fp32", 1e9)
    return Check("matmul", "pass", f"{rate / scale:.1f} {unit} now, best of {count} here {best / scale:.1f}; "
                                   f"MFU is measured against {peak / scale:.1f} {unit.split()[0]}, the {source}")


def check_nvml() -> list[Check]:
    if not torch.cuda.is_available():
        return [Check("gpu errors", "skip", "no NVIDIA GPU")]
    try:
        import pynvml
    except ImportError:
        return [Check("gpu errors", "skip", "pynvml not installed", "pip install nvidia-ml-py to check ECC errors")]
    checks = []
    try:
        pynvml.nvmlInit()
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            try:
                ecc = pynvml.nvmlDeviceGetTotalEccErrors(handle, pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
                                                         pynvml.NVML_VOLATILE_ECC)
            except pynvml.NVMLError:
                checks.append(Check(f"gpu{i} ecc", "skip", "ECC counters not supported"))
                continue
            status = "pass" if ecc == 0 else "fail"
            checks.append(Check(f"gpu{i} ecc", status, f"{ecc} uncorrected ECC errors since boot",
                                "" if ecc == 0 else "uncorrected memory errors: drain this GPU and reset it"))
    except pynvml.NVMLError as e:
        return [Check("gpu errors", "skip", f"NVML: {e}")]
    xids = _xid_count()
    if xids is None:
        checks.append(Check("xid errors", "skip", "kernel log not readable"))
    else:
        checks.append(Check("xid errors", "pass" if xids == 0 else "warn", f"{xids} NVRM Xid lines in the kernel log",
                            "" if xids == 0 else "read them: dmesg | grep -i xid (Xid 48, 63, 64, 79 mean bad memory "
                                                 "or a GPU off the bus)"))
    return checks


def _xid_count() -> int | None:
    try:
        out = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return sum("NVRM: Xid" in line for line in out.stdout.splitlines())


def check_all_reduce(device: torch.device) -> Check:
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Check("all-reduce", "skip", "one process (run under torchrun to test the collectives)")
    from loom.train.distributed import init_distributed

    info = init_distributed(device.type)
    rank = info.rank
    value = torch.full((4,), float(rank + 1), device=info.device)
    dist.all_reduce(value)
    expected = world * (world + 1) / 2
    if not torch.all(value == expected):
        return Check("all-reduce", "fail", f"rank {rank} got {value.tolist()}, expected {expected}",
                     "a collective adds up wrong: check NCCL/gloo versions and the network (NCCL_DEBUG=INFO)")
    n = 16 * 1024 * 1024  # 64 MB of fp32
    buf = torch.ones(n, device=info.device)
    dist.all_reduce(buf)
    if info.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(3):
        dist.all_reduce(buf)
    if info.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / 3
    bus_bandwidth = 2 * (world - 1) / world * n * 4 / seconds  # ring all-reduce bus bandwidth (nccl-tests)
    return Check("all-reduce", "pass", f"{world} ranks add up exactly; {bus_bandwidth / 1e9:.2f} GB/s bus "
                                       f"bandwidth ({dist.get_backend()})")


def check_sandbox() -> Check:
    """Which isolation layers the eval sandbox gets here (it runs model-written code)."""
    try:
        from loom.sandbox import isolation_layers

        layers = isolation_layers()
    except Exception as e:  # the check reports; it must not take the doctor down
        return Check("sandbox", "fail", f"the eval sandbox cannot run a program: {type(e).__name__}: {e}",
                     "HumanEval and the code_output suite need it; run `loom doctor` with --debug for details")
    kernel = [layer for layer in layers if layer in ("netns", "mountns") or layer.startswith("uid-drop")]
    detail = ", ".join(layers)
    if kernel:
        return Check("sandbox", "pass", detail)
    return Check("sandbox", "warn", f"{detail}: no namespaces or separate user, so only resource limits and the "
                 "audit hook contain model-written code", "run as root (or in a container that allows user and "
                 "network namespaces) for the full isolation")


def check_run_dir(cfg) -> Check:
    from loom.train.plan import param_count

    run_dir = Path(cfg.run_dir)
    n = param_count(cfg.model)
    checkpoint_bytes = 16 * n  # weights (4) and AdamW moments (8) plus slack for the rest
    keep = (cfg.train.keep_last + 1) * checkpoint_bytes
    probe_dir = run_dir
    try:
        probe_dir.mkdir(parents=True, exist_ok=True)
        size = int(min(max(checkpoint_bytes, 8 << 20), 256 << 20))
        probe = probe_dir / f".doctor-{os.getpid()}.tmp"
        block = os.urandom(1 << 20)
        start = time.perf_counter()
        with open(probe, "wb") as f:
            for _ in range(size >> 20):
                f.write(block)
            f.flush()
            os.fsync(f.fileno())
        seconds = time.perf_counter() - start
        probe.unlink()
    except OSError as e:
        return Check("run dir", "fail", f"cannot write in {run_dir}: {e.strerror or e}",
                     "choose a writable run.dir, or fix its permissions / free space")
    free = shutil.disk_usage(probe_dir).free
    rate = size / seconds
    detail = (f"{run_dir}: {free / 1e9:.1f} GB free, writes {rate / 1e6:.0f} MB/s; a checkpoint is about "
              f"{checkpoint_bytes / 1e6:.1f} MB ({checkpoint_bytes / rate:.1f}s to write), "
              f"{cfg.train.keep_last} kept")
    if free < keep:
        return Check("run dir", "fail", detail, f"needs about {keep / 1e9:.2f} GB: free space or lower train.keep_last")
    return Check("run dir", "pass", detail)


def check_data(cfg, quick: bool) -> list[Check]:
    from loom.data import ShardLoader, read_manifest, shard_dir, verify_shards
    from loom.train.cost import peak_flops
    from loom.train.distributed import pick_device
    from loom.train.plan import flops_per_token

    out = shard_dir(cfg)
    try:
        manifest = read_manifest(out)
    except LoomError as e:
        return [Check("data", "fail", str(e), f"build it: loom data build --config <this config> (data.dir = "
                                              f"{cfg.data.dir})")]
    tokens = sum(s["tokens"] for s in manifest["splits"].values())
    if quick:
        checks = [Check("data", "pass", f"{out}: {tokens:,} tokens (checksums not read: --quick)")]
    else:
        problems = verify_shards(out)
        if problems:
            return [Check("data", "fail", f"{len(problems)} problem(s): {problems[0]}",
                          "rebuild the shards: loom data build --force --config <this config>")]
        checks = [Check("data", "pass", f"{out}: {tokens:,} tokens, every file matches its sha256")]
    t = cfg.train
    try:
        loader = ShardLoader(out, "train", t.seq_len, t.micro_batch, seed=cfg.run.seed)
    except LoomError as e:
        return checks + [Check("loader", "fail", str(e), "lower train.micro_batch or train.seq_len, or add data")]
    loader.next_batch()
    start, batches = time.perf_counter(), 0
    while time.perf_counter() - start < 0.5:
        loader.next_batch()
        batches += 1
    rate = batches * t.micro_batch * t.seq_len / (time.perf_counter() - start)
    device = pick_device(t.device)
    peak, _ = peak_flops(device, cfg.cost.peak_tflops, t.dtype)
    needed = peak * 0.6 / flops_per_token(cfg.model, t.seq_len)  # the most a process could train at 60% MFU
    status = "pass" if rate >= 2 * needed else "warn"
    detail = f"{rate:,.0f} tokens/s from one process; training needs at most ~{needed:,.0f} tokens/s"
    return checks + [Check("loader", status, detail, "" if status == "pass" else
                           "the loader may starve training: put the shards on local or faster storage")]


def render(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = [f"{'status':<6}  {'check':<{width}}  detail"]
    for c in checks:
        lines.append(f"{c.status.upper():<6}  {c.name:<{width}}  {c.detail}")
        if c.fix:
            lines.append(f"{'':<6}  {'':<{width}}  fix: {c.fix}")
    worst = min((c.status for c in checks), key=ORDER.__getitem__)
    counts = {s: sum(c.status == s for c in checks) for s in ("pass", "warn", "fail", "skip")}
    lines.append("")
    lines.append(f"{counts['pass']} pass, {counts['warn']} warn, {counts['fail']} fail, {counts['skip']} skip: "
                 + ("ready" if worst != "fail" else "not ready"))
    return "\n".join(lines)


def to_json(checks: list[Check]) -> str:
    return json.dumps({"ok": all(c.status != "fail" for c in checks), "checks": [asdict(c) for c in checks]},
                      indent=2)
