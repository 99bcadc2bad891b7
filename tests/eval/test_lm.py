"""LoomLM's scores and generations against direct forward passes of the model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from loom.data import iter_documents, shard_dir
from loom.errors import DataError
from loom.eval.bpb import bits_per_byte
from loom.eval.lm import LoomLM, cut_at_stop, sliding_windows
from loom.model import generate


@pytest.mark.parametrize("n, max_len", [(1, 8), (2, 8), (8, 8), (9, 8), (30, 8), (31, 7), (100, 16)])
def test_sliding_windows_score_each_token_once_with_context(n, max_len):
    scored = []
    for start, first in sliding_windows(n, max_len):
        end = min(n, start + max_len)
        assert end - start <= max_len
        positions = list(range(start + first, end))
        if start > 0:
            assert first >= max_len // 2  # at least half a window of context
        scored += positions
    assert scored == list(range(1, n))


@torch.no_grad()
def brute_force_nll(model, ids, max_len):
    """Each token's NLL from a forward pass over exactly the window sliding_windows gives it."""
    out = []
    for start, first in sliding_windows(len(ids), max_len):
        window = torch.tensor([ids[start : start + max_len]])
        logp = torch.log_softmax(model(window[:, :-1]), -1)[0]
        for j in range(first, window.shape[1]):
            out.append(-float(logp[j - 1, window[0, j]]))
    return np.array(out)


def test_token_nll_matches_forward_passes(tiny_run):
    lm = LoomLM.from_run(tiny_run[0], batch_size=3)
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, lm.tok.vocab_size, size=n).tolist() for n in (2, 5, 64, 65, 150, 40)]
    got = lm.token_nll_batch(seqs)
    for ids, nll in zip(seqs, got):
        assert nll.shape == (len(ids) - 1,)
        np.testing.assert_allclose(nll, brute_force_nll(lm.model, ids, lm.max_len), rtol=1e-4, atol=1e-4)
    # the whole-context case by hand: one forward pass, log-softmax, the targets' entries
    ids = seqs[3][:40]
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(torch.tensor([ids[:-1]])), -1)[0]
    hand = [-float(logp[i, ids[i + 1]]) for i in range(len(ids) - 1)]
    np.testing.assert_allclose(lm.token_nll(ids), hand, rtol=1e-4, atol=1e-5)


def test_bits_per_byte_equals_hand_computation(short_docs):
    cfg, lm = short_docs
    got = bits_per_byte(lm, shard_dir(cfg), split="train")
    nats, n_bytes, docs = {}, {}, {}
    for ids, _, domain in iter_documents(shard_dir(cfg), "train"):
        ids = ids.tolist()
        assert ids[0] == lm.tok.bos_id and ids[-1] == lm.tok.eos_id and len(ids) <= lm.max_len
        with torch.no_grad():
            logp = torch.log_softmax(lm.model(torch.tensor([ids[:-1]])), -1)[0]
        text_tokens = ids[1:-1]  # <|bos|> is context; <|eos|> has no bytes and is not scored
        nats[domain] = nats.get(domain, 0.0) - sum(float(logp[i, t]) for i, t in enumerate(text_tokens))
        n_bytes[domain] = n_bytes.get(domain, 0) + len(lm.tok.decode(text_tokens).encode("utf-8"))
        docs[domain] = docs.get(domain, 0) + 1
    assert set(got) == {*nats, "all"} and {"text", "code:python"} <= set(nats)
    for domain in nats:
        assert got[domain]["docs"] == docs[domain]
        assert got[domain]["bytes"] == n_bytes[domain]
        assert got[domain]["bits_per_byte"] == pytest.approx(nats[domain] / math.log(2) / n_bytes[domain], rel=1e-5)
    total = sum(nats.values()) / math.log(2) / sum(n_bytes.values())
    assert got["all"]["bits_per_byte"] == pytest.approx(total, rel=1e-5)
    # an untrained model knows nothing: about log2(vocab) bits per token
    assert got["all"]["bits_per_byte"] > 1.0


def test_bits_per_byte_cap_takes_documents_in_order(short_docs):
    cfg, lm = short_docs
    capped = bits_per_byte(lm, shard_dir(cfg), split="train", max_bytes_per_domain=100)
    for domain, row in capped.items():
        if domain != "all":
            assert 1 <= row["docs"] and row["bytes"] - 100 < max(
                b for _, b, d in iter_documents(shard_dir(cfg), "train") if d == domain)


