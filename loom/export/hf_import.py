"""`loom import hf --model DIR --out RUN`: a local Llama- or Mistral-shaped checkpoint as a loom run.

DIR holds what `save_pretrained` writes: `config.json`, the weights as `*.safetensors` (one file
or shards), and `tokenizer.json`. The config is checked before any weight is read, and every
shape loom's GPT cannot represent is refused naming its key: biases (`attention_bias`,
`mlp_bias`, and Qwen2's q/k/v biases, which its architecture always has), another activation
(`hidden_act`), scaled or partial rotary (`rope_scaling`, `partial_rotary_factor`), sliding-window
attention (`sliding_window`), a head width other than hidden / heads (`head_dim`), an MLP width
loom's rounding to 64 cannot express (`intermediate_size`).

The weights are renamed (the inverse of `loom.export.hf`'s names) into a step-0 checkpoint of
weights alone (`loom.checkpoint.save_weights_checkpoint`): `loom train` on the run starts from
them with a fresh optimizer, `loom sft --run RUN` fine-tunes them, `loom serve` serves them.

The tokenizer is kept as it is, with loom's special tokens (`<|bos|>`, `<|eos|>`, `<|pad|>`, the
chat tokens) added where it lacks them: they get new ids after the vocabulary, and the embedding
(and an untied head) grows by as many rows, each the mean of the existing rows, so every logit
of the original vocabulary is unchanged. Note that loom starts a sequence with `<|bos|>`, which
an imported model has not seen; fine-tuning teaches it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from loom.errors import ConfigError
from loom.export.hf import hf_names
from loom.tokenizer import SPECIAL_TOKENS

ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM"}


def read_hf_config(model_dir: Path) -> dict:
    path = model_dir / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path} cannot be read ({e.strerror or e}): --model must be a directory that "
                          "save_pretrained wrote") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return config


def check_representable(config: dict, where: str) -> None:
    """Refuses, naming the key, what loom's GPT cannot represent."""
    kind = config.get("model_type")
    if kind == "qwen2":
        raise ConfigError(f"{where}: model_type 'qwen2': Qwen2's q/k/v projections always carry biases, which "
                          "loom's attention does not have")
    if kind not in ARCHITECTURES:
        raise ConfigError(f"{where}: model_type {kind!r} is not one loom imports; it reads "
                          f"{', '.join(ARCHITECTURES)} checkpoints")
    required = ["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size"]
    missing = [key for key in required if not isinstance(config.get(key), int)]
    if missing:
        raise ConfigError(f"{where}: {', '.join(missing)} missing or not an integer")
    for key in ("attention_bias", "mlp_bias"):
        if config.get(key):
            raise ConfigError(f"{where}: {key} is true: loom's projections have no biases")
    if config.get("hidden_act", "silu") != "silu":
        raise ConfigError(f"{where}: hidden_act {config['hidden_act']!r}: loom's MLP is SwiGLU (silu)")
    rope = config.get("rope_scaling") or {}
    parameters = config.get("rope_parameters") or {}
    if rope or parameters.get("rope_type", "default") != "default":
        raise ConfigError(f"{where}: rope_scaling {rope or parameters}: loom's rotary embedding is unscaled")
    if config.get("partial_rotary_factor", 1.0) != 1.0:
        raise ConfigError(f"{where}: partial_rotary_factor {config['partial_rotary_factor']}: loom rotates "
                          "every dimension of a head")
    if config.get("sliding_window") and config.get("use_sliding_window", True):
        raise ConfigError(f"{where}: sliding_window {config['sliding_window']}: loom's attention sees the "
                          "whole context")
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    if config.get("head_dim") not in (None, hidden // heads) or hidden % heads:
        raise ConfigError(f"{where}: head_dim {config.get('head_dim')} with hidden_size {hidden} and "
                          f"{heads} heads: loom's heads are hidden_size / num_attention_heads wide")
    if config["intermediate_size"] % 64:
        raise ConfigError(f"{where}: intermediate_size {config['intermediate_size']} is not a multiple of 64, "
                          "which loom's model.mlp_ratio (rounded to 64) cannot express")


def import_hf(model_dir: str | os.PathLike, out: str | os.PathLike, say=print) -> Path:
    """Writes the run `out` (a new directory) from the checkpoint in `model_dir`; returns it."""
    from safetensors import safe_open
    from tokenizers import AddedToken
    from tokenizers import Tokenizer as HFTokenizer

    from loom.checkpoint import save_weights_checkpoint
    from loom.config import TrainConfig, load_config
    from loom.model import GPT
    from loom.util import atomic_write_text

    model_dir, out = Path(model_dir), Path(out)
    config = read_hf_config(model_dir)
    check_representable(config, str(model_dir / "config.json"))
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ConfigError(f"{model_dir} has no *.safetensors weights (save with safe_serialization=True)")
    if not (model_dir / "tokenizer.json").is_file():
        raise ConfigError(f"{model_dir} has no tokenizer.json (a fast tokenizer's file)")
    if out.exists():
        raise ConfigError(f"{out} exists; give --out a new run directory")

    hf_tok = HFTokenizer.from_file(str(model_dir / "tokenizer.json"))
    added = [t for t in SPECIAL_TOKENS if hf_tok.token_to_id(t) is None]
    hf_tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in added])
    vocab = max(config["vocab_size"], hf_tok.get_vocab_size(with_added_tokens=True))
    tied = bool(config.get("tie_word_embeddings", False))
    rope_theta = (config.get("rope_parameters") or {}).get("rope_theta", config.get("rope_theta", 10000.0))
    overrides = [f'run.name="{out.name}"', f'run.dir="{out.parent}"',
                 f"tokenizer.vocab_size={hf_tok.get_vocab_size(with_added_tokens=True)}",
                 f"model.vocab_size={vocab}", f"model.d_model={config['hidden_size']}",
                 f"model.n_layer={config['num_hidden_layers']}", f"model.n_head={config['num_attention_heads']}",
                 f"model.n_kv_head={config.get('num_key_value_heads') or config['num_attention_heads']}",
                 f"model.mlp_ratio={config['intermediate_size'] / config['hidden_size']!r}",
                 f"model.max_seq_len={config.get('max_position_embeddings', 2048)}",
                 f"model.rope_theta={float(rope_theta)!r}",
                 f"model.norm_eps={float(config.get('rms_norm_eps', 1e-6))!r}",
                 f"model.tie_embeddings={'true' if tied else 'false'}"]
    context = config.get("max_position_embeddings", 2048)
    overrides.append(f"train.seq_len={min(TrainConfig().seq_len, context)}")  # training windows fit the context
    cfg = load_config(None, overrides)
    if cfg.model.mlp_hidden != config["intermediate_size"]:
        raise ConfigError(f"{model_dir}: intermediate_size {config['intermediate_size']} came out as "
                          f"{cfg.model.mlp_hidden}")

    with torch.device("meta"):
        model = GPT(cfg.model)
    names = {theirs: ours for ours, theirs in hf_names(cfg.model.n_layer, tied).items()}
    weights: dict[str, torch.Tensor] = {}
    for file in files:
        with safe_open(file, "pt") as f:
            for key in f.keys():
                if key in names:
                    weights[names[key]] = f.get_tensor(key).float()
                elif key == "lm_head.weight" and tied:
                    continue  # a tied head saved anyway: the embedding is the same tensor
                elif not key.endswith("rotary_emb.inv_freq"):
                    raise ConfigError(f"{file.name}: tensor {key} has no place in loom's GPT")
    expected = set(names.values())
    if set(weights) != expected:
        raise ConfigError(f"{model_dir}: weights missing for {sorted(expected - set(weights))[:4]}")
    for name in ("tok_emb.weight", *(() if tied else ("head.weight",))):
        rows = weights[name]
        if rows.shape[0] < vocab:  # loom's special tokens, new: the mean row, so old logits stay as they were
            weights[name] = torch.cat([rows, rows.mean(0, keepdim=True).expand(vocab - rows.shape[0], -1)])
    if tied:
        weights["head.weight"] = weights["tok_emb.weight"]
    model = model.to_empty(device="cpu")
    if tied:
        model.head.weight = model.tok_emb.weight
    model.load_state_dict(weights, strict=True)
    model.reset_buffers()

    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        hf_tok.save(str(tmp / "tokenizer.json"))
        atomic_write_text(tmp / "config.toml", cfg.to_toml())
        save_weights_checkpoint(tmp / "checkpoints", model, {"imported_from": str(model_dir.resolve()),
                                                             "architecture": config.get("model_type")})
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    say(f"[loom] imported {model_dir} ({model.num_params():,} parameters"
        + (f"; added {len(added)} special tokens loom needs: {', '.join(added)}" if added else "")
        + f") as a loom run -> {out}")
    return out
