import math

import pytest
import torch

from loom.model import GPT, KVCache, ModelConfig, generate
from loom.model.generate import sample_next
from loom.model.gpt import apply_rope, rope_tables


def small_config(**over) -> ModelConfig:
    base = dict(n_layer=2, n_head=4, n_kv_head=2, d_model=64, vocab_size=97, max_seq_len=48)
    base.update(over)
    return ModelConfig(**base)


def make_model(seed=0, **over) -> GPT:
    torch.manual_seed(seed)
    return GPT(small_config(**over)).eval()


def test_causal_mask_future_tokens_do_not_change_past_logits():
    model = make_model()
    idx = torch.randint(0, 97, (2, 20))
    changed = idx.clone()
    t = 11
    changed[:, t + 1 :] = torch.randint(0, 97, (2, 20 - t - 1))
    with torch.no_grad():
        a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], rtol=0, atol=1e-5)
    assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :])


@pytest.mark.parametrize("n_head,n_kv_head", [(4, 4), (4, 2), (4, 1)])
def test_gqa_shapes(n_head, n_kv_head):
    model = make_model(n_head=n_head, n_kv_head=n_kv_head)
    attn = model.blocks[0].attn
    head_dim = 64 // n_head
    assert attn.q_proj.weight.shape == (n_head * head_dim, 64)
    assert attn.k_proj.weight.shape == attn.v_proj.weight.shape == (n_kv_head * head_dim, 64)
    cache = KVCache(model.cfg, 3, 16, "cpu", torch.float32)
    assert cache.k.shape == (2, 3, n_kv_head, 16, head_dim)
    with torch.no_grad():
        logits = model(torch.randint(0, 97, (3, 10)), cache=cache)
    assert logits.shape == (3, 10, 97)
    assert cache.length == 10


def test_gqa_equals_attention_with_repeated_kv_heads():
    """One key/value head shared by a group equals plain multi-head attention whose k/v heads
    are copies: compare against an explicit softmax(QK^T)V computation."""
    model = make_model(n_head=4, n_kv_head=2)
    attn = model.blocks[0].attn
    x = torch.randn(1, 7, 64)
    cos, sin = model.rope_cos[:7], model.rope_sin[:7]
    with torch.no_grad():
        out = attn(x, cos, sin)
        q = attn.q_proj(x).view(1, 7, 4, 16).transpose(1, 2)
        k = attn.k_proj(x).view(1, 7, 2, 16).transpose(1, 2).repeat_interleave(2, dim=1)
        v = attn.v_proj(x).view(1, 7, 2, 16).transpose(1, 2).repeat_interleave(2, dim=1)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(16)
        scores = scores.masked_fill(torch.ones(7, 7).triu(1).bool(), float("-inf"))
        ref = attn.out_proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(1, 7, 64))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_rope_shapes_and_relative_positions():
    cos, sin = rope_tables(16, 32, 10000.0)
    assert cos.shape == sin.shape == (32, 16)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def rotated_dot(m, n):
        qm = apply_rope(q, cos[m : m + 1], sin[m : m + 1])
        kn = apply_rope(k, cos[n : n + 1], sin[n : n + 1])
        return (qm * kn).sum().item()

    # Rotation keeps the norm, and the score depends only on the offset between positions.
    assert apply_rope(q, cos[5:6], sin[5:6]).norm().item() == pytest.approx(q.norm().item(), rel=1e-5)
    assert rotated_dot(3, 1) == pytest.approx(rotated_dot(12, 10), rel=1e-4, abs=1e-5)
    assert rotated_dot(0, 0) == pytest.approx((q * k).sum().item(), rel=1e-5, abs=1e-6)
    assert rotated_dot(3, 1) != pytest.approx(rotated_dot(3, 2), rel=1e-3)


def test_cached_chunks_equal_one_full_forward():
    """Prefill, then a multi-token chunk, then single tokens through the cache give the logits
    of one full forward pass (this exercises the offset causal mask)."""
    model = make_model()
    idx = torch.randint(0, 97, (2, 19))
    cache = KVCache(model.cfg, 2, 48, "cpu", torch.float32)
    with torch.no_grad():
        full = model(idx)
        parts = [model(idx[:, :8], cache=cache), model(idx[:, 8:15], cache=cache)]
        parts += [model(idx[:, i : i + 1], cache=cache) for i in range(15, 19)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-4, atol=1e-4)