def test_bits_per_byte_refuses_shards_of_another_tokenizer(short_docs, tiny_run):
    cfg, _ = short_docs  # 300 pieces; the tiny run's tokenizer has 512 others
    with pytest.raises(DataError, match="tokenized with another tokenizer than the model's"):
        bits_per_byte(LoomLM.from_run(tiny_run[0]), shard_dir(cfg), split="val")


def test_loglikelihood_is_the_continuations_share_of_the_forward_pass(tiny_run):
    lm = LoomLM.from_run(tiny_run[0], batch_size=2)
    pairs = [("def add(a, b):", " return a + b"), ("import", " os"), ("The answer is ", "42"), ("x", "y" * 300)]
    got = lm.loglikelihood(pairs)
    for (context, continuation), (ll, greedy) in zip(pairs, got):
        ctx = context.rstrip(" ")
        cont = context[len(ctx):] + continuation
        whole = [lm.tok.bos_id, *lm.tok.encode(ctx + cont)]
        n_cont = len(whole) - 1 - len(lm.tok.encode(ctx))
        whole = whole[-(lm.max_len + 1):]  # too long: the oldest tokens go, then the continuation's own
        n_cont = min(n_cont, len(whole) - 1)
        with torch.no_grad():
            logp = torch.log_softmax(lm.model(torch.tensor([whole[:-1]])), -1)[0]
        rows = range(len(whole) - 1 - n_cont, len(whole) - 1)
        assert ll == pytest.approx(sum(float(logp[i, whole[i + 1]]) for i in rows), rel=1e-4, abs=1e-4)
        assert greedy == all(int(logp[i].argmax()) == whole[i + 1] for i in rows)
    # the rolling log-likelihood of a text is minus the sum of its token NLLs after <|bos|>
    text = "for i in range(10):\n    print(i)\n"
    ids = [lm.tok.bos_id, *lm.tok.encode(text)]
    assert lm.rolling_loglikelihood([text])[0] == pytest.approx(-float(lm.token_nll(ids).sum()), rel=1e-6)


def test_greedy_generation_matches_loom_generate(tiny_run):
    lm = LoomLM.from_run(tiny_run[0])
    prompt = "def "
    ids = [lm.tok.bos_id, *lm.tok.encode(prompt)]
    reference = lm.tok.decode([t for t in generate(lm.model, ids, 20, temperature=0.0) if t != lm.tok.eos_id])
    (got,) = lm.generate(prompt, 20, stop=())
    assert got == reference
    (cut,) = lm.generate(prompt, 20, stop=[reference[3:5]] if len(reference) > 5 else ["\n"])
    assert reference.startswith(cut) and len(cut) <= len(reference)


def test_samples_are_seeded_and_batched(tiny_run):
    lm = LoomLM.from_run(tiny_run[0])
    a = lm.generate("import ", 12, stop=(), n=4, temperature=1.0, seed=7)
    b = lm.generate("import ", 12, stop=(), n=4, temperature=1.0, seed=7)
    c = lm.generate("import ", 12, stop=(), n=4, temperature=1.0, seed=8)
    assert a == b and len(a) == 4 and a != c
    assert len(set(a)) > 1  # rows are sampled independently


def test_long_prompt_keeps_room_for_the_answer(tiny_run):
    """A prompt longer than the context loses its oldest tokens, not the answer's room: the answer
    is what greedy decoding gives after the prompt's latest tokens, all 10 of them."""
    lm = LoomLM.from_run(tiny_run[0])
    prompt = "word " * 500
    (out,) = lm.generate(prompt, 10, stop=())
    ids = lm.encode(prompt)
    assert len(ids) > lm.max_len
    window = [lm.tok.bos_id, *ids[-(lm.max_len - 10 - 1):]]
    expected = list(generate(lm.model, window, 10, temperature=0, stop_ids=[lm.tok.eos_id]))
    assert len(expected) == 10 or expected[-1] == lm.tok.eos_id
    assert out == lm.tok.decode([t for t in expected if t != lm.tok.eos_id])


def test_cut_at_stop():
    assert cut_at_stop("\n 42\nmore", ["\n"]) == ""
    assert cut_at_stop("\n 42\nmore", ["\n"], skip_leading_whitespace=True) == "\n 42"
    assert cut_at_stop("  \n", ["\n"], skip_leading_whitespace=True) == "  \n"  # no text yet: nothing to cut
    assert cut_at_stop("abc\ndef", ["\n"]) == "abc"
    assert cut_at_stop("abc", ["\n", "x"]) == "abc"
    assert cut_at_stop("a\ndef g", ["\ndef", "\n"]) == "a"
