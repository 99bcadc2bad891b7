"""Small helpers every stage shares: crash-safe file writes and file checksums, worker processes
that end with their parent, and the removal of temporaries that killed processes left behind.

A file is never half-written: it is written to a temporary name in the same directory,
fsynced, renamed over the target, and the directory is fsynced so the rename survives a crash.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path


def fsync_dir(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def current_umask() -> int:
    """The process's file-creation mask (read from /proc where it can be, without changing it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: read it by setting it, and put it back at once
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes `path` whole or not at all: a temporary file beside it, fsynced, renamed over it.
    The file gets the permissions a plain `open(path, "w")` would give (mkstemp's are 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def fsync_file(path: str | os.PathLike) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def cut_at_stop(text: str, stop: Sequence[str], skip_leading_whitespace: bool = False) -> str:
    """`text` up to the first stop string; with `skip_leading_whitespace`, the first one after
    the text's leading whitespace."""
    start = len(text) - len(text.lstrip()) if skip_leading_whitespace else 0
    cut = min((i for i in (text.find(s, start) for s in stop if s) if i >= 0), default=len(text))
    return text[:cut]


def torch_device(name: str):
    """`name` ("cpu", "cuda", "cuda:1", "mps") as a torch device that exists here, or a
    `ConfigError` saying which devices do."""
    import torch

    from loom.errors import ConfigError

    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device {name!r} is not a device name; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        have = f"{torch.cuda.device_count()} CUDA device(s)" if torch.cuda.is_available() else "no CUDA device"
        raise ConfigError(f"device {name!r}: this machine has {have}; use cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {name!r}: MPS is not available here; use cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device {name!r}: loom runs on cpu, cuda or mps")
    return device


# ---------------------------------------------------------------------------------------------
# Processes that outlive their parent, and the temporaries of processes that were killed
# ---------------------------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_OWNER_PID = re.compile(r"[-_]([0-9]{1,10})$")


def end_with_parent(parent_pid: int, pdeathsig: bool = True, poll_s: float = 1.0) -> None:
    """Makes this (worker) process end when `parent_pid`, the process that started it, ends,
    however it ends (`kill -9` included); a process pool's `initializer`.

    A daemon thread compares `os.getppid()` with `parent_pid` every `poll_s` seconds and exits
    when they differ (an orphan is re-parented); this works everywhere. With `pdeathsig`, on
    Linux, the kernel also sends SIGKILL the moment the parent goes (`prctl(PR_SET_PDEATHSIG)`),
    even while this process runs C code that holds the GIL. That signal follows the *thread*
    that forked this process, not the process: the pool must be made, used and shut down by one
    thread (a `with` block in one function is); a pool that another thread goes on using after
    the first one ended (a generator consumed from several threads) needs `pdeathsig=False`. If
    the parent died before the request took effect, this process is an orphan already and exits."""
    if pdeathsig and sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # no prctl here (an unusual libc): the watcher below still ends us
    if os.getppid() != parent_pid:
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="end-with-parent", daemon=True).start()


def process_exists(pid: int) -> bool:
    """Whether process `pid` runs on this machine (a zombie, dead but not yet reaped by its
    parent, does not count)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (not Linux), or it ended just now: kill() said it was there
    return stat[stat.rfind(")") + 2:][:1] not in ("Z", "X")


def remove_leftovers(directory: str | os.PathLike, *patterns: str) -> list[Path]:
    """Removes the files and directories in `directory` that match one of the glob `patterns`
    and whose name ends in `-<pid>` or `_<pid>` of a process that no longer exists: temporaries
    a killed process could not tidy up. Those of running processes (another build at work right
    now) are left alone. Returns what was removed.

    Pids are checked on this machine: a directory that several machines share must not be
    written by processes on two of them at once (a pid of the other machine looks dead here). A
    pid reused by an unrelated process keeps its leftover until that process ends too."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for pattern in patterns:
        for path in sorted(directory.glob(pattern)):
            owner = _OWNER_PID.search(path.name)
            if owner is None or process_exists(int(owner.group(1))):
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def keep_freed_memory() -> bool:
    """Has glibc's malloc keep the memory a process frees for its next allocations rather than
    return it to the kernel; False where there is no glibc (macOS, musl), and nothing changes.

    Why: a training step on the CPU allocates and frees the same large tensors every step (the
    quickstart's logits alone are 8 x 256 x 8,192 floats, 64 MiB). glibc serves every block above
    its mmap threshold (32 MiB at most) with a fresh mapping and unmaps it when freed, so each
    step the kernel faults in and zeroes hundreds of megabytes of new pages. Measured on the
    2-core VM (docs/LOG.md, 2026-12-04): 74,000 minor page faults and 0.14 s of system time in a
    0.50 s quickstart step; with this, 200 and 0.005 s in a 0.44 s step. M_MMAP_MAX = 0 serves
    large blocks from the heap too, and a 1 GiB M_TRIM_THRESHOLD keeps freed heap for reuse; the
    price is that resident memory stays near its high-water mark (about 100 MB more here). It
    is a process-wide setting, made by the trainer on a CPU, where the pages are the cost."""
    import ctypes
    import ctypes.util

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # glibc's <malloc.h>
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 1 << 30))
