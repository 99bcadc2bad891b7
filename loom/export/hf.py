"""`loom export hf --run R --out DIR`: a trained run as a Hugging Face `LlamaForCausalLM`.

loom's dense GPT is Llama's architecture, name for name: pre-norm blocks with RMSNorm (computed
in fp32 in both), grouped-query attention with rotary embeddings, SwiGLU MLPs, no biases, a
final RMSNorm and a head that may be tied to the embedding. So the export renames tensors and
writes the files transformers (and vLLM, TGI, llama.cpp's converter) read:

- `config.json`: `architectures` ["LlamaForCausalLM"], `model_type` "llama", the sizes,
  `num_key_value_heads`, `rope_theta`, `rms_norm_eps`, `max_position_embeddings`,
  `tie_word_embeddings`, the bos/eos/pad ids and `torch_dtype`;
- `model.safetensors`: the weights under transformers' names (a tied head is stored once, as
  transformers itself saves it);
- `generation_config.json`: bos, pad, and as eos both <|eos|> and <|end_of_turn|>, so chat
  generation stops at the end of the assistant's turn;
- `tokenizer.json` (the run's own), `tokenizer_config.json` (special tokens and loom's chat
  template as Jinja, `loom.chat.jinja_template`) and `special_tokens_map.json`.

Rotary embeddings need no permutation: loom rotates the pairs (x[i], x[i + d/2]) ("rotate
half", `loom.model.gpt.apply_rope`), which is the layout transformers' Llama uses, with the same
frequencies theta^(-2i/d). (Meta's original checkpoints rotate adjacent pairs (x[2i], x[2i+1]),
which is why transformers' own conversion script permutes q and k; loom's weights are already in
the layout transformers expects.) Tested: the logits of the exported model in transformers equal
loom's.

A MoE model is refused: no architecture in transformers represents loom's experts exactly (see
`llama_refusal`). The weights come from the run's newest valid checkpoint, sharded or not
(`loom.checkpoint.load_trained_model`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from loom.chat import END_OF_TURN, jinja_template
from loom.errors import ConfigError
from loom.tokenizer import BOS, EOS, PAD
from loom.util import atomic_write_text

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def hf_names(n_layer: int, tied: bool) -> dict[str, str]:
    """loom's parameter name -> transformers' Llama name."""
    names = {"tok_emb.weight": "model.embed_tokens.weight", "final_norm.weight": "model.norm.weight"}
    for i in range(n_layer):
        a, b = f"blocks.{i}.", f"model.layers.{i}."
        names.update({
            a + "attn_norm.weight": b + "input_layernorm.weight",
            a + "attn.q_proj.weight": b + "self_attn.q_proj.weight",
            a + "attn.k_proj.weight": b + "self_attn.k_proj.weight",
            a + "attn.v_proj.weight": b + "self_attn.v_proj.weight",
            a + "attn.out_proj.weight": b + "self_attn.o_proj.weight",
            a + "mlp_norm.weight": b + "post_attention_layernorm.weight",
            a + "mlp.gate_proj.weight": b + "mlp.gate_proj.weight",
            a + "mlp.up_proj.weight": b + "mlp.up_proj.weight",
            a + "mlp.down_proj.weight": b + "mlp.down_proj.weight",
        })
    if not tied:
        names["head.weight"] = "lm_head.weight"
    return names


def llama_refusal(cfg) -> str:
    """Why a model of `cfg` (a `ModelConfig`) has no exact Llama counterpart, or "" when it has one."""
    if cfg.moe.enabled:
        return _moe_refusal(cfg)
    unlike = [why for present, why in (
        (cfg.mlp != "swiglu", f"mlp = {cfg.mlp!r} (Llama's MLP is SwiGLU)"),
        (cfg.qk_norm, "qk_norm (Llama does not normalise queries and keys)"),
        (cfg.logit_softcap > 0, f"logit_softcap = {cfg.logit_softcap:g} (Llama's logits are not capped)"),
    ) if present]
    if unlike:
        return (f"this run's model has {'; '.join(unlike)}, which a Llama checkpoint cannot represent, so its "
                "export would compute something else. Export a run trained without them")
    return ""


def _moe_refusal(cfg) -> str:
    m = cfg.moe
    return (f"this run is a Mixture-of-Experts model ({m.n_experts} experts, top-{m.top_k}, {m.router} router"
            f"{f', {m.shared_experts} shared' if m.shared_experts else ''}"
            f"{', bias balancing' if m.bias_update_rate else ''}), and no transformers architecture represents "
            "it exactly: Mixtral has no shared experts and a softmax router only; Qwen2-MoE gates its shared "
            "expert with a sigmoid loom does not have; DeepSeek-V3 has shared experts, a sigmoid router and bias "
            "balancing but multi-head latent attention, not loom's grouped-query attention. Export a dense run")


def llama_config(cfg, tok, dtype: str) -> dict:
    end = tok.token_id(END_OF_TURN)
    return {**llama_shape(cfg.model), "bos_token_id": tok.bos_id, "eos_token_id": [tok.eos_id, end],
            "pad_token_id": tok.pad_id, "torch_dtype": dtype, "use_cache": True}


def llama_shape(m) -> dict:
    """The `config.json` fields that say the architecture of a dense `ModelConfig`."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": m.vocab_size,
        "hidden_size": m.d_model,
        "intermediate_size": m.mlp_hidden,
        "num_hidden_layers": m.n_layer,
        "num_attention_heads": m.n_head,
        "num_key_value_heads": m.n_kv_head,
        "head_dim": m.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": m.max_seq_len,
        "rms_norm_eps": m.norm_eps,
        "rope_theta": m.rope_theta,
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "tie_word_embeddings": m.tie_embeddings,
        "initializer_range": 0.02,
    }


