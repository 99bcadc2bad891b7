"""Sharded and tensor parallel training (FSDP2 `parallel.dp_shard`, DTensor `parallel.tp`) with
real processes: torchrun, gloo on the CPU, each layout against one process with the same global
batch; checkpoints resume at another layout."""

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


def torchrun(n):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n)]


@pytest.mark.parametrize("name, ranks, layout", [
    ("tp-2", 2, ["parallel.tp=2"]),
    ("fsdp-2-tp-2", 4, ["parallel.dp_shard=2", "parallel.tp=2"]),
    ("hsdp-tp", 4, ["parallel.dp_replicate=2", "parallel.tp=2", 'parallel.activation_checkpointing="selective"']),
])
def test_tensor_parallel_layouts_follow_one_process(tiny_root, name, ranks, layout):
    single = tiny_overrides(tiny_root, "layouts-single", COMMON)
    if not (tiny_root / "runs" / "layouts-single" / "metrics.jsonl").is_file():
        run_loom([sys.executable, "-m", "loom", "train", *sets(single)], tiny_root)
    out = run_loom([*torchrun(ranks), "-m", "loom", "train", *sets(tiny_overrides(tiny_root, name,
                                                                                 [*COMMON, *layout]))], tiny_root)
    data_ranks = ranks // 2  # tp = 2: each pair of ranks reads the same batches
    assert f"{data_ranks} data-parallel rank(s) x {2 // data_ranks} micro-batch(es)" in out.stderr
    a, b = losses(tiny_root / "runs" / "layouts-single"), losses(tiny_root / "runs" / name)
    assert len(a) == len(b) == 20 and a[-1] < a[0]
    assert relative_gap(a, b) <= 1e-4


def test_moe_trains_sharded_like_one_process(tiny_root):
    moe = [*COMMON, "model.moe.n_experts=4", "model.moe.top_k=2"]
    run_loom([sys.executable, "-m", "loom", "train", *sets(tiny_overrides(tiny_root, "fsdp-moe-single", moe))],
             tiny_root)
    run_loom([*TORCHRUN, "-m", "loom", "train",
              *sets(tiny_overrides(tiny_root, "fsdp-moe-2", [*moe, "parallel.dp_shard=2"]))], tiny_root)
    a, b = losses(tiny_root / "runs" / "fsdp-moe-single"), losses(tiny_root / "runs" / "fsdp-moe-2")
    assert len(a) == len(b) == 20 and relative_gap(a, b) <= 1e-4


@pytest.mark.parametrize("setting, message", [
    ("parallel.dp_shard=0", "parallel.dp_shard must be positive"),
    ("parallel.dp_replicate=-1", "parallel.dp_replicate must be"),
    ('parallel.activation_checkpointing="some"', "is not known; use none, full or selective"),
    ("parallel.tp=3", r"model.n_head \(4\) must be divisible by parallel.tp \(3\)"),
    (["parallel.tp=2", "model.moe.n_experts=4"], "loom does not split experts across ranks yet"),
])
def test_parallel_settings_loom_cannot_run_are_refused_with_the_key(tmp_path, setting, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(tmp_path, extra=setting if isinstance(setting, list) else [setting])


def test_degrees_the_world_size_cannot_hold_are_refused(tiny_root):
    def degrees(world, *extra):
        return tiny_config(tiny_root, extra=list(extra)).parallel.degrees(world)

    assert degrees(4, "parallel.dp_shard=2") == (2, 2, 1)
    assert degrees(8, "parallel.dp_shard=2", "parallel.tp=2") == (2, 2, 2)
    assert degrees(2) == (2, 1, 1)
    for world, extra in ((3, ["parallel.dp_shard=2"]), (4, ["parallel.dp_replicate=3"]),
                         (4, ["parallel.dp_replicate=1", "parallel.tp=2"])):
        with pytest.raises(ConfigError, match=f"must equal the {world} process"):
            degrees(world, *extra)


def test_activation_checkpointing_gives_the_same_losses(tiny_root):
    plain = tiny_overrides(tiny_root, "ac-none", COMMON)
    checkpointed = tiny_overrides(tiny_root, "ac-full", [*COMMON, 'parallel.activation_checkpointing="full"'])
    run_loom([sys.executable, "-m", "loom", "train", *sets(plain)], tiny_root)
    run_loom([sys.executable, "-m", "loom", "train", *sets(checkpointed)], tiny_root)
    a, b = losses(tiny_root / "runs" / "ac-none"), losses(tiny_root / "runs" / "ac-full")
    assert len(a) == len(b) == 20 and relative_gap(a, b) <= 1e-4


def test_checkpointed_blocks_recompute_in_the_backward_pass():
    """The same gradients in every mode; in the backward pass "full" runs each block's matrix
    products again, "selective" only the element-wise work (its matrix products are kept)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from loom.model import GPT, ModelConfig
    from loom.train.parallelize import checkpoint_activations

    class CountMatmuls(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.count += func in (torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default)
            return func(*args, **(kwargs or {}))

    cfg = ModelConfig(n_layer=2, n_head=2, n_kv_head=2, d_model=32, vocab_size=64, max_seq_len=16)
    torch.manual_seed(0)
    x = torch.randint(0, 64, (2, 16))
    models, backward_matmuls = {}, {}
    for mode in ("none", "full", "selective"):
        models[mode] = model = GPT(cfg)
        if mode != "none":
            model.load_state_dict(models["none"].state_dict())
            checkpoint_activations(model, mode)
        loss = model(x, x)
        with CountMatmuls() as counter:
            loss.backward()
        backward_matmuls[mode] = counter.count
    # q, k, v, out, gate, up again (down's output is needed by nothing: recomputation stops before it)
    assert backward_matmuls["full"] == backward_matmuls["none"] + cfg.n_layer * 6
    assert backward_matmuls["selective"] == backward_matmuls["none"]
    for mode in ("full", "selective"):
        assert sorted(models[mode].state_dict()) == sorted(models["none"].state_dict())
        for (name, p), q in zip(models["none"].named_parameters(), models[mode].parameters(), strict=True):
            assert torch.allclose(p.grad, q.grad, atol=1e-6), (mode, name)
