"""Sharded checkpoints (torch.distributed.checkpoint) with real processes: a checkpoint written
by four ranks resumes at two, at one and at dp_shard x tp, bit for bit at its own layout; a
killed rank under `torchrun --max-restarts` resumes from one; `loom sample` and
`loom consolidate` read one in a single process."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from test_ddp import losses, run_loom, sets

from conftest import tiny_config, tiny_overrides
from loom.checkpoint import find_resumable, load_checkpoint, load_trained_model, verify_checkpoint
from loom.model import GPT

COMMON = ["train.steps=20", "train.micro_batch=2", "train.eval_every=100", "train.ckpt_every=10",
          "train.batch_tokens=256", "train.keep_last=5"]  # 4 x 2 sequences x 32 tokens per step


def torchrun(n, *extra):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n), *extra,
            "-m", "loom", "train"]


def relative_gap(a, b):
    return max(abs(x - y) / abs(x) for x, y in zip(a, b, strict=True))


def cut_at(root, source, name, step):
    """A copy of run `source` as if it had stopped after its checkpoint at `step`."""
    runs = Path(root) / "runs"
    shutil.rmtree(runs / name, ignore_errors=True)
    shutil.copytree(runs / source, runs / name)
    for path in (runs / name / "checkpoints").glob("step_*"):
        if int(path.name.split("_")[1]) > step:
            shutil.rmtree(path)
    (runs / name / "checkpoints" / "latest").write_text(f"step_{step:06d}\n")
    records = [r for r in (runs / name / "metrics.jsonl").read_text().splitlines()
               if json.loads(r).get("step", 0) <= step]
    (runs / name / "metrics.jsonl").write_text("".join(r + "\n" for r in records))


def weights(run_dir):
    model, _, _ = load_trained_model(run_dir)
    return model.state_dict()


def test_a_four_rank_checkpoint_resumes_at_every_layout(tiny_root):
    run_loom([*torchrun(4), *sets(tiny_overrides(tiny_root, "dcp-4", [*COMMON, "parallel.dp_shard=4"]))], tiny_root)
    ckpt = tiny_root / "runs" / "dcp-4" / "checkpoints" / "step_000010"
    names = sorted(p.relative_to(ckpt).as_posix() for p in ckpt.rglob("*") if p.is_file())
    assert [n for n in names if n.startswith("shards/")] == ["shards/.metadata", *(f"shards/__{r}_0.distcp"
                                                                                 for r in range(4))]
    assert "model.safetensors" not in names and verify_checkpoint(ckpt) is None
    reference = losses(tiny_root / "runs" / "dcp-4")

    layouts = {"dcp-4-again": torchrun(4), "dcp-2": torchrun(2), "dcp-1": [sys.executable, "-m", "loom", "train"],
               "dcp-2x2": torchrun(4)}
    degrees = {"dcp-4-again": ["parallel.dp_shard=4"], "dcp-2": ["parallel.dp_shard=2"], "dcp-1": [],
               "dcp-2x2": ["parallel.dp_shard=2", "parallel.tp=2"]}
    for name, command in layouts.items():
        cut_at(tiny_root, "dcp-4", name, 10)
        out = run_loom([*command, *sets(tiny_overrides(tiny_root, name, [*COMMON, *degrees[name]]))], tiny_root)
        assert "resumed" in out.stderr and "from step_000010" in out.stderr
        continued = losses(tiny_root / "runs" / name)
        assert len(continued) == 20 and relative_gap(reference, continued) <= 1e-4, name

    # at its own layout the resume is bit for bit: the same losses and the same weights
    assert losses(tiny_root / "runs" / "dcp-4-again") == reference
    a, b = weights(tiny_root / "runs" / "dcp-4"), weights(tiny_root / "runs" / "dcp-4-again")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # one process writes the one-file format again, readable as before
    assert (tiny_root / "runs" / "dcp-1" / "checkpoints" / "step_000020" / "model.safetensors").is_file()

    # a damaged shard is caught by the MANIFEST: the previous checkpoint is used instead
    damaged = tiny_root / "runs" / "dcp-4-again" / "checkpoints" / "step_000020" / "shards" / "__2_0.distcp"
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    path, notes = find_resumable(damaged.parent.parent.parent)
    assert path.name == "step_000010" and "shards/__2_0.distcp does not match its sha256" in notes[0]

    # loom sample and loom consolidate read the sharded checkpoint in one process
    run = tiny_root / "runs" / "dcp-4"
    out = subprocess.run([sys.executable, "-m", "loom", "sample", "--run", str(run), "--max-new-tokens", "8",
                          "--temperature", "0"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.startswith("def"), out.stderr[-2000:]
    out = subprocess.run([sys.executable, "-m", "loom", "consolidate", "--run", str(run)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "at step 20" in out.stdout, out.stderr[-2000:]
    whole = load_file(run / "model.safetensors")
    reference_weights = weights(run)
    assert ("head.weight" in whole) != ("tok_emb.weight" in whole)  # tied: stored once
    assert all(torch.equal(whole[k], reference_weights[k]) for k in whole)
    assert set(whole) | {"head.weight", "tok_emb.weight"} == set(reference_weights)

    # loom export hf reads the sharded checkpoint as it reads a one-file one
    from loom.export.hf import export_hf, hf_names

    exported = load_file(export_hf(run, tiny_root / "dcp-4-hf", say=lambda _: None) / "model.safetensors")
    layers = len({k.split(".")[1] for k in reference_weights if k.startswith("blocks.")})
    names = hf_names(layers, tied=True)
    assert set(exported) == set(names.values())
    assert all(torch.equal(exported[theirs], reference_weights[ours]) for ours, theirs in names.items())


def worker_pid(launcher: subprocess.Popen, rank: int) -> int | None:
    """The pid of the training process of `rank` that the torchrun `launcher` started."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if parent == launcher.pid and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    return None


