"""`loom export hf`: small trained runs of several shapes load in transformers as
LlamaForCausalLM with loom's logits and greedy tokens, and the exported tokenizer's chat
template renders loom's ids."""

import json

import pytest
import torch

from conftest import run_loom, tiny_config
from loom.chat import Message, parse_messages, render
from loom.checkpoint import load_trained_model
from loom.export import export_hf
from loom.model import generate

SHAPES = {  # name: --set overrides of the tiny run (context 128 leaves room for 64 new tokens)
    "gqa-tied": ["model.n_kv_head=2"],
    "full-attention-untied": ["model.n_kv_head=4", "model.tie_embeddings=false"],
    "one-kv-head-padded-vocab": ["model.n_kv_head=1", "model.tie_embeddings=false", "model.vocab_size=640"],
}
CONVERSATIONS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 12 * 7?"},
     {"role": "assistant", "content": "84"}, {"role": "user", "content": "And 12 * 8?"}],
    [{"role": "user", "content": "What is 3 + 4?"},
     {"role": "assistant", "content": None, "tool_calls": [
         {"type": "function", "function": {"name": "calculator", "arguments": "{\"expression\": \"3 + 4\"}"}}]},
     {"role": "tool", "content": "7"}, {"role": "assistant", "content": "It is 7."}],
]


@pytest.fixture(scope="module")
def exported(tiny_root, tmp_path_factory):
    """{shape: (loom run directory, export directory)}, each trained a few steps."""
    from loom.train import train

    out = {}
    for name, extra in SHAPES.items():
        cfg = tiny_config(tiny_root, f"export-{name}", extra=["model.max_seq_len=128", *extra])
        train(cfg)
        out[name] = (cfg.run_dir, export_hf(cfg.run_dir, tmp_path_factory.mktemp("hf") / name, say=lambda _: None))
    return out


@pytest.mark.parametrize("shape", SHAPES)
def test_transformers_gives_loom_logits_and_greedy_tokens(exported, shape):
    from transformers import AutoModelForCausalLM

    run_dir, out = exported[shape]
    ours, tok, cfg = load_trained_model(run_dir)
    theirs = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert type(theirs).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in theirs.parameters()) == ours.num_params()
    prompts = torch.randint(0, cfg.model.vocab_size, (3, 100), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = ours(prompts), theirs(prompts).logits
    assert (a - b).abs().max().item() <= 1e-4
    p, q = a.double().log_softmax(-1), b.double().log_softmax(-1)  # in float64: fp32 rounding is ~1e-7
    kl = (p.exp() * (p - q)).sum(-1)  # KL(loom || transformers) per position
    assert kl.max().item() <= 1e-9

    prompt = [tok.bos_id, *tok.encode("def add(a, b):")]
    expected = list(generate(ours, prompt, 64, temperature=0))
    theirs.generation_config.eos_token_id = None  # 64 tokens, as loom's generate writes them
    got = theirs.generate(torch.tensor([prompt]), max_new_tokens=64, do_sample=False,
                          pad_token_id=tok.pad_id)[0, len(prompt):].tolist()
    assert got == expected and len(got) == 64


def test_the_files_say_what_transformers_and_vllm_read(exported):
    run_dir, out = exported["full-attention-untied"]
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["model_type"] == "llama"
    assert config["num_key_value_heads"] == 4 and config["tie_word_embeddings"] is False
    assert config["max_position_embeddings"] == 128 and config["torch_dtype"] == "float32"
    from safetensors import safe_open

    with safe_open(out / "model.safetensors", "pt") as f:
        names = set(f.keys())
    assert "lm_head.weight" in names and "model.layers.1.self_attn.o_proj.weight" in names
    assert not any(n.startswith("blocks.") for n in names)
    tied = exported["gqa-tied"][1]
    with safe_open(tied / "model.safetensors", "pt") as f:
        assert "lm_head.weight" not in set(f.keys())
    generation = json.loads((out / "generation_config.json").read_text())
    assert len(generation["eos_token_id"]) == 2


def test_apply_chat_template_renders_the_ids_loom_renders(exported):
    from transformers import AutoTokenizer

    run_dir, out = exported["gqa-tied"]
    _, tok, _ = load_trained_model(run_dir)
    theirs = AutoTokenizer.from_pretrained(out)
    for conversation in CONVERSATIONS:
        for add_prompt in (False, True):
            text = theirs.apply_chat_template(conversation, tokenize=False, add_generation_prompt=add_prompt)
            ours = render(tok, parse_messages(conversation), add_generation_prompt=add_prompt).ids
            assert theirs.encode(text, add_special_tokens=False) == ours
    assert theirs.decode(render(tok, [Message("user", "hi")]).ids, skip_special_tokens=True).strip() == "hi"


def test_half_precision_and_refusals(exported, tiny_root, tmp_path):
    run_dir, _ = exported["gqa-tied"]
    half = export_hf(run_dir, tmp_path / "half", dtype="bfloat16", say=lambda _: None)
    from safetensors import safe_open

    with safe_open(half / "model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    assert json.loads((half / "config.json").read_text())["torch_dtype"] == "bfloat16"

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    taken = run_loom("export", "hf", "--run", str(run_dir), "--out", str(tmp_path / "full"), cwd=tmp_path, ok=False)
    assert "not an empty directory" in taken.stderr and (tmp_path / "full" / "keep.txt").read_text() == "mine"
    bad = run_loom("export", "hf", "--run", str(run_dir), "--out", str(tmp_path / "x"), "--dtype", "int4",
                   cwd=tmp_path, ok=False)
    assert "--dtype must be one of" in bad.stderr and "Traceback" not in bad.stderr

    from loom.train import train

    moe = tiny_config(tiny_root, "export-moe", extra=["model.moe.n_experts=4", "model.moe.top_k=2"])
    train(moe)
    refused = run_loom("export", "hf", "--run", str(moe.run_dir), "--out", str(tmp_path / "moe"), cwd=tmp_path,
                       ok=False)
    assert "Mixture-of-Experts" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "moe").exists()
