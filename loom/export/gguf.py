"""`loom export gguf --run R --out FILE.gguf`: a trained run in the file format llama.cpp and
Ollama read, written through the `gguf` package (llama.cpp's own Python writer).

The model is written as llama.cpp's `llama` architecture, the same mapping as the Hugging Face
export (`loom.export.hf`): the sizes as `llama.*` metadata, the tokenizer as byte-level BPE
(`tokenizer.ggml.model` "gpt2" with the GPT-2 pre-tokenizer, which is what loom's ByteLevel
pre-tokenizer with its regex is), every token with its type (loom's special tokens as control
tokens), the merges, the bos/eos/pad ids and the chat template as Jinja.

One difference from the Hugging Face export: llama.cpp's `llama` rotates *adjacent* pairs
(x[2i], x[2i+1]), the layout of Meta's original checkpoints, while loom (like transformers)
rotates (x[i], x[i + d/2]). So the rows of each head of the query and key projections are
reordered, taking row i + d/2 of a head to position 2i + 1 (`interleave_heads`): the same
attention, computed in llama.cpp's layout. (llama.cpp's converter does this to transformers'
Llama checkpoints for the same reason.)

Norm weights stay float32 whatever `dtype` (llama.cpp's own convention for 1-D tensors); a tied
head is not written (llama.cpp uses the embedding when `output.weight` is absent).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from loom.chat import END_OF_TURN, jinja_template
from loom.errors import ConfigError
from loom.export.hf import llama_refusal
from loom.tokenizer import SPECIAL_TOKENS

FILE_TYPES = {"float32": 0, "float16": 1, "bfloat16": 32}  # llama.cpp's LlamaFileType: ALL_F32, MOSTLY_F16, MOSTLY_BF16


def gguf_names(n_layer: int, tied: bool) -> dict[str, str]:
    """loom's parameter name -> llama.cpp's tensor name."""
    names = {"tok_emb.weight": "token_embd.weight", "final_norm.weight": "output_norm.weight"}
    for i in range(n_layer):
        a, b = f"blocks.{i}.", f"blk.{i}."
        names.update({
            a + "attn_norm.weight": b + "attn_norm.weight", a + "attn.q_proj.weight": b + "attn_q.weight",
            a + "attn.k_proj.weight": b + "attn_k.weight", a + "attn.v_proj.weight": b + "attn_v.weight",
            a + "attn.out_proj.weight": b + "attn_output.weight", a + "mlp_norm.weight": b + "ffn_norm.weight",
            a + "mlp.gate_proj.weight": b + "ffn_gate.weight", a + "mlp.up_proj.weight": b + "ffn_up.weight",
            a + "mlp.down_proj.weight": b + "ffn_down.weight",
        })
    if not tied:
        names["head.weight"] = "output.weight"
    return names


def interleave_heads(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Rows of a (heads * d, in) projection reordered within each head from rotate-half order
    (first halves, then second halves) to adjacent pairs: row i + d/2 goes next to row i."""
    rows, cols = weight.shape
    d = rows // heads
    return weight.reshape(heads, 2, d // 2, cols).transpose(1, 2).reshape(rows, cols)


def export_gguf(run_dir: str | os.PathLike, out: str | os.PathLike, dtype: str = "float32", say=print) -> Path:
    """Writes the run's newest checkpoint as one GGUF file (through a temporary file, fsynced,
    then renamed); returns its path."""
    import gguf

    from loom.checkpoint import load_trained_model

    if dtype not in FILE_TYPES:
        raise ConfigError(f"--dtype must be one of {', '.join(FILE_TYPES)}, not {dtype!r}")
    run_dir, out = Path(run_dir), Path(out)
    if out.suffix != ".gguf":
        raise ConfigError(f"--out {out}: give a file name ending in .gguf")
    model, tok, cfg = load_trained_model(run_dir)
    m = cfg.model
    if refusal := llama_refusal(m):
        raise ConfigError(f"{run_dir}: {refusal}")
    params = dict(model.named_parameters(remove_duplicate=False))
    names = gguf_names(m.n_layer, m.tie_embeddings)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    writer = gguf.GGUFWriter(str(tmp), "llama")
    try:
        writer.add_name(run_dir.resolve().name)
        writer.add_file_type(FILE_TYPES[dtype])
        writer.add_context_length(m.max_seq_len)
        writer.add_embedding_length(m.d_model)
        writer.add_block_count(m.n_layer)
        writer.add_feed_forward_length(m.mlp_hidden)
        writer.add_head_count(m.n_head)
        writer.add_head_count_kv(m.n_kv_head)
        writer.add_rope_dimension_count(m.head_dim)
        writer.add_rope_freq_base(m.rope_theta)
        writer.add_layer_norm_rms_eps(m.norm_eps)
        writer.add_vocab_size(m.vocab_size)
        add_tokenizer(writer, gguf, tok, run_dir / "tokenizer.json", m.vocab_size)

        for ours, theirs in names.items():
            weight = params[ours].detach().float()
            if ours.endswith("q_proj.weight"):
                weight = interleave_heads(weight, m.n_head)
            elif ours.endswith("k_proj.weight"):
                weight = interleave_heads(weight, m.n_kv_head)
            array = weight.numpy()
            if array.ndim == 1 or dtype == "float32":
                writer.add_tensor(theirs, np.ascontiguousarray(array, dtype=np.float32))
            elif dtype == "float16":
                writer.add_tensor(theirs, array.astype(np.float16))
            else:
                packed = gguf.quants.quantize(array, gguf.GGMLQuantizationType.BF16)
                writer.add_tensor(theirs, packed, raw_shape=packed.shape, raw_dtype=gguf.GGMLQuantizationType.BF16)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, out)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    say(f"[loom] exported {run_dir} ({model.num_params():,} parameters, {dtype}) as GGUF (llama) -> {out}")
    return out


def add_tokenizer(writer, gguf, tok, tokenizer_json: Path, vocab_size: int) -> None:
    """The byte-level BPE vocabulary, merges, token types, special ids and chat template."""
    spec = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    by_id = {i: piece for piece, i in spec["model"]["vocab"].items()}
    by_id.update({t["id"]: t["content"] for t in spec.get("added_tokens", [])})
    special = set(SPECIAL_TOKENS) | {t["content"] for t in spec.get("added_tokens", []) if t.get("special")}
    tokens, types = [], []
    for i in range(vocab_size):  # a padded vocabulary's unused ids get placeholder names
        piece = by_id.get(i, f"[PAD{i}]")
        tokens.append(piece)
        types.append(gguf.TokenType.CONTROL if piece in special else
                     gguf.TokenType.UNUSED if i not in by_id else gguf.TokenType.NORMAL)
    merges = [" ".join(m) if isinstance(m, list) else m for m in spec["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tok.bos_id)
    writer.add_eos_token_id(tok.eos_id)
    writer.add_eot_token_id(tok.token_id(END_OF_TURN))
    writer.add_pad_token_id(tok.pad_id)
    writer.add_add_bos_token(True)  # llama.cpp prepends <|bos|> to a prompt, as loom does
    # ...so the template leaves it out: llama.cpp tokenizes the rendered chat with its BOS added,
    # and a template that wrote one too would give two
    writer.add_chat_template(jinja_template(with_bos=False))