def test_one_rank_killed_the_pair_restarts_from_the_sharded_checkpoint_and_ends_alike(tiny_root):
    extra = [*COMMON, "train.ckpt_every=5", "parallel.dp_shard=2"]
    run_loom([*torchrun(2), *sets(tiny_overrides(tiny_root, "kill-rank-whole", extra))], tiny_root)

    run_dir = tiny_root / "runs" / "kill-rank"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    launcher = subprocess.Popen([*torchrun(2, "--max-restarts", "1"), *sets(tiny_overrides(tiny_root, "kill-rank",
                                                                                           extra))],
                                cwd=tiny_root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    killed = None
    deadline = time.time() + 240
    while killed is None and time.time() < deadline and launcher.poll() is None:
        metrics = run_dir / "metrics.jsonl"
        lines = metrics.read_text().splitlines() if metrics.exists() else []
        step = max((json.loads(line).get("step", 0) for line in lines), default=0)
        if step >= 7 and (run_dir / "checkpoints" / "step_000005").is_dir():
            killed = worker_pid(launcher, 1)
            if killed:
                os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    assert killed, "the run ended before rank 1 could be killed"
    _, err = launcher.communicate(timeout=400)
    assert launcher.returncode == 0, err[-3000:]
    log = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    (resume,) = [e for e in log if e["event"] == "resume"]
    assert resume["restart"] == 1 and resume["checkpoint"] in ("step_000005", "step_000010")
    a, b = weights(tiny_root / "runs" / "kill-rank-whole"), weights(run_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoint_from_before_the_projections_were_split_still_loads(tmp_path):
    cfg = tiny_config(tmp_path).model
    torch.manual_seed(0)
    model = GPT(cfg)
    old = {}  # the fused layout of earlier loom: rows [keys; values] and [gate; up]
    for name, tensor in model.state_dict().items():
        for first, second, fused in ((".k_proj.", ".v_proj.", ".kv_proj."), (".gate_proj.", ".up_proj.",
                                                                              ".gate_up_proj.")):
            if first in name:
                old[name.replace(first, fused)] = torch.cat([tensor, model.state_dict()[name.replace(first, second)]])
        if not any(part in name for part in (".k_proj.", ".v_proj.", ".gate_proj.", ".up_proj.", "head.")):
            old[name] = tensor
    ckpt = tmp_path / "step_000001"
    ckpt.mkdir()
    save_file(old, str(ckpt / "model.safetensors"), metadata={"head.weight": "tok_emb.weight"})
    for name in ("optim.pt", "rng.pt"):
        torch.save({}, ckpt / name)
    (ckpt / "state.json").write_text('{"step": 1}')
    subprocess.run("sha256sum model.safetensors optim.pt rng.pt state.json > MANIFEST", shell=True, cwd=ckpt,
                   check=True)
    loaded = GPT(cfg)
    load_checkpoint(ckpt, loaded)
    x = torch.randint(0, cfg.vocab_size, (2, 16))
    assert torch.equal(model(x), loaded(x))