def export_hf(run_dir: str | os.PathLike, out: str | os.PathLike, dtype: str = "float32", say=print) -> Path:
    """Writes the run's newest checkpoint as a transformers Llama model into `out` (a new or
    empty directory, filled through a temporary one so a failed export leaves nothing half
    written); returns `out`."""
    from safetensors.torch import save_file

    from loom.checkpoint import load_trained_model

    if dtype not in DTYPES:
        raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    run_dir, out = Path(run_dir), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} exists and is not an empty directory; give --out a new directory")
    model, tok, cfg = load_trained_model(run_dir)
    if refusal := llama_refusal(cfg.model):
        raise ConfigError(f"{run_dir}: {refusal}")
    tied = cfg.model.tie_embeddings
    names = hf_names(cfg.model.n_layer, tied)
    params = dict(model.named_parameters(remove_duplicate=False))
    unknown = sorted(set(params) - set(names) - ({"head.weight"} if tied else set()))
    if unknown:  # a model grown a part this export does not know: refuse rather than drop it
        raise ConfigError(f"{run_dir}: parameters {unknown} have no Llama counterpart")
    tensors = {hf: params[ours].detach().to(DTYPES[dtype]).contiguous() for ours, hf in names.items()}

    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        save_file(tensors, tmp / "model.safetensors", metadata={"format": "pt"})
        write_json(tmp / "config.json", llama_config(cfg, tok, dtype))
        end = tok.token_id(END_OF_TURN)
        write_json(tmp / "generation_config.json", {"bos_token_id": tok.bos_id, "eos_token_id": [tok.eos_id, end],
                                                    "pad_token_id": tok.pad_id, "do_sample": True,
                                                    "temperature": cfg.sample.temperature,
                                                    "top_k": cfg.sample.top_k, "top_p": cfg.sample.top_p})
        shutil.copyfile(run_dir / "tokenizer.json", tmp / "tokenizer.json")
        specials = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD}
        write_json(tmp / "tokenizer_config.json", {
            "tokenizer_class": "PreTrainedTokenizerFast", **specials, "chat_template": jinja_template(),
            "model_max_length": cfg.model.max_seq_len, "add_bos_token": False, "add_eos_token": False,
            "clean_up_tokenization_spaces": False})
        write_json(tmp / "special_tokens_map.json", specials)
        for path in tmp.iterdir():  # on disk before the directory takes its name
            path.chmod(0o644)
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    say(f"[loom] exported {run_dir} ({model.num_params():,} parameters, {dtype}) as LlamaForCausalLM -> {out}")
    return out


def write_json(path: Path, obj: dict) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")
