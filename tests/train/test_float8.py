"""train.float8: the blocks' projections multiply in float8 through torchao, on the CPU as on a GPU."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_config
from loom.config import load_config
from loom.errors import ConfigError
from loom.model import GPT
from loom.train import train
from loom.train.parallelize import FLOAT8_LAYERS, float8_matmuls


def test_float8_takes_the_blocks_projections_and_nothing_else():
    from torchao.float8.float8_linear import Float8Linear

    cfg = tiny_config("/tmp", extra=["model.moe.n_experts=4", "model.moe.shared_experts=1", "model.moe.every=2",
                                     "model.n_layer=2", "model.tie_embeddings=false"])
    with torch.device("meta"):
        model = GPT(cfg.model)
    names_before = [name for name, _ in model.named_parameters()]
    float8_matmuls(model)
    converted = {name for name, m in model.named_modules() if isinstance(m, Float8Linear)}
    expected = {name for name, m in model.named_modules()
                if isinstance(m, torch.nn.Linear) and name.startswith("blocks.")
                and name.rpartition(".")[2] in FLOAT8_LAYERS}
    assert converted == expected and any(".mlp.shared." in n for n in converted), sorted(converted)
    assert not any(n.endswith("router") or n == "head" for n in converted)
    assert [name for name, _ in model.named_parameters()] == names_before  # checkpoints keep their keys


def test_a_float8_run_trains_and_saves_ordinary_weights(tiny_root):
    plain = train(tiny_config(tiny_root, "fp32"))
    fp8_cfg = tiny_config(tiny_root, "fp8", ["train.float8=true"])
    fp8 = train(fp8_cfg)
    assert fp8["final_val_loss"] < fp8["first_val_loss"] - 0.5
    assert abs(fp8["final_val_loss"] - plain["final_val_loss"]) < 0.05  # float8 rounding, not a different model
    a = load_file(tiny_root / "runs" / "fp32" / "checkpoints" / "step_000006" / "model.safetensors")
    b = load_file(fp8_cfg.run_dir / "checkpoints" / "step_000006" / "model.safetensors")
    assert {k: (v.shape, v.dtype) for k, v in a.items()} == {k: (v.shape, v.dtype) for k, v in b.items()}
    # the products really were float8: the same run in fp32 ends on other weights
    assert not torch.equal(a["blocks.0.attn.q_proj.weight"], b["blocks.0.attn.q_proj.weight"])


def test_float8_with_tensor_parallel_is_refused():
    with pytest.raises(ConfigError, match="train.float8 with parallel.tp = 2"):
        load_config(None, ["train.float8=true", "parallel.tp=2"])
