"""What a run costs: model FLOPs utilization, device-hours, energy and money; budgets.

MFU (Chowdhery et al. 2022, appendix B) is the model's training FLOPs per token (`GPT.
flops_per_token`: 6N plus attention) times tokens per second, over the devices' peak rate. The
peak comes from `PEAK_TFLOPS`, dense (no 2:4 sparsity) bf16 tensor-core rates from the vendors'
datasheets, for a device recognised by name; for a CPU, or a device not in the table, it is the
rate of a large matrix product measured at start (`matmul_peak`), which is the honest ceiling of
what the loop could reach there. `cost.peak_tflops` overrides both.

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
import platform
import time

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


_measured: dict[str, float] = {}


def matmul_peak(device: torch.device) -> float:
    """The best matrix-product rate in FLOP/s measured here: fp32 2048^2 on a CPU (best of 10),
    bf16 8192^2 on CUDA (median of 20). Measured once per process and device."""
    key = str(device)
    if key in _measured:
        return _measured[key]
    cuda = device.type == "cuda"
    n, dtype = (8192, torch.bfloat16) if cuda else (2048, torch.float32)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
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


def peak_flops(device: torch.device, override_tflops: float = 0.0) -> tuple[float, str]:
    """(peak FLOP/s of one device, where the figure comes from)."""
    if override_tflops > 0:
        return override_tflops * 1e12, "cost.peak_tflops"
    name = device_name(device)
    if device.type == "cuda" and (key := table_key(name, PEAK_TFLOPS)):
        return PEAK_TFLOPS[key] * 1e12, f"datasheet bf16 peak of {key.upper()}"
    return matmul_peak(device), f"measured matrix-product rate of {name}"


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

    def __init__(self, cfg, device: torch.device, world_size: int, flops_per_token: float):
        self.world_size, self.flops_per_token = world_size, flops_per_token
        self.peak, self.peak_source = peak_flops(device, cfg.cost.peak_tflops)
        self.price, self.price_source = price_per_hour(device, cfg.cost.price_per_device_hour)
        self.currency = cfg.cost.currency
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
        return tokens_per_s * self.flops_per_token / (self.peak * self.world_size)

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


def budget_exceeded(cfg, meter: CostMeter) -> str | None:
    """Which budget of `[budget]` the run has reached, in words, or None."""
    b = cfg.budget
    if b.max_cost > 0 and meter.money() >= b.max_cost:
        return f"budget.max_cost reached: {meter.money():.2f} {meter.currency} of {b.max_cost:.2f}"
    if b.max_device_hours > 0 and meter.device_hours() >= b.max_device_hours:
        return f"budget.max_device_hours reached: {meter.device_hours():.3f} of {b.max_device_hours:g}"
    if b.max_wall_hours > 0 and meter.wall_seconds() / 3600 >= b.max_wall_hours:
        return f"budget.max_wall_hours reached: {meter.wall_seconds() / 3600:.3f} of {b.max_wall_hours:g}"
    return None