def test_rows_of_one_cache_at_different_lengths_each_match_their_own_forward_pass():
    """A server decodes several sequences of different lengths in one batch: each row of the
    cache keeps its own length, so every row's logits are those of its sequence alone."""
    model = make_model(seed=5)
    sequences = [torch.randint(0, 97, (n,)) for n in (3, 11, 7)]
    cache = KVCache(model.cfg, 3, 32, "cpu", torch.float32)
    with torch.no_grad():
        for row, seq in enumerate(sequences):  # prefill each row on its own, as the engine does
            alone = KVCache(model.cfg, 1, 32, "cpu", torch.float32)
            model(seq[None, :-1], cache=alone)
            cache.copy_row(row, alone)
        assert cache.lengths.tolist() == [2, 10, 6]
        stepped = model(torch.stack([seq[-1:] for seq in sequences]), cache=cache)[:, -1]  # one batched step
        for row, seq in enumerate(sequences):
            torch.testing.assert_close(stepped[row], model(seq[None])[0, -1], rtol=1e-4, atol=1e-4)
    assert cache.lengths.tolist() == [3, 11, 7]


def test_greedy_generation_with_cache_equals_full_forward():
    model = make_model(seed=3)
    prompt = [5, 17, 42, 8]
    with_cache = list(generate(model, prompt, 40, temperature=0, use_cache=True))
    without = list(generate(model, prompt, 40, temperature=0, use_cache=False))
    assert len(with_cache) == 40
    assert with_cache == without


def test_generation_past_max_seq_len_keeps_going():
    model = make_model(max_seq_len=16)
    out = list(generate(model, [1, 2, 3], 40, temperature=1.0, generator=torch.Generator().manual_seed(0)))
    assert len(out) == 40 and all(0 <= t < 97 for t in out)


def test_generation_stops_at_stop_token():
    model = make_model(seed=3)
    first = list(generate(model, [5, 17], 10, temperature=0))
    stop = first[3]
    out = list(generate(model, [5, 17], 10, temperature=0, stop_ids=[stop]))
    assert out == first[: first.index(stop) + 1]


def test_sampling_filters():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.5]])
    gen = torch.Generator().manual_seed(0)
    assert sample_next(logits, temperature=0).item() == 1
    assert {sample_next(logits, 1.0, top_k=1, generator=gen).item() for _ in range(20)} == {1}
    assert {sample_next(logits, 1.0, top_p=0.01, generator=gen).item() for _ in range(20)} == {1}
    assert {sample_next(logits, 1.0, top_k=2, generator=gen).item() for _ in range(200)} == {1, 2}
    # Probabilities 0.61, 0.22, 0.11, 0.05: top_p=0.8 keeps the first two (0.61 < 0.8 <= 0.83).
    assert {sample_next(logits, 1.0, top_p=0.8, generator=gen).item() for _ in range(300)} == {1, 2}


def test_parameter_count_and_flops():
    cfg = small_config(tie_embeddings=True)
    model = GPT(cfg)
    d, hd, hidden = cfg.d_model, cfg.head_dim, cfg.mlp_hidden
    per_layer = d * cfg.n_head * hd + 2 * d * cfg.n_kv_head * hd + cfg.n_head * hd * d + 3 * d * hidden + 2 * d
    expected = cfg.vocab_size * d + cfg.n_layer * per_layer + d
    assert model.num_params() == expected
    assert model.head.weight.data_ptr() == model.tok_emb.weight.data_ptr()
    assert model.flops_per_token(32) == 6 * expected + 12 * cfg.n_layer * d * 32

    untied = GPT(small_config(tie_embeddings=False))
    assert untied.num_params() == expected + cfg.vocab_size * d
    assert untied.num_matmul_params() == expected  # the lookup table does no matrix product


def test_residual_projections_have_scaled_init():
    torch.manual_seed(0)
    model = GPT(small_config(n_layer=8, d_model=256, n_head=4, n_kv_head=4))
    out_std = model.blocks[0].attn.out_proj.weight.std().item()
    q_std = model.blocks[0].attn.q_proj.weight.std().item()
    assert q_std == pytest.approx(0.02, rel=0.05)
    assert out_std == pytest.approx(0.02 / math.sqrt(16), rel=0.05)


def test_no_biases_and_loss_at_init_is_near_uniform():
    model = make_model()
    assert not any(name.endswith("bias") for name, _ in model.named_parameters())
    idx, targets = torch.randint(0, 97, (4, 32)), torch.randint(0, 97, (4, 32))
    with torch.no_grad():
        loss = model(idx, targets).item()
    assert abs(loss - math.log(97)) < 0.3


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="n_head"):
        GPT(small_config(d_model=66))
    with pytest.raises(ValueError, match="n_kv_head"):
        GPT(small_config(n_head=4, n_kv_head=3))
    model = make_model()
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, 49, dtype=torch.long))
