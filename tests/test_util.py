"""Atomic writes: whole files only, with the permissions an ordinary write would give."""

from __future__ import annotations

import os
import stat

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
