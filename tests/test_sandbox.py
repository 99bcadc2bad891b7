"""The sandbox against what model-written code may do: each test runs a real program in a real
child process (no mocks) and checks both what the sandbox reports and that the host is untouched.

Most tests go through the whole sandbox; `test_kernel_layers_hold_without_the_hook` leaves the
audit hook out to check that the OS layers (namespaces, uid, limits) hold on their own, where
this machine gives them (`isolation_layers()`)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from loom import sandbox
from loom.sandbox import SandboxLimits, SandboxResult, isolation_layers, run_python

FAST = SandboxLimits(cpu_seconds=1, wall_seconds=3)
ROOT = sys.platform.startswith("linux") and os.geteuid() == 0


def run(code: str, **kwargs) -> SandboxResult:
    kwargs.setdefault("limits", FAST)
    return run_python(textwrap.dedent(code), **kwargs)


def alive(pid: int, grace: float = 1.0) -> bool:
    """Whether `pid` is a live (not zombie) process, allowing `grace` seconds for a kill to land."""
    deadline = time.monotonic() + grace
    while True:
        try:
            state = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                         if line.startswith("State:")).split()[1]
        except (OSError, StopIteration):
            return False
        if state == "Z" or time.monotonic() > deadline:
            return state != "Z"
        time.sleep(0.02)


def live_processes(pred) -> list[int]:
    """Live processes whose /proc/PID/status fields (a dict) satisfy `pred`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                lines = Path(f"/proc/{entry}/status").read_text().splitlines()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in lines if ":" in line)
            if fields.get("State", "Z").split()[0] != "Z" and pred(fields):
                found.append(int(entry))
    return found


def in_group(pgid: int) -> list[int]:
    return live_processes(lambda f: f.get("NSpgid", "").strip() == str(pgid))


def of_uid(uid: int) -> list[int]:
    return live_processes(lambda f: int(f["Uid"].split()[0]) == uid)


