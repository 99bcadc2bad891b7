"""Shared fixtures: a tiny dataset built once per test session from the real stdlib corpus, a tiny
trained run on it, shards of a dozen short documents for evaluation tests, and real `loom serve`
processes on loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from loom.config import load_config

TINY_DATA = [
    'data.sources=[{name="stdlib", kind="stdlib", max_files=60}]',
    "data.val_fraction=0.1",
    "data.shard_tokens=200000",
    "tokenizer.vocab_size=512",
    "tokenizer.train_bytes=300000",
]
TINY_MODEL = [
    "model.n_layer=2",
    "model.n_head=4",
    "model.n_kv_head=2",
    "model.d_model=64",
    "model.max_seq_len=64",
]
TINY_TRAIN = [
    "train.seq_len=32",
    "train.micro_batch=4",
    "train.steps=6",
    "train.warmup_steps=2",
    "train.eval_every=3",
    "train.eval_batches=2",
    "train.log_every=1",
    "train.ckpt_every=3",
    "train.lr=1e-2",
    # the `loom` command starts from the quickstart preset, `load_config(None, ...)` from the
    # defaults: a tiny run must be the same run both ways, so what the preset sets is pinned here
    'train.optimizer="adamw"',
]


def run_loom(*args, cwd, ok: bool | None = True) -> subprocess.CompletedProcess:
    """The `loom` command as a user runs it, in a real subprocess. `ok`: whether it must succeed
    (True) or fail (False); None checks nothing."""
    result = subprocess.run([sys.executable, "-m", "loom", *args], capture_output=True, text=True, cwd=cwd,
                            timeout=600, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if ok is not None:
        assert (result.returncode == 0) == ok, result.stderr[-3000:]
    return result


def tiny_overrides(root, name: str = "tiny", extra=()) -> list[str]:
    return [
        *TINY_DATA,
        *TINY_MODEL,
        *TINY_TRAIN,
        f'data.dir="{root}/data"',
        f'run.dir="{root}/runs"',
        f'run.name="{name}"',
        *extra,
    ]


def tiny_config(root, name: str = "tiny", extra=()):
    return load_config(None, tiny_overrides(root, name, extra))


def rewind_to_step_3(run_dir) -> None:
    """A tiny run as if killed after its step-3 checkpoint: the step-6 one gone, `latest` back at 3."""
    import shutil

    shutil.rmtree(Path(run_dir) / "checkpoints" / "step_000006")
    (Path(run_dir) / "checkpoints" / "latest").write_text("step_000003\n")


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    """A directory whose data/ holds the tiny dataset (tokenizer + shards), built once."""
    from loom.data import build_dataset

    root = tmp_path_factory.mktemp("tiny")
    build_dataset(tiny_config(root))
    return root


# --- evaluation: a tiny trained run, and a hand-made dataset of short documents ---------------

SENTENCES = [
    "The river runs past the old mill and the stone bridge",
    "A small bird sang on the wall of the garden every morning",
    "Numbers like 42 and 1999 appear in text as well as words",
    "She wrote a letter to her brother about the long winter",
    "Bright lamps lit the street while rain fell on the roofs",
    "Every page of the book smelled of dust and of old paper",
]
PROGRAMS = [
    "def add(a, b):\n    return a + b\n",
    "for i in range(3):\n    print(i * i)\n",
    "class Box:\n    def __init__(self, size):\n        self.size = size\n",
    "import os\nprint(os.sep.join(['a', 'b']))\n",
    "values = [1, 2, 3]\ntotal = sum(values)\nprint(total)\n",
    "def greet(name):\n    return 'hello ' + name\n",
]


@pytest.fixture(scope="session")
def tiny_run(tiny_root):
    """A tiny model trained for a few steps on the stdlib corpus: (run directory, config)."""
    from loom.train import train

    cfg = tiny_config(tiny_root, "eval")
    train(cfg)
    return cfg.run_dir, cfg


@pytest.fixture(scope="session")
def short_docs(tmp_path_factory):
    """Shards of a dozen short text and code documents (quality rules off), and a random model
    whose context holds any of them whole: (config, LoomLM)."""
    from loom.data import build_dataset, tokenizer_path
    from loom.eval.lm import LoomLM
    from loom.model import GPT
    from loom.tokenizer import Tokenizer

    root = tmp_path_factory.mktemp("eval-short")
    corpus = root / "corpus"
    (corpus / "repo").mkdir(parents=True)
    with open(corpus / "docs.jsonl", "w") as f:
        for i, s in enumerate(SENTENCES * 2):
            f.write(json.dumps({"id": f"s{i}", "text": f"{s}, copy {i}."}) + "\n")
    for i, p in enumerate(PROGRAMS):
        (corpus / "repo" / f"m{i}.py").write_text(f"# module {i}\n{p}")
    cfg = load_config(None, [
        f'data.sources=[{{name="docs", kind="jsonl", path="{corpus}/docs.jsonl"}}, '
        f'{{name="repo", kind="code_repo", path="{corpus}/repo"}}]',
        "quality.enabled=false", "dedup.near=false", "data.val_fraction=0.3", f'data.dir="{root}/data"',
        "tokenizer.vocab_size=300", "model.n_layer=2", "model.n_head=2", "model.n_kv_head=1", "model.d_model=32",
        "model.max_seq_len=256", "run.seed=3",
    ])
    build_dataset(cfg)
    tok = Tokenizer.from_file(tokenizer_path(cfg))
    cfg.model.vocab_size = tok.vocab_size
    return cfg, LoomLM(GPT(cfg.model), tok, batch_size=4)


# --- serving: real `loom serve` processes on loopback ------------------------------------------


def _end_with_the_tests() -> None:
    """In a server's child process before it runs: SIGTERM once the test process is gone, however
    it went (Linux's PR_SET_PDEATHSIG), so no server outlives a killed test run."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `loom serve` process: `url`, `db`, `get`/`post` that return (status, JSON body)."""

    def __init__(self, run_dir, db, *flags, api_key=None):
        self.port, self.db = free_port(), db
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "loom", "serve", "--run", str(run_dir), "--port", str(self.port), *flags]
        if db is not None:
            args += ["--db", str(db)]
        if api_key:
            args += ["--api-key", api_key]
        import tempfile

        self.log = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a chatty server never blocks
        self.process = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, text=True,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=_end_with_the_tests)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"loom serve exited: {self.output()}")
            try:
                if self.get("/health")[0] == 200:
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise AssertionError("loom serve did not answer /health within 120 s")

    def request(self, method, path, body=None, headers=None, raw: bytes | None = None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=120) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def output(self) -> str:
        """What the server has printed so far."""
        self.log.seek(0)
        return self.log.read()

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path, body=None, **kwargs):
        return self.request("POST", path, body, **kwargs)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="session")
def serve_run(tiny_root):
    """A tiny run whose context (512) leaves room for long answers: (run directory, model name)."""
    from loom.train import train

    cfg = tiny_config(tiny_root, "serve", extra=["model.max_seq_len=512"])
    train(cfg)
    return cfg.run_dir, "serve"


@pytest.fixture(scope="session")
def server(serve_run, tmp_path_factory):
    """One server for the tests that only talk to it."""
    s = Server(serve_run[0], tmp_path_factory.mktemp("served") / "serve.sqlite")
    yield s
    s.stop()
