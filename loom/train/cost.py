"""What a run costs: model FLOPs utilization, device-hours, energy and money; budgets.

MFU (Chowdhery et al. 2022, appendix B) is the model's training FLOPs per token (`GPT.
flops_per_token`: 6N plus attention) times tokens per second, over the devices' peak rate. The
peak must be an upper bound, so that MFU can never pass 100%, and must not depend on the load of
the moment it is taken. On a GPU recognised by name it comes from `PEAK_TFLOPS`, dense (no 2:4
sparsity) bf16 tensor-core rates from the vendors' datasheets. On a CPU it is the theoretical
rate (`cpu_peak`): the physical cores one matrix product can use, times the highest clock the
machine reports, times the FLOPs per cycle its vector units allow (flags in /proc/cpuinfo; the
assumptions are in `cpu_peak`). A reported clock can be a base clock below the boost clock the
cores run at (virtual machines show only the base clock, Intel's model names too), so the
theoretical rate is checked against the best matrix-product rate ever measured on the machine,
kept in a small cache (`measured_peak`, one measurement added per process: a measurement under
load never lowers it); the higher of the two is the peak, and its source says which. Where no
theoretical rate can be worked out (no clock reported, an unknown architecture, a GPU not in the
table) the measured best is the peak. `cost.peak_tflops` overrides all of them. Should the model
FLOP rate a run reaches still pass the peak, the meter raises its peak to that rate and says so
(`CostMeter.notice`) rather than print an MFU above 100%.

Device-hours are wall-clock hours from the start of training (evaluations and checkpoints
included, carried across resumes in the checkpoint) times the number of processes. Time lost
between a run's last checkpoint and a crash is in no checkpoint and is not counted. Money is
device-hours times `cost.price_per_device_hour`, whose defaults (`PRICE_PER_HOUR`) are
assumptions: typical on-demand cloud prices in US dollars, late 2026; set your own. Energy comes
from NVML's energy counter on NVIDIA GPUs when `pynvml` is installed; elsewhere it is not measured
(and reported as such, never guessed).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import time
from pathlib import Path

import torch

# Dense bf16 tensor-core peak, TFLOP/s per device (vendor datasheets; SXM parts unless named).
PEAK_TFLOPS = {
    "b200": 2250.0,
    "h200": 989.0,
    "h100 pcie": 756.0,
    "h100": 989.0,
    "gh200": 989.0,
    "a100": 312.0,
    "l40s": 362.0,
    "l4": 121.0,
    "a10g": 70.0,
    "a10": 125.0,
    "rtx 4090": 165.0,
    "v100": 125.0,  # fp16: V100 has no bf16
    "mi300x": 1307.0,
}

# Assumed on-demand price per device-hour, USD (late 2026). "cpu": one training process on a
# cloud CPU machine's share. Override with cost.price_per_device_hour.
PRICE_PER_HOUR = {
    "b200": 5.00, "h200": 3.50, "h100 pcie": 2.20, "h100": 2.50, "gh200": 3.00, "a100": 1.50, "l40s": 1.00,
    "l4": 0.60, "a10g": 1.00, "a10": 0.75, "rtx 4090": 0.40, "v100": 0.80, "mi300x": 2.50, "cpu": 0.05,
}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "cpu"


def table_key(name: str, table: dict) -> str | None:
    """The table entry a device name matches (`NVIDIA H100 80GB HBM3` -> `h100`), or None."""
    lower = name.lower()
    for key in sorted(table, key=len, reverse=True):  # "h100 pcie" before "h100", "a10g" before "a10"
        if key in lower:
            return key
    return None


def uses_bf16(device: torch.device, dtype: str) -> bool:
    """Whether training runs its matrix products in bf16 (`train.dtype`; auto: bf16 on CUDA)."""
    return dtype == "bfloat16" or (dtype == "auto" and device.type == "cuda")


def _cpuinfo_blocks(text: str) -> list[dict]:
    """/proc/cpuinfo as one dict per processor block, keys lower-cased."""
    blocks = []
    for chunk in text.split("\n\n"):
        fields = {}
        for line in chunk.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields.setdefault(key.strip().lower(), value.strip())
        if fields:
            blocks.append(fields)
    return blocks


def cpu_peak(cpuinfo: str, cores: int, max_mhz: float = 0.0, bf16: bool = False,
             sve_bytes: int = 0) -> tuple[float, str] | None:
    """(theoretical peak FLOP/s of `cores` cores of the CPU `cpuinfo` describes, how it was
    worked out), or None when the clock or the vector units cannot be told from it.

    The clock is the highest of `max_mhz` (cpufreq's cpuinfo_max_freq), any `cpu MHz` line and
    the GHz in the model name. FLOPs per cycle per core, fp32, assume the most any core with
    those flags has, so that the figure stays an upper bound:
      - x86: two FMA units (Intel since Haswell, AMD since Zen 2) of the widest vector the flags
        name (avx512f 16 lanes, avx 8, sse 4), 2 FLOPs per lane: 64 with AVX-512, 32 with AVX2;
        one add and one multiply unit where there is no FMA (Sandy Bridge). AMD's Zen 4 (family
        25) runs AVX-512 on 256-bit units, so 8 lanes there. Under bf16, AMX tiles (amx_bf16)
        do 1024 FLOPs per cycle (Intel's figure for Sapphire Rapids) and avx512_bf16 dot
        products twice the fp32 rate.
      - aarch64: four 128-bit FMA pipes (Neoverse V2, Apple's cores; N1 has two), 32 FLOPs;
        with SVE, two pipes of the vector length `sve_bytes` when wider (A64FX: 64); under bf16
        with the bf16 extension, BFMMLA's four times the fp32 rate.
    """
    blocks = _cpuinfo_blocks(cpuinfo)
    if not blocks or cores < 1:
        return None
    first = next((b for b in blocks if "flags" in b or "features" in b), blocks[0])
    mhz = [max_mhz]
    for block in blocks:
        with contextlib.suppress(ValueError):
            mhz.append(float(block.get("cpu mhz", "0")))
        if m := re.search(r"@\s*([\d.]+)\s*GHz", block.get("model name", "")):
            mhz.append(float(m.group(1)) * 1000)
    clock = max(mhz)
    if clock <= 0:
        return None
    name = first.get("model name") or first.get("cpu part") or "this CPU"
    if "flags" in first:
        flags = set(first["flags"].split())
        vendor, family = first.get("vendor_id", ""), int(first.get("cpu family", "0") or 0)
        if "avx512f" in flags and not (vendor == "AuthenticAMD" and family < 26):
            lanes, unit = 16, "AVX-512"
        elif "avx512f" in flags:
            lanes, unit = 8, "AVX-512 on 256-bit units"
        elif "avx" in flags:
            lanes, unit = 8, "AVX2" if "avx2" in flags else "AVX"
        elif "sse" in flags:
            lanes, unit = 4, "SSE"
        else:
            return None
        per_cycle = 2 * lanes * 2 if "fma" in flags else 2 * lanes
        how = f"{unit}, {'2 FMA units' if 'fma' in flags else 'an add and a multiply unit'}"
        if bf16 and "amx_bf16" in flags:
            per_cycle, how = 1024, "AMX bf16 tiles"
        elif bf16 and "avx512_bf16" in flags:
            per_cycle, how = 2 * per_cycle, f"{how}, bf16 dot products at twice the fp32 rate"
    elif "asimd" in first.get("features", "").split():
        features = set(first["features"].split())
        per_cycle, how = 4 * 4 * 2, "4 NEON FMA pipes"
        if "sve" in features and 2 * (sve_bytes // 4) * 2 > per_cycle:
            per_cycle, how = 2 * (sve_bytes // 4) * 2, f"2 SVE pipes of {sve_bytes * 8} bits"
        if bf16 and "bf16" in features:
            per_cycle, how = 4 * per_cycle, f"{how}, BFMMLA at four times the fp32 rate"
    else:
        return None
    kind = "bf16" if bf16 else "fp32"
    return (cores * clock * 1e6 * per_cycle,
            f"theoretical {kind} peak of {name}: {cores} core(s) x {clock / 1000:.2f} GHz x {per_cycle} FLOP/cycle "
            f"({how})")


def cpu_cores_used(cpuinfo: str) -> int:
    """Physical cores one matrix product of this process can use: those it may run on (its
    affinity), counted once per core however many hardware threads share it, and no more than
    torch's intra-op threads."""
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    cores = set()
    for block in _cpuinfo_blocks(cpuinfo):
        with contextlib.suppress(KeyError, ValueError):
            cpu = int(block["processor"])
            if cpu in allowed:
                cores.add((block.get("physical id", "0"), block.get("core id", str(cpu))))
    return max(1, min(len(cores) or len(allowed), torch.get_num_threads()))


def local_cpu_peak(bf16: bool = False) -> tuple[float, str] | None:
    """`cpu_peak` of this machine's CPU, read from /proc/cpuinfo and cpufreq; None where unknown."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    max_mhz = 0.0
    for path in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq/cpuinfo_max_freq"):
        with contextlib.suppress(OSError, ValueError):
            max_mhz = max(max_mhz, int(path.read_text()) / 1000)  # kHz
    sve_bytes = 0
    with contextlib.suppress(OSError, ValueError):
        sve_bytes = int(Path("/proc/sys/abi/sve_default_vector_length").read_text())
    return cpu_peak(cpuinfo, cpu_cores_used(cpuinfo), max_mhz, bf16, sve_bytes)


_measured: dict[str, float] = {}


def matmul_peak(device: torch.device) -> float:
    """The best matrix-product rate in FLOP/s measured now: fp32 2048^2 on a CPU (best of 10),
    bf16 8192^2 on CUDA (median of 20). Measured once per process and device, from a generator
    of its own (the run's random streams stay as they were)."""
    key = str(device)
    if key in _measured:
        return _measured[key]
    cuda = device.type == "cuda"
    n, dtype = (8192, torch.bfloat16) if cuda else (2048, torch.float32)
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    times = []
    for i in range(23 if cuda else 11):
        if cuda:
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        a @ b
        if cuda:
            torch.cuda.synchronize(device)
        if i >= (3 if cuda else 1):
            times.append(time.perf_counter() - t0)
    times.sort()
    best = times[len(times) // 2] if cuda else times[0]
    _measured[key] = 2 * n**3 / best
    return _measured[key]


def peak_cache_path() -> Path:
    """Where measured peaks are kept: $LOOM_CACHE_DIR, else $XDG_CACHE_HOME/loom, else ~/.cache/loom."""
    root = os.environ.get("LOOM_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "loom"
    return Path(root) / "peaks.json"


def remember_peak(key: str, rate: float | None) -> tuple[float, int]:
    """(the best rate kept under `key` in the peak cache, how many measurements it is the best
    of), after adding `rate` (None: only read). The cache is only a record: where it cannot be
    read or written, what this process measured stands alone."""
    from loom.util import atomic_write_text

    path = peak_cache_path()
    cache = {}
    with contextlib.suppress(OSError, ValueError):
        cache = json.loads(path.read_text())
    cache = cache if isinstance(cache, dict) else {}
    entry = cache.get(key)
    if not (isinstance(entry, dict) and isinstance(entry.get("best"), (int, float))
            and isinstance(entry.get("measurements"), int)):
        entry = {"best": 0.0, "measurements": 0}
    if rate is None:
        return float(entry["best"]), entry["measurements"]
    entry = {"best": max(float(entry["best"]), rate), "measurements": entry["measurements"] + 1}
    with contextlib.suppress(OSError):
        atomic_write_text(path, json.dumps({**cache, key: entry}, indent=1, sort_keys=True))
    return entry["best"], entry["measurements"]


_remembered: set[str] = set()


def measured_peak(device: torch.device) -> tuple[float, int]:
    """(the best matrix-product rate measured on this machine and device so far, how many
    measurements that is the best of), this process's `matmul_peak` added once."""
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    key = f"{device.type}: {device_name(device)}{threads}"
    rate = matmul_peak(device)
    best, count = remember_peak(key, None if key in _remembered else rate)
    _remembered.add(key)
    return max(best, rate), max(count, 1)


def peak_flops(device: torch.device, override_tflops: float = 0.0, dtype: str = "auto") -> tuple[float, str]:
    """(peak FLOP/s of one device, where the figure comes from) for training in `dtype`
    (`train.dtype`); see the module docstring for the order of the sources."""
    if override_tflops > 0:
        return override_tflops * 1e12, "cost.peak_tflops"
    name = device_name(device)
    if device.type == "cuda" and (key := table_key(name, PEAK_TFLOPS)):
        return PEAK_TFLOPS[key] * 1e12, f"datasheet bf16 peak of {key.upper()}"
    theory = local_cpu_peak(uses_bf16(device, dtype)) if device.type == "cpu" else None
    best, count = measured_peak(device)
    if theory and theory[0] >= best:
        return theory
    source = f"best of {count} matrix-product rate(s) measured on {name} (kept in {peak_cache_path()})"
    if theory:  # the clock read is below the one the cores run at: a base clock, as virtual machines show
        source += f", above the {theory[1]}, whose clock is not the one the cores reach"
    return best, source


def price_per_hour(device: torch.device, override: float = -1.0) -> tuple[float, str]:
    if override >= 0:
        return override, "cost.price_per_device_hour"
    if device.type == "cuda" and (key := table_key(device_name(device), PRICE_PER_HOUR)):
        return PRICE_PER_HOUR[key], f"assumed price of a {key.upper()}"
    return PRICE_PER_HOUR["cpu"], "assumed price of a CPU training process"


class EnergyMeter:
    """Joules used by this process's GPU since it started, from NVML's energy counter; None
    where that is not available (no NVIDIA GPU, no `pynvml`, an old GPU)."""

    def __init__(self, device: torch.device):
        self._handle, self._start = None, None
        if device.type != "cuda":
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            self._pynvml = pynvml
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
            self._start = pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)  # millijoules
        except Exception:  # no library, no driver, no counter: energy is simply not measured
            self._handle = None

    def joules(self) -> float | None:
        if self._handle is None:
            return None
        try:
            return (self._pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle) - self._start) / 1e3
        except Exception:
            return None


class CostMeter:
    """Running totals of a run's cost, carried across resumes through `state_dict`."""

    def __init__(self, cost, dtype: str, device: torch.device, world_size: int, flops_per_token: float):
        # cost: the [cost] section; dtype: train.dtype
        self.world_size, self.flops_per_token = world_size, flops_per_token
        self.peak, self.peak_source = peak_flops(device, cost.peak_tflops, dtype)
        self.notice: str | None = None  # set when the peak had to be raised; the loop reports it
        self._first_source = self.peak_source
        self.price, self.price_source = price_per_hour(device, cost.price_per_device_hour)
        self.currency = cost.currency
        self.energy = EnergyMeter(device)
        self.prior_wall_s, self.prior_energy_j = 0.0, 0.0
        self.started = time.monotonic()

    def wall_seconds(self) -> float:
        return self.prior_wall_s + time.monotonic() - self.started

    def device_hours(self) -> float:
        return self.wall_seconds() * self.world_size / 3600

    def money(self) -> float:
        return self.device_hours() * self.price

    def energy_kwh(self) -> float | None:
        j = self.energy.joules()
        # NVML measures this process's device; the other ranks' devices are assumed alike.
        return None if j is None else (self.prior_energy_j + j * self.world_size) / 3.6e6

    def mfu(self, tokens_per_s: float) -> float:
        """The model FLOP rate over the peak. A rate above the peak proves the peak was no upper
        bound: the peak becomes that rate (MFU 100%) and `notice` says so, once per raise."""
        rate = tokens_per_s * self.flops_per_token / self.world_size
        if rate > self.peak:
            self.notice = (f"the model FLOP rate reached, {rate / 1e12:.3g} TFLOP/s per device, is above the "
                           f"peak MFU is measured against ({self.peak / 1e12:.3g} TFLOP/s, {self.peak_source}), "
                           "which is therefore no upper bound here; MFU is now against the rate reached "
                           "(set cost.peak_tflops to the device's true peak)")
            self.peak = rate
            self.peak_source = f"highest model FLOP rate this run reached, above the {self._first_source}"
        return rate / self.peak

    def snapshot(self, tokens_per_s: float) -> dict:
        out = {"mfu": round(self.mfu(tokens_per_s), 5), "device_hours": round(self.device_hours(), 6),
               "cost": round(self.money(), 6)}
        if (kwh := self.energy_kwh()) is not None:
            out["energy_kwh"] = round(kwh, 6)
        return out

    def state_dict(self) -> dict:
        kwh = self.energy_kwh()
        return {"wall_seconds": self.wall_seconds(), "energy_j": None if kwh is None else kwh * 3.6e6}

    def load_state_dict(self, state: dict) -> None:
        self.prior_wall_s = float(state.get("wall_seconds", 0.0))
        self.prior_energy_j = float(state.get("energy_j") or 0.0)
        self.started = time.monotonic()


def budget_exceeded(b, meter: CostMeter) -> str | None:
    """Which budget of `b` (the [budget] section) the run has reached, in words, or None."""
    if b.max_cost > 0 and meter.money() >= b.max_cost:
        return f"budget.max_cost reached: {meter.money():.2f} {meter.currency} of {b.max_cost:.2f}"
    if b.max_device_hours > 0 and meter.device_hours() >= b.max_device_hours:
        return f"budget.max_device_hours reached: {meter.device_hours():.3f} of {b.max_device_hours:g}"
    if b.max_wall_hours > 0 and meter.wall_seconds() / 3600 >= b.max_wall_hours:
        return f"budget.max_wall_hours reached: {meter.wall_seconds() / 3600:.3f} of {b.max_wall_hours:g}"
    return None