def settle(check, timeout: float = 1.0):
    """`check()` until it is falsy or `timeout` passes (zombies take a moment to be reaped)."""
    deadline = time.monotonic() + timeout
    while (value := check()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return value


@pytest.fixture
def listener():
    """A real TCP listener on the host's loopback; a test checks that nothing connected."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.3)
    yield server
    server.close()


def assert_no_connection(server: socket.socket) -> None:
    with pytest.raises(TimeoutError):
        server.accept()


# ---------------------------------------------------------------- ordinary programs


def test_prints_and_returns_ok():
    result = run("import json\nprint(json.dumps({'answer': 6 * 7}))")
    assert result.status == "ok" and result.passed
    assert result.returncode == 0
    assert result.stdout == '{"answer": 42}\n'
    assert result.blocked == [] and not result.truncated
    assert 0 < result.wall_seconds < FAST.wall_seconds


def test_an_exception_is_an_error_with_the_programs_traceback():
    result = run("def f(x):\n    return 1 / x\nf(0)\n")
    assert result.status == "error" and not result.passed
    assert result.returncode == 1
    assert 'File "main.py", line 2, in f' in result.stderr
    assert result.stderr.rstrip().endswith("ZeroDivisionError: division by zero")
    assert "sandbox.py" not in result.stderr  # the sandbox's own frames are left out


def test_a_syntax_error_is_an_error():
    result = run("def f(:\n    pass\n")
    assert result.status == "error"
    assert "SyntaxError" in result.stderr and 'File "main.py", line 1' in result.stderr


def test_exit_status_is_kept():
    assert run("import sys; sys.exit(3)").returncode == 3
    assert run("import sys; sys.exit(3)").status == "error"
    assert run("raise SystemExit(0)").status == "ok"


def test_stdin_is_passed():
    result = run("import sys\nfor line in sys.stdin:\n    print(line.strip().upper())", stdin="ab\ncd\n")
    assert (result.status, result.stdout) == ("ok", "AB\nCD\n")


def test_utf8_and_a_fixed_hash_seed():
    # code_output compares printed text: set order must not change from run to run
    code = "print('héllo ✓', {'pear', 'fig', 'kiwi', 'plum'}, hash('abc'))"
    first, second = run(code), run(code)
    assert first.status == "ok" and first.stdout == second.stdout and "héllo ✓" in first.stdout


def test_files_and_writes_inside_the_working_directory():
    code = """
        import os, pathlib, shutil, tempfile
        n = int(open("data/in.txt").read())
        pathlib.Path("out/deep").mkdir(parents=True)
        with open("out/deep/answer.txt", "w") as f:
            f.write(str(n + 1))
        os.rename("out/deep/answer.txt", "answer.txt")
        print(open("answer.txt").read())
        with tempfile.TemporaryDirectory() as scratch:  # TMPDIR is the working directory
            print(scratch.startswith(os.getcwd()))
        shutil.rmtree("out")
        os.remove("answer.txt")
        import helper  # its own directory is on sys.path, as for `python main.py`
        print(helper.VALUE)
    """
    result = run(code, files={"data/in.txt": "41", "helper.py": "VALUE = 'imported'"})
    assert (result.status, result.stdout, result.blocked) == ("ok", "42\nTrue\nimported\n", [])


@pytest.mark.parametrize("name", ["../escape.txt", "/etc/escape.txt", "main.py", "./main.py", ""])
def test_files_must_stay_inside(name):
    with pytest.raises(ValueError, match="relative path"):
        run_python("pass", files={name: "x"})


def test_the_working_directory_is_removed_afterwards():
    result = run("import os\nopen('left.txt', 'w').write('x')\nprint(os.getcwd())")
    assert result.status == "ok"
    work = Path(result.stdout.strip())
    assert work.name == "work" and not work.exists() and not work.parent.exists()


def test_a_refusal_the_program_survives_is_reported_but_ok():
    result = run("""
        import socket
        try:
            socket.create_connection(("127.0.0.1", 9))
        except PermissionError:
            print("carried on")
    """)
    assert (result.status, result.stdout) == ("ok", "carried on\n")
    assert result.blocked == ["socket.getaddrinfo"]


def test_concurrent_runs_each_get_their_own_uid():
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: run("import os\nprint(os.getuid())"), range(8)))
    assert all(r.status == "ok" for r in results)
    uids = {int(r.stdout) for r in results}
    if "uid-drop" in isolation_layers():
        assert len(uids) == 8 and 0 not in uids


# ---------------------------------------------------------------- hostile programs


def test_an_infinite_loop_times_out_and_leaves_nothing():
    result = run("import os\nprint(os.getpid(), flush=True)\nwhile True:\n    pass")
    assert result.status == "timeout" and not result.passed
    assert result.wall_seconds < FAST.wall_seconds + 1
    pid = int(result.stdout)
    assert not alive(pid) and not settle(lambda: in_group(pid))


def test_a_sleeping_program_times_out_on_the_wall_clock():
    result = run("import time\ntime.sleep(60)", limits=SandboxLimits(wall_seconds=1))
    assert result.status == "timeout" and result.returncode is None
    assert 1 <= result.wall_seconds < 2.5


def test_a_fork_bomb_is_refused():
    result = run("import os\nprint(os.getpid(), flush=True)\nwhile True:\n    os.fork()")
    assert result.status == "blocked" and result.blocked == ["os.fork"]
    assert not settle(lambda: in_group(int(result.stdout)))


def test_a_fork_bomb_with_processes_allowed_is_contained():
    limits = SandboxLimits(cpu_seconds=1, wall_seconds=3, processes=3)
    result = run("import os\nprint(os.getpid(), os.getuid(), flush=True)\nwhile True:\n    os.fork()", limits=limits)
    assert result.status in ("error", "timeout")  # forks until RLIMIT_NPROC says no, or time runs out
    assert result.wall_seconds < limits.wall_seconds + 1
    pid, uid = map(int, result.stdout.split()[:2])
    assert not settle(lambda: in_group(pid))
    if "uid-drop" in isolation_layers():
        assert not settle(lambda: of_uid(uid))


def test_a_child_that_left_the_process_group_is_killed():
    if "uid-drop" not in isolation_layers():
        pytest.skip("without a uid of its own, only the program's process group is killed (documented)")
    result = run("""
        import os, time
        if os.fork() == 0:
            os.setsid()
            print(os.getpid(), flush=True)
            time.sleep(60)
        time.sleep(0.5)
    """, limits=SandboxLimits(wall_seconds=3, processes=2))
    assert result.status == "ok"
    assert not alive(int(result.stdout))


@pytest.mark.parametrize("code", [
    "x = bytearray(4 * 2**30)",
    "x = []\nwhile True:\n    x.append(' ' * 10**6)",
])
def test_a_memory_bomb_is_a_memory_error(code):
    result = run(code, limits=SandboxLimits(cpu_seconds=2, wall_seconds=5, memory_bytes=256 * 2**20))
    assert result.status == "memory" and "MemoryError" in result.stderr


def test_an_output_flood_is_stopped_and_truncated():
    limits = SandboxLimits(cpu_seconds=2, wall_seconds=5, output_bytes=4096)
    result = run("while True:\n    print('x' * 1000)", limits=limits)
    assert result.truncated and not result.passed
    assert len(result.stdout) == 4096
    assert result.wall_seconds < limits.wall_seconds  # stopped by RLIMIT_FSIZE on stdout, not by the clock


def test_a_huge_file_hits_rlimit_fsize():
    result = run("open('big', 'wb').write(b'x' * (2 * 2**20))", limits=SandboxLimits(file_bytes=2**20))
    assert result.status == "error" and "File too large" in result.stderr


@pytest.mark.parametrize("where", ["tmp", "cwd", "relative"])
def test_writes_outside_the_working_directory_are_refused(where, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the parent's working directory
    target = {
        "tmp": Path(f"/tmp/loom_sandbox_escape_{secrets.token_hex(4)}"),
        "cwd": tmp_path / "escape.txt",
        "relative": Path("../escape.txt"),
    }[where]
    result = run(f"open({str(target)!r}, 'w').write('escaped')")
    assert result.status == "blocked"
    assert result.blocked == [f"open({str(target)!r}, 'w')"]
    assert not (tmp_path / "escape.txt").exists() and not Path(f"/tmp/{target.name}").exists()


@pytest.mark.parametrize("code", [
    "import os\nprint(os.remove({secret!r}))",
    "import shutil\nshutil.rmtree({folder!r})",
    "import os\nos.rename({secret!r}, 'mine.txt')",
    "import os\nos.chmod({secret!r}, 0o777)",
    "import os\nos.symlink({secret!r}, 'link')",
])
def test_changes_outside_the_working_directory_are_refused(code, tmp_path):
    secret = tmp_path / "keep.txt"
    secret.write_text("keep me")
    result = run(code.format(secret=str(secret), folder=str(tmp_path)))
    assert result.status == "blocked" and len(result.blocked) == 1
    assert secret.read_text() == "keep me" and secret.stat().st_mode & 0o777 != 0o777


@pytest.mark.parametrize("which", ["secret file", "root's home", "another process's environment"])
def test_reading_host_secrets_is_refused(which, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET-" + secrets.token_hex(8))
    path = {
        "secret file": str(secret),
        "root's home": "os.path.expanduser('~root') + '/.bashrc'",
        "another process's environment": "f'/proc/{os.getppid()}/environ'",
    }[which]
    expression = repr(path) if which == "secret file" else path
    result = run(f"import os\nprint(open({expression}).read())")
    assert result.status == "blocked" and result.blocked[0].startswith("open(")
    assert "TOPSECRET" not in result.stdout + result.stderr


def test_listing_outside_is_refused():
    result = run("import os\nprint(os.listdir(os.path.expanduser('~root')))")
    assert result.status == "blocked" and result.blocked == ["os.listdir('/root')"]


def test_environment_secrets_do_not_reach_the_program(monkeypatch):
    monkeypatch.setenv("LOOM_TEST_SECRET", "s3cr3t")
    result = run("import os\nprint(dict(os.environ))\nprint(open('/proc/self/environ').read())")
    assert "s3cr3t" not in result.stdout + result.stderr
    assert "LOOM_TEST_SECRET" not in result.stdout
    assert result.status == "blocked"  # /proc is out of reach too


def test_sockets_are_refused_and_nothing_connects(listener):
    port = listener.getsockname()[1]
    result = run(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)")
    assert result.status == "blocked" and result.blocked == ["socket.getaddrinfo"]
    raw = run(f"import socket\ns = socket.socket()\ns.connect(('127.0.0.1', {port}))")
    assert raw.status == "blocked" and raw.blocked == ["socket.__new__"]
    assert_no_connection(listener)


@pytest.mark.parametrize("code, refused", [
    ("import subprocess\nsubprocess.run(['true'])", "subprocess.Popen"),
    ("import os\nos.system('true')", "os.system"),
    ("import os\nos.execv('/bin/true', ['true'])", "os.exec"),
    ("import ctypes", "import ctypes"),
    ("import gc\ngc.get_objects()", "gc.get_objects"),
    ("import os\nos.kill(os.getppid(), 0)", "os.kill"),
    ("import os\nos.chdir('/')", "os.chdir('/')"),
])
def test_other_escapes_are_refused(code, refused):
    result = run(code)
    assert result.status == "blocked"
    assert result.blocked[0].startswith(refused)


# ---------------------------------------------------------------- the layers themselves


def test_isolation_layers_on_this_machine():
    layers = isolation_layers()
    assert {"rlimits", "audit-hook"} <= set(layers)
    if ROOT:
        assert "uid-drop" in layers or "uid-drop+read-search" in layers


def test_the_network_namespace_has_only_a_loopback():
    if "netns" not in isolation_layers():
        pytest.skip("no network namespace on this machine: sockets are refused by the hook alone")
    result = run("import socket\nprint(socket.if_nameindex())")
    assert (result.status, result.stdout) == ("ok", "[(1, 'lo')]\n")


@pytest.mark.parametrize("attack, layer", [
    ("socket", "netns"),
    ("read secret", "mountns"),
    ("write /tmp", "mountns"),
    ("signal parent", "uid-drop"),
    ("fork bomb", "uid-drop"),
])
def test_kernel_layers_hold_without_the_hook(attack, layer, tmp_path, listener):
    if layer not in isolation_layers():
        pytest.skip(f"no {layer} on this machine")
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    escape = Path(f"/tmp/loom_sandbox_escape_{secrets.token_hex(4)}")
    code = {
        "socket": f"import socket\nsocket.create_connection(('127.0.0.1', {listener.getsockname()[1]}), timeout=1)",
        "read secret": f"print(open({str(secret)!r}).read())",
        "write /tmp": f"open({str(escape)!r}, 'w').write('x')\nprint('written inside')",
        "signal parent": "import os\nos.kill(os.getppid(), 0)",
        "fork bomb": "import os\nprint(os.getpid(), flush=True)\nwhile True:\n    os.fork()",
    }[attack]
    result, layers = sandbox._execute(code, "", FAST, {}, guard=False)
    assert "audit-hook" not in layers and result.blocked == []
    if attack == "socket":
        assert result.status == "error" and "OSError" in result.stderr  # network unreachable
        assert_no_connection(listener)
    elif attack == "read secret":
        assert result.status == "error" and "TOPSECRET" not in result.stdout
    elif attack == "write /tmp":
        assert result.stdout == "written inside\n"  # into the program's own, private /tmp
        assert not escape.exists()
    elif attack == "signal parent":
        assert result.status == "error" and "PermissionError" in result.stderr
    else:
        assert result.status == "error" and "BlockingIOError" in result.stderr  # RLIMIT_NPROC
        assert not settle(lambda: in_group(int(result.stdout.split()[0])))


def test_a_parent_that_is_not_root_still_contains_the_program():
    """The fallback path: no namespaces, no uid change; the hook and the limits alone."""
    python = shutil.which("python3", path="/usr/bin:/bin")
    setpriv = shutil.which("setpriv")
    if not (ROOT and python and setpriv):
        pytest.skip("needs root, setpriv and a system python3 to start an unprivileged parent")
    if subprocess.run([python, "-c", "import sys; assert sys.version_info >= (3, 11)"]).returncode:
        pytest.skip("the system python3 is older than 3.11")
    # The unprivileged parent reads the module from a copy it can reach: the checkout may lie
    # under a directory others cannot enter (a 0700 /root, where a root user clones by default),
    # and so may pytest's tmp_path.
    home = Path(tempfile.mkdtemp(prefix="loom-sandbox-test-"))
    home.chmod(0o755)
    module = home / "sandbox.py"
    shutil.copyfile(sandbox.__file__, module)
    module.chmod(0o644)
    script = home / "parent.py"
    script.write_text(textwrap.dedent(f"""
        import importlib.util, json, os, sys
        spec = importlib.util.spec_from_file_location("sandbox", {str(module)!r})
        sandbox = importlib.util.module_from_spec(spec)
        sys.modules["sandbox"] = sandbox
        spec.loader.exec_module(sandbox)
        limits = sandbox.SandboxLimits(cpu_seconds=1, wall_seconds=3)
        out = {{"layers": sandbox.isolation_layers()}}
        for name, code in {{
            "ok": "print(6 * 7)",
            "fork": "import os\\nos.fork()",
            "socket": "import socket\\nsocket.create_connection(('127.0.0.1', 9))",
            "write": "open('/tmp/loom_sandbox_escape_nonroot', 'w')",
            "loop": "while True: pass",
        }}.items():
            r = sandbox.run_python(code, limits=limits)
            out[name] = [r.status, r.stdout, r.blocked]
        # A directory the program locked itself out of is still removed afterwards.
        r = sandbox.run_python("import os\\nos.makedirs('d/e')\\nopen('d/e/f', 'w').close()\\n"
                               "os.chmod('d/e', 0)\\nos.chmod('d', 0o500)\\nprint(os.getcwd())", limits=limits)
        out["locked"] = [r.status, os.path.exists(r.stdout.strip())]
        print(json.dumps(out))
    """))
    try:
        done = subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", python, str(script)],
                              capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"}, cwd="/")
    finally:
        shutil.rmtree(home)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert "netns" not in out["layers"] and "audit-hook" in out["layers"]
    assert out["ok"] == ["ok", "42\n", []]
    assert out["fork"] == ["blocked", "", ["os.fork"]]
    assert out["socket"] == ["blocked", "", ["socket.getaddrinfo"]]
    assert out["write"] == ["blocked", "", ["open('/tmp/loom_sandbox_escape_nonroot', 'w')"]]
    assert out["loop"][0] == "timeout"
    assert out["locked"] == ["ok", False]
    assert not Path("/tmp/loom_sandbox_escape_nonroot").exists()


def test_a_checkout_others_cannot_enter_still_runs_programs():
    """Where loom lies under a directory only root may enter (a 0700 /root), the program, which
    runs as another uid, must not need loom's files: the child reads its script before it drops
    root's identity, and nothing of loom's after."""
    if not ROOT:
        pytest.skip("needs root: only then does the program run as another uid")
    closed = Path(tempfile.mkdtemp(prefix="loom-closed-"))  # mode 0700
    try:
        module = closed / "inner" / "sandbox.py"
        module.parent.mkdir()
        shutil.copyfile(sandbox.__file__, module)
        assert closed.stat().st_mode & 0o777 == 0o700
        script = textwrap.dedent(f"""
            import importlib.util, json, sys
            spec = importlib.util.spec_from_file_location("sandbox", {str(module)!r})
            sandbox = importlib.util.module_from_spec(spec)
            sys.modules["sandbox"] = sandbox
            spec.loader.exec_module(sandbox)
            r = sandbox.run_python("import os\\nprint(os.getuid(), 6 * 7)")
            print(json.dumps([r.status, r.stdout, r.stderr[-500:], sandbox.isolation_layers()]))
        """)
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    finally:
        shutil.rmtree(closed)
    assert done.returncode == 0, done.stderr
    status, stdout, stderr, layers = json.loads(done.stdout)
    assert status == "ok", stderr
    uid, answer = stdout.split()
    assert answer == "42" and int(uid) != 0 and any(layer.startswith("uid-drop") for layer in layers)
