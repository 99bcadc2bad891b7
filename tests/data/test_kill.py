"""`loom data build` killed with SIGKILL, for real: its pool workers end with it, and the
temporaries it leaves are removed by the next build (but not those of a build still running)."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loom.config import load_config
from loom.data import build_dataset
from loom.util import remove_leftovers

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads processes from /proc")

WORDS = ("the of and to with have that be river mountain library garden window teacher morning history "
         "engine harbor village letter market winter forest lantern journey silver copper meadow").split()
FILES = 12


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("kill-corpus")
    rng = random.Random(11)
    for f in range(FILES):
        with open(root / f"part{f:02d}.jsonl", "w") as out:
            for _ in range(600):
                sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 14))).capitalize() + "."
                             for _ in range(rng.randint(6, 12))]
                out.write(json.dumps({"text": " ".join(sentences)}) + "\n")
    return root


def settings(corpus: Path, data_dir: Path, *extra: str) -> list[str]:
    return [f'data.sources=[{{name="dump", kind="jsonl", path="{corpus}"}}]', f'data.dir="{data_dir}"',
            "data.task_files=1", "tokenizer.vocab_size=300", "quality.text.min_words=20", *extra]


def start_build(corpus: Path, data_dir: Path, *extra: str) -> subprocess.Popen:
    sets = [arg for o in settings(corpus, data_dir, *extra) for arg in ("--set", o)]
    return subprocess.Popen([sys.executable, "-m", "loom", "data", "build", "--config", "quickstart", *sets],
                            cwd=data_dir.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def running(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie (an orphan that exits stays one where nobody reaps it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def children(pid: int) -> set[int]:
    found = set()
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue  # ended while we looked
        if fields.get("PPid", "").strip() == str(pid):
            found.add(int(status.parent.name))
    return found


def wait_for(condition, timeout_s: float, poll_s: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll_s)
    return condition()


def dead_pid() -> int:
    """The pid of a process that has ended and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def kill_and_check_its_children_end(proc: subprocess.Popen, count: int, what: str, start_s: float = 30) -> None:
    """Wait for `count` children of `proc`, SIGKILL it, and assert that they all end."""
    workers: set[int] = set()
    try:
        assert wait_for(lambda: len(children(proc.pid)) >= count or proc.poll() is not None, start_s), \
            f"no {what} started"
        assert proc.poll() is None, "the process finished before it could be killed"
        workers = children(proc.pid)
        assert len(workers) >= count and all(running(pid) for pid in workers)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # a bounded wait for them to go, not a measure of how fast they go
        assert wait_for(lambda: not any(running(pid) for pid in workers), 30, 0.05), \
            f"{what} {sorted(pid for pid in workers if running(pid))} outlived their killed parent"
    finally:
        proc.kill()
        proc.wait()
        for pid in workers:
            if running(pid):
                os.kill(pid, signal.SIGKILL)


def test_pool_workers_end_when_the_build_is_killed(corpus, tmp_path):
    proc = start_build(corpus, tmp_path / "data", "data.workers=2")
    kill_and_check_its_children_end(proc, 2, "pool workers", start_s=120)


