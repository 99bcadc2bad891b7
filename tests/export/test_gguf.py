"""`loom export gguf`: the file reads back with gguf's own reader, every tensor, shape and
metadata key; and the reordering of query and key rows is the one that makes llama.cpp's
adjacent-pair rotary compute loom's attention."""

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFReader

from conftest import run_loom
from loom.chat import END_OF_TURN, Message, jinja_template, render
from loom.checkpoint import load_trained_model
from loom.export.gguf import export_gguf, gguf_names, interleave_heads
from loom.model.gpt import apply_rope, rope_tables


def value(reader, key):
    field = reader.fields[key]
    if len(field.data) > 1 or key == "tokenizer.ggml.tokens":  # arrays
        return [bytes(field.parts[i]).decode() if field.types[-1].name == "STRING" else field.parts[i][0]
                for i in field.data]
    part = field.parts[field.data[0]]
    return bytes(part).decode() if field.types[0].name == "STRING" else part[0]


def test_the_file_reads_back_with_every_tensor_shape_and_key(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    model, tok, cfg = load_trained_model(run_dir)
    m = cfg.model
    path = export_gguf(run_dir, tmp_path / "tiny.gguf", say=lambda _: None)
    reader = GGUFReader(path)

    names = gguf_names(m.n_layer, m.tie_embeddings)
    params = dict(model.named_parameters(remove_duplicate=False))
    tensors = {t.name: t for t in reader.tensors}
    assert set(tensors) == set(names.values())
    for ours, theirs in names.items():
        stored = torch.from_numpy(tensors[theirs].data.copy())
        expected = params[ours].detach()
        if ours.endswith("q_proj.weight"):
            expected = interleave_heads(expected, m.n_head)
        elif ours.endswith("k_proj.weight"):
            expected = interleave_heads(expected, m.n_kv_head)
        assert stored.shape == expected.shape and torch.equal(stored, expected), theirs

    assert value(reader, "general.architecture") == "llama"
    assert value(reader, "llama.context_length") == m.max_seq_len
    assert value(reader, "llama.embedding_length") == m.d_model and value(reader, "llama.block_count") == m.n_layer
    assert value(reader, "llama.feed_forward_length") == m.mlp_hidden
    assert value(reader, "llama.attention.head_count") == m.n_head
    assert value(reader, "llama.attention.head_count_kv") == m.n_kv_head
    assert value(reader, "llama.rope.freq_base") == m.rope_theta
    assert abs(value(reader, "llama.attention.layer_norm_rms_epsilon") - m.norm_eps) < 1e-12
    assert value(reader, "tokenizer.ggml.model") == "gpt2"
    tokens = value(reader, "tokenizer.ggml.tokens")
    assert len(tokens) == m.vocab_size and tokens[tok.bos_id] == "<|bos|>"
    assert value(reader, "tokenizer.ggml.bos_token_id") == tok.bos_id
    assert value(reader, "tokenizer.ggml.eos_token_id") == tok.eos_id
    assert value(reader, "tokenizer.ggml.eot_token_id") == tok.token_id(END_OF_TURN)
    assert value(reader, "tokenizer.chat_template") == jinja_template(with_bos=False)  # llama.cpp adds the BOS
    assert len(reader.fields["tokenizer.ggml.merges"].data) > 100


def test_half_precision_keeps_the_norms_in_float32(tiny_run, tmp_path):
    for dtype, kind in (("float16", GGMLQuantizationType.F16), ("bfloat16", GGMLQuantizationType.BF16)):
        reader = GGUFReader(export_gguf(tiny_run[0], tmp_path / f"{dtype}.gguf", dtype=dtype, say=lambda _: None))
        for t in reader.tensors:
            assert t.tensor_type == (GGMLQuantizationType.F32 if "norm" in t.name else kind), t.name
    bad = run_loom("export", "gguf", "--run", str(tiny_run[0]), "--out", str(tmp_path / "x.bin"), cwd=tmp_path,
                   ok=False)
    assert "ending in .gguf" in bad.stderr and "Traceback" not in bad.stderr


def rope_adjacent(x, cos, sin):
    """Rotary over adjacent pairs (x[2i], x[2i+1]), as llama.cpp's llama (and Meta's code) does."""
    even, odd = x[..., 0::2], x[..., 1::2]
    c, s = cos[..., : x.shape[-1] // 2], sin[..., : x.shape[-1] // 2]
    return torch.stack([even * c - odd * s, even * s + odd * c], dim=-1).flatten(-2)


def test_interleaved_rows_under_adjacent_pair_rotary_give_loom_attention_scores():
    torch.manual_seed(0)
    heads, d, width, positions = 4, 16, 64, 12
    wq, wk = torch.randn(heads * d, width), torch.randn(heads * d, width)
    x = torch.randn(positions, width)
    cos, sin = rope_tables(d, positions, 10000.0)

    def scores(rope, wq, wk):  # (heads, T, T): each head's query-key dot products after rotary
        q = rope((x @ wq.T).view(positions, heads, d).transpose(0, 1), cos, sin)
        k = rope((x @ wk.T).view(positions, heads, d).transpose(0, 1), cos, sin)
        return q @ k.transpose(-1, -2)

    ours = scores(apply_rope, wq, wk)
    theirs = scores(rope_adjacent, interleave_heads(wq, heads), interleave_heads(wk, heads))
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-3)
    plain = scores(rope_adjacent, wq, wk)
    assert not torch.allclose(plain, ours, rtol=1e-2, atol=1e-1)  # without the reordering they differ


def test_llama_cpp_computes_loom_logits_and_tokens(tiny_run, tmp_path):
    """Where llama-cpp-python is installed (it builds llama.cpp from source: about 4 minutes on
    2 cores, more than CI can spare, so CI does not install it): llama.cpp reads the file,
    tokenizes as loom does, renders the chat as loom does, and its logits are loom's to within
    1e-3 (max absolute difference; measured 1.0e-4 in fp32) and KL 1e-6 (measured 1e-9)."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed "
                                    "(pip install llama-cpp-python builds it, ~4 minutes)")
    import jinja2

    run_dir, _ = tiny_run
    model, tok, cfg = load_trained_model(run_dir)
    path = export_gguf(run_dir, tmp_path / "tiny.gguf", say=lambda _: None)
    llm = llama_cpp.Llama(model_path=str(path), logits_all=True, n_ctx=64, n_batch=64, n_threads=2, verbose=False)
    try:
        text = "def add(a, b):\n    return a + b\n\nclass Point:\n    x = 1\n"
        assert llm.tokenize(text.encode(), add_bos=False, special=False) == tok.encode(text)
        conversation = [Message("system", "Be brief."), Message("user", "Hi there"), Message("assistant", "Hello.")]
        rendered = jinja2.Template(jinja_template(with_bos=False)).render(
            messages=[{"role": m.role, "content": m.content} for m in conversation], add_generation_prompt=False)
        assert llm.tokenize(rendered.encode(), add_bos=True, special=True) == render(tok, conversation).ids

        prompt = [tok.bos_id, *tok.encode(text)]
        llm.reset()
        llm.eval(prompt)
        theirs = np.array(llm.scores[:len(prompt)], dtype=np.float64)
    finally:
        llm.close()
    with torch.no_grad():
        ours = model(torch.tensor([prompt]))[0].double().numpy()
    assert np.abs(ours - theirs).max() <= 1e-3
    log_p, log_q = (x - np.logaddexp.reduce(x, axis=-1, keepdims=True) for x in (ours, theirs))
    assert (np.exp(log_p) * (log_p - log_q)).sum(-1).max() <= 1e-6
