"""A real one-node Slurm cluster on this machine, for the tests: munged, slurmctld and slurmd
started with a slurm.conf of their own (own ports, state and spool directories, pid and log
files) and stopped by their pid files, whatever happened in between.

Debian's `slurm-wlm` and `munge` packages provide the daemons (`.ci/run` installs them where it
can); `missing()` says what is absent. The daemons run in the foreground as children of this
process and get SIGTERM from the kernel if it dies (`prctl(PR_SET_PDEATHSIG)`), so a killed test
run leaves no daemon behind; `stop()` cancels every job first, since Slurm's job steps outlive
slurmd by design.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel")
PR_SET_PDEATHSIG = 1


def missing() -> str | None:
    """Why a local cluster cannot start here, or None when it can."""
    absent = [b for b in BINARIES if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]
    if absent:
        return (f"{', '.join(absent)} not installed: apt-get install slurm-wlm munge (what .ci/run does as "
                "root) to run the real-Slurm tests")
    if os.geteuid() != 0:
        return "the local Slurm cluster runs its daemons as root (SlurmUser=root); run the tests as root"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "no munge user (the munge package makes it); reinstall munge"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _binary(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


class LocalSlurm:
    """`with LocalSlurm() as slurm:` a cluster of this one machine; `slurm.env` is the
    environment for the clients (sbatch, squeue, scontrol: SLURM_CONF set)."""

    def __init__(self):
        # not under pytest's tmp_path: its parents are 0700 root, which the munge user cannot enter
        self.root = Path(tempfile.mkdtemp(prefix="loom-slurm-"))
        self.root.chmod(0o755)
        self.conf = self.root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.procs: dict[str, subprocess.Popen] = {}
        self.pid_files: dict[str, Path] = {}
        self.host = socket.gethostname()

    # --- start ------------------------------------------------------------------------------

    def __enter__(self) -> LocalSlurm:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self._start_munge()
        self._write_conf()
        self._spawn("slurmctld", [_binary("slurmctld"), "-D", "-f", str(self.conf)], self.root / "slurmctld.pid")
        self._spawn("slurmd", [_binary("slurmd"), "-D", "-f", str(self.conf)], self.root / "slurmd.pid")
        self._wait_for_idle_node()

    def _start_munge(self) -> None:
        munge = pwd.getpwnam("munge")
        d = self.root / "munge"
        d.mkdir()
        d.chmod(0o755)  # the socket inside must be reachable by everyone; the key is 0400
        key = d / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        for path in (d, key):
            os.chown(path, munge.pw_uid, munge.pw_gid)
        self.munge_socket = d / "munge.socket"
        self._spawn("munged", [_binary("munged"), "-F", f"--socket={self.munge_socket}", f"--key-file={key}",
                               f"--pid-file={d / 'munged.pid'}", f"--log-file={d / 'munged.log'}",
                               f"--seed-file={d / 'munged.seed'}"], d / "munged.pid", user=munge.pw_uid,
                    group=munge.pw_gid)
        self._until(lambda: self.munge_socket.exists(), "munged to open its socket", d / "munged.log")

    def _write_conf(self) -> None:
        node = subprocess.run([_binary("slurmd"), "-C"], capture_output=True, text=True, check=True).stdout
        node_line = next(line for line in node.splitlines() if line.startswith("NodeName="))
        # the node's memory as configured: a little below what slurmd measures, which varies
        fields = [f for f in node_line.split() if not f.startswith(("RealMemory=", "UpTime="))]
        for name in ("state", "spool", "log"):
            (self.root / name).mkdir()
        self.conf.write_text("\n".join([
            "ClusterName=loomtest",
            f"SlurmctldHost={self.host}",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "SlurmUser=root",
            "SlurmdUser=root",
            # cred_expire: also how long a requeued job waits before it may start again (default 120 s)
            f"AuthInfo=socket={self.munge_socket},cred_expire=5",
            f"StateSaveLocation={self.root / 'state'}",
            f"SlurmdSpoolDir={self.root / 'spool'}",
            f"SlurmctldPidFile={self.root / 'slurmctld.pid'}",
            f"SlurmdPidFile={self.root / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.root / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={self.root / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "ReturnToService=2",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "MpiDefault=none",
            "SchedulerType=sched/builtin",
            # pending jobs looked at every second, not every minute: a requeued job starts as soon
            # as its BeginTime (cred_expire after the requeue) has passed
            "SchedulerParameters=sched_interval=1",
            "KillWait=30",
            "MinJobAge=600",
            "SlurmdTimeout=60",
            " ".join(fields),
            f"PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]))

    def _spawn(self, name: str, argv: list[str], pid_file: Path, **kwargs) -> None:
        log = open(self.root / f"{name}.out", "wb")
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                            preexec_fn=_die_with_parent, **kwargs)
        self.pid_files[name] = pid_file
        log.close()

    def _until(self, condition, what: str, log: Path | None = None, tries: int = 600) -> None:
        """Polls `condition` (every 0.1 s, at most `tries` times); a daemon that exits meanwhile,
        or a condition never met, raises with the daemons' logs."""
        for _ in range(tries):
            if condition():
                return
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{', '.join(dead)} exited while waiting for {what}:\n{self.logs()}")
            time.sleep(0.1)
        raise RuntimeError(f"gave up waiting for {what}:\n{self.logs()}")

    def _wait_for_idle_node(self) -> None:
        def idle() -> bool:
            out = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True, env=self.env)
            return out.returncode == 0 and out.stdout.strip() in ("idle", "mix", "alloc")

        self._until(idle, "the node to come up idle")

    def logs(self) -> str:
        parts = []
        for path in [*sorted(self.root.glob("*.out")), *sorted((self.root / "log").glob("*.log")),
                     self.root / "munge" / "munged.log"]:
            if path.is_file():
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    # --- jobs -------------------------------------------------------------------------------

    def squeue_state(self, job: str) -> str:
        """The job's state (PENDING, RUNNING, COMPLETED...), or "" when the controller has none."""
        out = subprocess.run(["squeue", "-h", "-j", job, "-t", "all", "-o", "%T"], capture_output=True, text=True,
                             env=self.env)
        return out.stdout.strip() if out.returncode == 0 else ""

    def run(self, *argv: str) -> subprocess.CompletedProcess:
        result = subprocess.run(list(argv), capture_output=True, text=True, env=self.env)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}\n{self.logs()}")
        return result

    # --- stop -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Cancels every job and waits for them to end, then stops slurmd, slurmctld and munged
        by their pid files (SIGTERM, then SIGKILL after 30 s), and removes the directory."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            subprocess.run(["scancel", "--full", "--user", "root"], capture_output=True, env=self.env)
            for _ in range(600):
                out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, env=self.env)
                if out.returncode != 0 or not out.stdout.strip():
                    break
                time.sleep(0.1)
        for name in ("slurmd", "slurmctld", "munged"):
            if name in self.procs:
                self._stop(name)
        shutil.rmtree(self.root, ignore_errors=True)

    def _stop(self, name: str) -> None:
        proc = self.procs[name]
        try:
            pid = int(self.pid_files[name].read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pid = proc.pid  # it died before writing one, or never got that far
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=30)
                break
            except subprocess.TimeoutExpired:
                continue
        if pid != proc.pid and proc.poll() is None:
            proc.kill()
            proc.wait()
