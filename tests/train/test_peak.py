"""The peak MFU is measured against: a CPU's theoretical rate from its flags and clock, an upper
bound of what this machine measures, a cache of measured rates where no theory applies, and a
raise (said out loud) whenever a run passes it, so that no printed MFU exceeds 100%."""

import json
import time
from pathlib import Path

import pytest
import torch

from conftest import tiny_config
from loom.train import cost, train

FIXTURES = Path(__file__).parent / "fixtures"

# Hand-written blocks in the format of /proc/cpuinfo, for flag sets this machine does not have.
INTEL_CASCADE_LAKE = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 85
model name\t: Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz
cpu MHz\t\t: 3100.270
physical id\t: 0
core id\t\t: 0
flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 avx512f avx512dq avx512cd avx512bw avx512vl
"""
INTEL_SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model name\t: Intel(R) Xeon(R) Platinum 8480+
cpu MHz\t\t: 2000.000
flags\t\t: fpu sse sse2 fma avx avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8
"""
INTEL_SANDY_BRIDGE = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model name\t: Intel(R) Xeon(R) CPU E5-2670 0 @ 2.60GHz
cpu MHz\t\t: 1200.000
flags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 avx
"""
NEOVERSE_N1 = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU part\t: 0xd0c
"""


def test_theoretical_peak_of_this_machines_cpuinfo():
    """The real /proc/cpuinfo of the machine these tests were written on: a 2-core AMD EPYC of
    family 25 (Zen 4), AVX-512 on 256-bit units, 2596 MHz: 2 x 2.596e9 x 32 FLOP/s."""
    text = (FIXTURES / "cpuinfo_amd_epyc_zen4.txt").read_text()
    peak, source = cost.cpu_peak(text, cores=2)
    assert peak == pytest.approx(2 * 2596.140e6 * 32)
    assert source.startswith("theoretical fp32 peak of AMD EPYC: 2 core(s) x 2.60 GHz x 32 FLOP/cycle")
    bf16, _ = cost.cpu_peak(text, cores=2, bf16=True)
    assert bf16 == pytest.approx(2 * peak)  # avx512_bf16 dot products


@pytest.mark.parametrize("text, cores, max_mhz, bf16, per_core_cycle, ghz", [
    (INTEL_CASCADE_LAKE, 4, 0.0, False, 64, 3.10027),  # the turbo clock shown beats the 2.50 GHz name
    (INTEL_CASCADE_LAKE, 4, 3900.0, False, 64, 3.9),  # cpufreq's maximum beats both
    (INTEL_SAPPHIRE_RAPIDS, 8, 3800.0, True, 1024, 3.8),  # AMX tiles under bf16
    (INTEL_SAPPHIRE_RAPIDS, 8, 3800.0, False, 64, 3.8),
    (INTEL_SANDY_BRIDGE, 2, 0.0, False, 16, 2.6),  # no FMA: an add and a multiply unit of 8 lanes
    (NEOVERSE_N1, 16, 2500.0, False, 32, 2.5),
])
def test_theoretical_peak_from_flags_and_clock(text, cores, max_mhz, bf16, per_core_cycle, ghz):
    peak, source = cost.cpu_peak(text, cores, max_mhz, bf16)
    assert peak == pytest.approx(cores * ghz * 1e9 * per_core_cycle)
    assert f"{per_core_cycle} FLOP/cycle" in source


def test_no_clock_or_unknown_vector_units_give_no_theoretical_peak():
    assert cost.cpu_peak(NEOVERSE_N1, 16) is None  # aarch64 /proc/cpuinfo has no clock
    assert cost.cpu_peak("processor\t: 0\nflags\t\t: fpu vme\ncpu MHz\t\t: 2000\n", 1) is None
    assert cost.cpu_peak("", 4) is None


