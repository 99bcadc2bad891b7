"""Atomic writes: whole files only, with the permissions an ordinary write would give."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from loom.util import atomic_write_text, current_umask


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_write_follows_the_umask(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        assert current_umask() == mask
        path = tmp_path / "sub" / "card.json"
        atomic_write_text(path, "{}\n")
        atomic_write_text(path, '{"again": 1}\n')  # replacing keeps the same rule
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
    finally:
        os.umask(old)
    assert path.read_text() == '{"again": 1}\n'
    assert stat.S_IMODE(path.stat().st_mode) == mode == stat.S_IMODE(plain.stat().st_mode)
    assert [p.name for p in path.parent.iterdir()] == ["card.json"]  # no temporary file left



FAULTS_PER_STEP = """
import resource, sys
import torch
from loom.config import load_config
from loom.model import GPT
from loom.util import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
torch.manual_seed(0)
model = GPT(load_config("quickstart", []).model)  # its logits: 8 x 256 x 8,192 floats, 64 MiB
opt = torch.optim.AdamW(model.parameters())
x = torch.randint(8192, (8, 257))
def step():
    model(x[:, :-1], x[:, 1:]).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
for _ in range(3):  # the first steps' pages are new either way
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    step()
print(kept, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 4)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_keep_freed_memory_stops_a_cpu_training_steps_page_faults():
    def faults(mode):
        out = subprocess.run([sys.executable, "-c", FAULTS_PER_STEP, mode], capture_output=True, text=True,
                             check=True).stdout.split()
        return out[0], int(out[1])

    (_, plain), (kept, reused) = faults("plain"), faults("keep")
    assert kept == "True"
    assert plain > 20_000  # hundreds of MB of fresh 4 KiB pages every step
    assert reused < plain / 4  # measured: 70,000 against 200 to 8,200