@pytest.mark.parametrize("pdeathsig", [True, False], ids=["pdeathsig-and-watcher", "watcher-alone"])
def test_end_with_parent_ends_the_workers_of_a_killed_process(pdeathsig):
    # the watcher alone is what platforms without prctl get
    script = ("import multiprocessing, os, sys, time\n"
              "from concurrent.futures import ProcessPoolExecutor\n"
              "from loom.util import end_with_parent\n"
              "pool = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context('fork'),\n"
              f"                          initializer=end_with_parent, initargs=(os.getpid(), {pdeathsig}, 0.1))\n"
              "futures = [pool.submit(time.sleep, 600) for _ in range(2)]\n"
              "print('ready', flush=True)\n"
              "time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    kill_and_check_its_children_end(proc, 2, "pool workers")


def test_the_stdlib_corpus_readers_end_when_their_process_is_killed():
    # `loom quickstart` reads the standard library in a pool of its own, consumed as a generator
    script = ("import time\n"
              "from loom.data.stdlib_corpus import stdlib_documents\n"
              "docs = stdlib_documents(workers=2)\n"
              "next(d for d in docs if d.domain.startswith('code'))\n"
              "print('ready', flush=True)\n"
              "time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    kill_and_check_its_children_end(proc, 2, "readers")


def test_without_pdeathsig_a_pool_outlives_the_thread_that_started_it():
    # PR_SET_PDEATHSIG follows the forking thread: a pool that is used on after that thread
    # ended keeps its workers only without it
    import multiprocessing
    import threading
    from concurrent.futures import ProcessPoolExecutor

    from loom.util import end_with_parent

    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"), initializer=end_with_parent,
                               initargs=(os.getpid(), False))
    try:
        first = threading.Thread(target=lambda: pool.submit(os.getpid).result())
        first.start()
        first.join()
        worker = pool.submit(os.getpid).result(timeout=30)
        assert running(worker) and pool.submit(os.getpid).result(timeout=30) == worker
    finally:
        pool.shutdown()


def test_a_build_killed_while_writing_shards_leaves_a_temporary_the_next_build_removes(corpus, tmp_path):
    data_dir = tmp_path / "data"
    build_dataset(load_config(None, settings(corpus, data_dir, "data.workers=1")))
    before = sorted(p.name for p in (data_dir / "shards").iterdir())
    # new shard settings: the next build reuses the clean corpus and tokenizer and only writes shards
    proc = start_build(corpus, data_dir, "data.workers=1", "data.shard_tokens=20000")
    try:
        assert wait_for(lambda: any(data_dir.glob(".shards.tmp-*")) or proc.poll() is not None, 120)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
        proc.wait()
    left = [p.name for p in data_dir.glob(".shards.tmp-*")]
    assert left == [f".shards.tmp-{proc.pid}"], "the build should have been killed while writing shards"
    assert sorted(p.name for p in (data_dir / "shards").iterdir()) == before  # the old shards are whole

    proc = start_build(corpus, data_dir, "data.workers=1", "data.shard_tokens=20000")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    assert not list(data_dir.glob(".shards.*")), "the killed build's temporary is still there"
    assert f"removed {data_dir / left[0]}" in err
    assert sorted(p.name for p in (data_dir / "shards").iterdir()) != before  # shards of 20,000 tokens now


def test_leftovers_of_dead_processes_are_removed_and_those_of_running_ones_kept(corpus, tmp_path):
    data_dir = tmp_path / "data"
    cfg = load_config(None, settings(corpus, data_dir, "data.workers=1"))
    build_dataset(cfg)
    dead, live = dead_pid(), os.getpid()
    tasks = data_dir / "clean.work" / "tasks"
    tasks.mkdir(parents=True)
    made = []
    for pid in (dead, live):
        for path in (data_dir / f".shards.tmp-{pid}", data_dir / f".shards.old-{pid}", data_dir / f".clean.old-{pid}"):
            path.mkdir()
            (path / "part.bin").write_bytes(b"x" * 100)
            made.append(path)
        for name in (f"00000.jsonl.zst.tmp-{pid}", f"00000.npz.tmp-{pid}"):
            (tasks / name).write_bytes(b"x")
            made.append(tasks / name)
    # every stage up to date: the build only looks around and removes what is dead
    build_dataset(cfg)
    kept = sorted(str(p.relative_to(data_dir)) for p in made if p.exists())
    assert kept == sorted(str(p.relative_to(data_dir)) for p in made if p.name.endswith(f"-{live}"))
    # the shard stage redone (the clean corpus too: its code changed) leaves nothing behind
    build_dataset(load_config(None, settings(corpus, data_dir, "data.workers=1", "data.val_fraction=0.2")))
    assert not list(data_dir.glob(f".*-{os.getpid()}"))  # our own pid's are ours to replace


def test_remove_leftovers_keeps_unrelated_names(tmp_path):
    dead = dead_pid()
    names = [f"a.tmp-{dead}", f"b.tmp-{os.getpid()}", "c.tmp-", "d.tmp-x1", f"e.tmp-{dead}.keep", f"f.old-{dead}",
             f".tmp_step_000100_{dead}", f".tmp_step_000200_{os.getpid()}"]
    for name in names:
        (tmp_path / name).write_text("x")
    removed = remove_leftovers(tmp_path, "*.tmp-*", ".tmp_step_*")
    assert [p.name for p in removed] == [f"a.tmp-{dead}", f".tmp_step_000100_{dead}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(set(names) - {p.name for p in removed})
    assert remove_leftovers(tmp_path / "missing", "*") == []
