"""Sharded data parallelism (FSDP2, `parallel.dp_shard`) with real processes: torchrun, gloo on
the CPU, against one process with the same global batch; its checkpoints resume at another
layout."""

import json
import sys

import pytest
from test_ddp import losses, run_loom, sets

from conftest import tiny_config, tiny_overrides
from loom.errors import ConfigError

COMMON = ["train.steps=20", "train.micro_batch=4", "train.eval_every=100", "train.ckpt_every=10",
          "train.batch_tokens=256"]  # 2 x 4 sequences x 32 tokens per step
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def relative_gap(a, b):
    return max(abs(x - y) / abs(x) for x, y in zip(a, b, strict=True))


def test_dp_shard_follows_one_process_and_its_checkpoint_resumes_on_one(tiny_root):
    single = tiny_overrides(tiny_root, "fsdp-single", COMMON)
    sharded = tiny_overrides(tiny_root, "fsdp-2", [*COMMON, "parallel.dp_shard=2"])
    run_loom([sys.executable, "-m", "loom", "train", *sets(single)], tiny_root)
    run_loom([*TORCHRUN, "-m", "loom", "train", *sets(sharded)], tiny_root)
    a, b = losses(tiny_root / "runs" / "fsdp-single"), losses(tiny_root / "runs" / "fsdp-2")
    assert len(a) == len(b) == 20 and a[-1] < a[0]
    assert relative_gap(a, b) <= 1e-4

    # a checkpoint written at dp_shard=2 resumes at one process as one written by one process:
    # both runs train 10 steps (at dp_shard=2, or alone), then one process takes them to 20
    for name, layout in (("fsdp-half", [*TORCHRUN, "-m", "loom", "train"]),
                         ("single-half", [sys.executable, "-m", "loom", "train"])):
        first = tiny_overrides(tiny_root, name, [*COMMON, "train.steps=10"]
                               + (["parallel.dp_shard=2"] if name.startswith("fsdp") else []))
        run_loom([*layout, *sets(first)], tiny_root)
        then = tiny_overrides(tiny_root, name, COMMON)
        out = run_loom([sys.executable, "-m", "loom", "train", *sets(then)], tiny_root)
        assert "from step_000010" in out.stderr
    c, d = losses(tiny_root / "runs" / "fsdp-half"), losses(tiny_root / "runs" / "single-half")
    assert len(c) == len(d) == 20 and relative_gap(d, c) <= 1e-4
    state = json.loads((tiny_root / "runs" / "fsdp-half" / "checkpoints" / "step_000020" / "state.json").read_text())
    assert state["step"] == 20


@pytest.mark.parametrize("setting, message", [
    ("parallel.tp=2", "parallel.tp = 2: tensor parallel training is not supported by loom train yet"),
    ("parallel.dp_shard=0", "parallel.dp_shard must be positive"),
    ('parallel.activation_checkpointing="selective"', "is not supported by loom train yet"),
    ('parallel.activation_checkpointing="some"', "is not known; use none or full"),
])
def test_parallel_settings_loom_cannot_run_are_refused_with_the_key(tmp_path, setting, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(tmp_path, extra=[setting])


def test_a_shard_degree_the_world_size_cannot_hold_is_refused(tiny_root):
    from loom.train.parallelize import mesh_shape

    assert mesh_shape(tiny_config(tiny_root, extra=["parallel.dp_shard=2"]).parallel, 4) == (2, 2)
    with pytest.raises(ConfigError, match="parallel.dp_shard = 2 does not divide the 3 process"):
        mesh_shape(tiny_config(tiny_root, extra=["parallel.dp_shard=2"]).parallel, 3)


def test_activation_checkpointing_gives_the_same_losses(tiny_root):
    plain = tiny_overrides(tiny_root, "ac-none", COMMON)
    checkpointed = tiny_overrides(tiny_root, "ac-full", [*COMMON, 'parallel.activation_checkpointing="full"'])
    run_loom([sys.executable, "-m", "loom", "train", *sets(plain)], tiny_root)
    run_loom([sys.executable, "-m", "loom", "train", *sets(checkpointed)], tiny_root)
    a, b = losses(tiny_root / "runs" / "ac-none"), losses(tiny_root / "runs" / "ac-full")
    assert len(a) == len(b) == 20 and relative_gap(a, b) <= 1e-4


def test_checkpointed_blocks_recompute_in_the_backward_pass():
    # the same gradients, and the block's forward runs again during backward
    import torch

    from loom.model import GPT, ModelConfig
    from loom.train.parallelize import checkpoint_activations

    cfg = ModelConfig(n_layer=2, n_head=2, n_kv_head=2, d_model=32, vocab_size=64, max_seq_len=16)
    torch.manual_seed(0)
    plain, wrapped = GPT(cfg), GPT(cfg)
    wrapped.load_state_dict(plain.state_dict())
    checkpoint_activations(wrapped)
    calls = []
    wrapped.blocks[0].attn.register_forward_hook(lambda *_: calls.append(torch.is_grad_enabled()))
    x = torch.randint(0, 64, (2, 16))
    plain(x, x).backward()
    wrapped(x, x).backward()
    assert len(calls) == 2  # the forward, and its recomputation in backward
    assert sorted(wrapped.state_dict()) == sorted(plain.state_dict())
    for (name, p), q in zip(plain.named_parameters(), wrapped.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), name
