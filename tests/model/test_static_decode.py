"""The static cache and the batched, compiled decoder give the tokens of the one-row path."""

import shutil

import pytest
import torch

from loom.model import GPT, KVCache, ModelConfig, StaticDecoder, generate

PROMPTS = [[5, 17, 42, 8], [3], [60, 61, 62, 63, 64, 65, 66, 1, 2]]  # of different lengths


def make_model(seed=3, **over) -> GPT:
    torch.manual_seed(seed)
    base = dict(n_layer=2, n_head=4, n_kv_head=2, d_model=64, vocab_size=97, max_seq_len=48)
    return GPT(ModelConfig(**{**base, **over})).eval()


def one_at_a_time(model, prompts, n, stop_ids=()):
    return [list(generate(model, p, n, temperature=0, stop_ids=stop_ids)) for p in prompts]


def test_a_static_cache_gives_the_logits_of_a_dynamic_one():
    model = make_model()
    idx = torch.randint(0, 97, (2, 12))
    dynamic = KVCache(model.cfg, 2, 48, "cpu", torch.float32)
    static = KVCache(model.cfg, 2, 48, "cpu", torch.float32, static=True)
    with torch.no_grad():
        for chunk in (idx[:, :7], idx[:, 7:8], idx[:, 8:]):
            torch.testing.assert_close(model(chunk, cache=static), model(chunk, cache=dynamic), rtol=0, atol=1e-5)
    assert static.length == dynamic.length == 12
    with pytest.raises(ValueError, match="static cache of 64 positions exceeds max_seq_len 48"):
        KVCache(model.cfg, 1, 64, "cpu", torch.float32, static=True)


def test_batched_greedy_decode_gives_each_rows_own_tokens():
    model = make_model()
    decoder = StaticDecoder(model, batch_size=4, compile=False)
    assert decoder.generate(PROMPTS, 30) == one_at_a_time(model, PROMPTS, 30)
    # a second call reuses the cache from nothing; fewer rows than the batch size is fine
    assert decoder.generate(PROMPTS[:1], 12) == one_at_a_time(model, PROMPTS[:1], 12)
    # each row stops at its own stop token and keeps it; the others go on
    stop = one_at_a_time(model, PROMPTS[:1], 30)[0][4]
    assert decoder.generate(PROMPTS, 30, stop_ids=[stop]) == one_at_a_time(model, PROMPTS, 30, stop_ids=[stop])
    sampled = [decoder.generate(PROMPTS, 20, temperature=1.0, top_k=10, generator=torch.Generator().manual_seed(1))
               for _ in range(2)]
    assert sampled[0] == sampled[1] and all(len(row) == 20 and all(0 <= t < 97 for t in row) for row in sampled[0])


def test_bad_requests_are_refused_before_work():
    decoder = StaticDecoder(make_model(), batch_size=2, compile=False)
    with pytest.raises(ValueError, match="give 1 to 2 prompts"):
        decoder.generate(PROMPTS, 4)
    with pytest.raises(ValueError, match="at least one token"):
        decoder.generate([[1], []], 4)
    with pytest.raises(ValueError, match="a prompt of 9 tokens and 40 new ones exceed the cache's 48 positions"):
        decoder.generate([PROMPTS[2]], 40)


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="torch.compile's CPU backend needs a C compiler, and none is installed")
def test_the_compiled_step_gives_the_eager_tokens():
    model = make_model()
    compiled = StaticDecoder(model, batch_size=3, compile=True)
    assert compiled.generate(PROMPTS, 24) == one_at_a_time(model, PROMPTS, 24)
    assert compiled.generate(PROMPTS[1:], 8) == one_at_a_time(model, PROMPTS[1:], 8)  # another batch: recompiled
