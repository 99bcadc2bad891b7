"""The recipe options of `ModelConfig` (issue 17): each changes the network the way its paper
says, and keeps the cached decode path equal to one full forward pass."""

import pytest
import torch

from loom.config import load_config
from loom.errors import ConfigError
from loom.export.hf import llama_refusal
from loom.model import GPT, KVCache, ModelConfig

OPTIONS = {
    "qk_norm": dict(qk_norm=True),
    "relu2": dict(mlp="relu2", mlp_ratio=4.0),
    "softcap": dict(logit_softcap=5.0),
    "zero_init": dict(zero_init_projections=True),
    "all": dict(qk_norm=True, mlp="relu2", mlp_ratio=4.0, logit_softcap=5.0, zero_init_projections=True),
}


def model_with(seed=0, **over) -> GPT:
    torch.manual_seed(seed)
    cfg = ModelConfig(**{**dict(n_layer=2, n_head=4, n_kv_head=2, d_model=64, vocab_size=97, max_seq_len=48), **over})
    cfg.check()
    return GPT(cfg).eval()


@pytest.mark.parametrize("name", OPTIONS)
def test_each_option_decodes_through_the_cache_as_one_full_forward(name):
    model = model_with(**OPTIONS[name])
    if name in ("zero_init", "all"):  # trained-looking weights: a zero projection hides attention's part
        for p in model.parameters():
            p.data.add_(0.05 * torch.randn_like(p))
    idx = torch.randint(0, 97, (2, 17))
    cache = KVCache(model.cfg, 2, 48, "cpu", torch.float32)
    with torch.no_grad():
        full = model(idx)
        parts = [model(idx[:, :9], cache=cache)] + [model(idx[:, i : i + 1], cache=cache) for i in range(9, 17)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-4, atol=1e-4)


def test_softcap_bounds_every_logit_and_leaves_small_ones_almost_unchanged():
    capped, plain = model_with(logit_softcap=2.0), model_with()
    for p in (*capped.parameters(), *plain.parameters()):
        p.data.mul_(6)  # large logits
    idx = torch.randint(0, 97, (2, 16))
    with torch.no_grad():
        a, b = capped(idx), plain(idx)
    assert b.abs().max() > 2.0 and a.abs().max() <= 2.0
    torch.testing.assert_close(a, 2.0 * torch.tanh(b / 2.0))


def test_zero_init_makes_every_block_the_identity():
    model = model_with(zero_init_projections=True)
    names = [n for n, p in model.named_parameters() if n.endswith(("out_proj.weight", "down_proj.weight"))]
    assert len(names) == 4 and all(not model.get_parameter(n).any() for n in names)
    idx = torch.randint(0, 97, (2, 16))
    with torch.no_grad():
        direct = model.head(model.final_norm(model.tok_emb(idx)))
        torch.testing.assert_close(model(idx), direct)


def test_qk_norm_normalises_each_heads_queries_and_keys():
    model = model_with(qk_norm=True)
    attn, seen = model.blocks[0].attn, {}
    attn.q_norm.register_forward_hook(lambda m, i, o: seen.setdefault("q", o))
    with torch.no_grad():
        model(torch.randint(0, 97, (1, 8)))
    rms = seen["q"].pow(2).mean(-1).sqrt()  # (B, H, T): one per head and position
    torch.testing.assert_close(rms, torch.ones_like(rms), rtol=1e-3, atol=1e-3)
    assert attn.q_norm.weight.shape == (model.cfg.head_dim,)


def test_relu2_at_ratio_4_has_swiglus_parameters_at_8_3():
    relu2, swiglu = model_with(mlp="relu2", mlp_ratio=4.0, d_model=96, n_head=4), model_with(d_model=96, n_head=4)
    assert relu2.num_params() == swiglu.num_params()
    assert not hasattr(relu2.blocks[0].mlp, "gate_proj")


def test_bad_recipe_settings_are_refused_with_the_key():
    with pytest.raises(ConfigError, match="model.mlp 'gelu' is not known"):
        load_config(None, ["model.mlp=gelu"])
    with pytest.raises(ConfigError, match="experts are SwiGLU"):
        load_config(None, ["model.mlp=relu2", "model.moe.n_experts=4"])
    with pytest.raises(ConfigError, match="logit_softcap"):
        load_config(None, ["model.logit_softcap=-1"])
    with pytest.raises(ConfigError, match="qk_norm"):
        load_config(None, ["model.qk_norm=true", "parallel.tp=2", "model.n_head=4", "model.n_kv_head=2"])


def test_export_names_each_option_llama_cannot_represent():
    assert llama_refusal(ModelConfig()) == ""
    assert llama_refusal(ModelConfig(zero_init_projections=True)) == ""  # an initialisation only
    why = llama_refusal(ModelConfig(qk_norm=True, mlp="relu2", logit_softcap=30.0))
    assert "qk_norm" in why and "relu2" in why and "logit_softcap = 30" in why