def best_matmul_rate() -> float:
    """fp32 matrix products of three sizes, best of five each, in FLOP/s."""
    best = 0.0
    for n in (512, 1024, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        for _ in range(5):
            t0 = time.perf_counter()
            a @ b
            best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


def test_the_cpu_peak_here_bounds_every_rate_measured_here(tmp_path, monkeypatch):
    """The upper-bound property on this machine: a rate measured here (and recorded, as every
    training process and `loom doctor` record theirs) never beats the peak MFU is computed
    against, which is also never below the theoretical rate."""
    monkeypatch.setenv("LOOM_CACHE_DIR", str(tmp_path))
    cpu = torch.device("cpu")
    best = best_matmul_rate()
    cost.remember_peak(f"cpu: {cost.device_name(cpu)}, {torch.get_num_threads()} threads", best)
    peak, source = cost.peak_flops(cpu, dtype="float32")
    theory = cost.local_cpu_peak()
    assert theory is not None  # an x86 or aarch64 Linux machine that reports a clock
    assert peak >= best and peak >= theory[0]
    # the peak also holds the rate `peak_flops` itself measured, which may beat `best`: the source
    # names the theoretical rate exactly when that is the peak
    if peak > theory[0]:
        assert source.startswith("best of "), source
    else:
        assert source == theory[1]


def test_a_measured_best_above_the_theoretical_rate_becomes_the_peak_and_says_so(tmp_path, monkeypatch):
    """As on a virtual machine that shows its base clock while its cores boost above it."""
    monkeypatch.setenv("LOOM_CACHE_DIR", str(tmp_path))
    cpu = torch.device("cpu")
    theory, _ = cost.local_cpu_peak()
    cost.remember_peak(f"cpu: {cost.device_name(cpu)}, {torch.get_num_threads()} threads", 1.5 * theory)
    peak, source = cost.peak_flops(cpu, dtype="float32")
    assert peak == 1.5 * theory
    assert source.startswith("best of ") and f"kept in {tmp_path / 'peaks.json'}" in source
    assert "above the theoretical fp32 peak of " in source


def test_measured_peaks_are_kept_per_machine_as_the_best_so_far(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOM_CACHE_DIR", str(tmp_path / "cache"))
    assert cost.remember_peak("cpu: test", 2e9) == (2e9, 1)
    assert cost.remember_peak("cpu: test", 1e9) == (2e9, 2)  # a measurement under load does not lower it
    assert cost.remember_peak("cpu: test", 3e9) == (3e9, 3)
    assert cost.remember_peak("cpu: test", None) == (3e9, 3)
    cache = json.loads((tmp_path / "cache" / "peaks.json").read_text())
    assert cache == {"cpu: test": {"best": 3e9, "measurements": 3}}
    (tmp_path / "cache" / "peaks.json").write_text("{not json")  # a broken cache is only a lost record
    assert cost.remember_peak("cpu: test", 1e9) == (1e9, 1)
    # one process adds its measurement once, however often it asks
    cpu = torch.device("cpu")
    cost.measured_peak(cpu)
    once = json.loads((tmp_path / "cache" / "peaks.json").read_text())
    cost.measured_peak(cpu)
    assert json.loads((tmp_path / "cache" / "peaks.json").read_text()) == once


def test_a_run_faster_than_its_peak_raises_the_peak_and_says_so_instead_of_printing_over_100(tiny_root, capsys):
    """A peak far too low (cost.peak_tflops = 1 MFLOP/s): every logged MFU stays at or below 100%,
    an event and a line say the peak was raised, and report.md names the new source."""
    cfg = tiny_config(tiny_root, "low-peak", ["cost.peak_tflops=1e-6"])
    summary = train(cfg)
    mfus = [json.loads(line)["mfu"] for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()
            if "mfu" in json.loads(line)]
    assert len(mfus) == 6 and max(mfus) <= 1.0 and max(mfus) == pytest.approx(1.0)
    assert summary["cost"]["mfu"] <= 1.0
    events = [json.loads(line) for line in (cfg.run_dir / "events.jsonl").read_text().splitlines()]
    raised = [e for e in events if e["event"] == "peak_raised"]
    assert raised and "cost.peak_tflops" in raised[0]["detail"]
    assert "no upper bound here" in capsys.readouterr().err
    report = (cfg.run_dir / "report.md").read_text()
    assert "highest model FLOP rate this run reached, above the cost.peak_tflops" in report


def test_a_run_on_this_cpu_reports_which_peak_it_used(tiny_root, tmp_path, monkeypatch):
    monkeypatch.setenv("LOOM_CACHE_DIR", str(tmp_path))  # no other process's measurement in between
    cfg = tiny_config(tiny_root, "theory-peak")
    summary = train(cfg)
    peak, source = cost.peak_flops(torch.device("cpu"), dtype="float32")
    assert summary["cost"]["peak_source"] == source and summary["cost"]["peak_tflops"] == peak / 1e12
    assert "theoretical fp32 peak of " in source
    assert f"({source})" in (cfg.run_dir / "report.md").read_text()
