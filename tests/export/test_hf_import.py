"""`loom import hf`: a random LlamaForCausalLM made by transformers becomes a loom run with the same
logits; export then import gives back the same weights bit for bit; the run trains and
fine-tunes; shapes loom cannot represent are refused by key before any weight is read."""

import json
import shutil

import pytest
import torch

from conftest import run_loom
from loom.checkpoint import load_trained_model
from loom.errors import ConfigError
from loom.export import export_hf
from loom.export.hf_import import import_hf
from loom.tokenizer import SPECIAL_TOKENS


def random_llama(tmp_path, tokenizer_json, vocab=512, **config):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    settings = dict(vocab_size=vocab, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                    tie_word_embeddings=False, rms_norm_eps=1e-5, rope_theta=500000.0)
    model = LlamaForCausalLM(LlamaConfig(**{**settings, **config})).eval()
    out = tmp_path / "hf"
    model.save_pretrained(out)
    shutil.copyfile(tokenizer_json, out / "tokenizer.json")
    return model, out


def test_a_random_transformers_llama_imports_with_the_same_logits(tiny_root, tmp_path):
    theirs, hf_dir = random_llama(tmp_path, tiny_root / "data" / "tokenizer.json")
    run = import_hf(hf_dir, tmp_path / "runs" / "imported", say=lambda _: None)
    ours, tok, cfg = load_trained_model(run)
    assert cfg.model.mlp_hidden == 192 and cfg.model.rope_theta == 500000.0 and not cfg.model.tie_embeddings
    ids = torch.randint(0, 512, (2, 90), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (ours(ids) - theirs(ids).logits).abs().max().item() <= 1e-4


def test_a_tokenizer_without_loom_tokens_gets_them_and_the_old_logits_stay(tiny_root, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    plain = Tokenizer(models.WordLevel({f"w{i}": i for i in range(300)}, unk_token="w0"))
    plain.pre_tokenizer = pre_tokenizers.Whitespace()
    plain.save(str(tmp_path / "plain.json"))
    theirs, hf_dir = random_llama(tmp_path, tmp_path / "plain.json", vocab=300, tie_word_embeddings=True)
    run = import_hf(hf_dir, tmp_path / "runs" / "grown", say=lambda _: None)
    ours, tok, cfg = load_trained_model(run)
    assert cfg.model.vocab_size == 300 + len(SPECIAL_TOKENS) and tok.bos_id >= 300
    ids = torch.randint(0, 300, (1, 40))
    with torch.no_grad():
        assert (ours(ids)[..., :300] - theirs(ids).logits).abs().max().item() <= 1e-4


def test_export_then_import_gives_back_the_weights_and_the_run_trains_and_tunes(tiny_run, tiny_root, tmp_path):
    exported = export_hf(tiny_run[0], tmp_path / "hf", say=lambda _: None)
    run = import_hf(exported, tmp_path / "runs" / "back", say=lambda _: None)
    a, b = load_trained_model(tiny_run[0])[0].state_dict(), load_trained_model(run)[0].state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    data = f'data.dir="{tiny_root}/data"'
    trained = run_loom("train", "--config", str(run / "config.toml"), "--set", data, "--set", "train.steps=2",
                       "--set", "train.seq_len=32", "--set", "train.micro_batch=2", "--set", "train.eval_every=2",
                       "--set", "train.eval_batches=1", cwd=tmp_path)
    assert "resumed" not in trained.stderr  # the imported weights start a fresh run
    assert (run / "checkpoints" / "step_000002").is_dir()
    conversations = tmp_path / "conv.jsonl"
    conversations.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"hi {i}"},
                                                              {"role": "assistant", "content": "hello"}]}) + "\n"
                                     for i in range(60)))
    run_loom("sft", "--run", str(run), "--data", str(conversations), "--set", "train.steps=2",
             "--set", "train.seq_len=32", "--set", "train.micro_batch=1", "--set", "train.eval_every=2",
             "--set", "train.eval_batches=1", cwd=tmp_path)
    assert (tmp_path / "runs" / "back-sft" / "checkpoints").is_dir()


REFUSED = [
    ({"attention_bias": True}, "attention_bias"),
    ({"mlp_bias": True}, "mlp_bias"),
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "rope_scaling"),
    ({"partial_rotary_factor": 0.5}, "partial_rotary_factor"),
    ({"model_type": "mistral", "sliding_window": 64}, "sliding_window"),
    ({"head_dim": 32}, "head_dim"),
    ({"intermediate_size": 100}, "intermediate_size"),
    ({"model_type": "qwen2"}, "biases"),
    ({"model_type": "gpt2"}, "model_type"),
]


@pytest.mark.parametrize("change,key", REFUSED, ids=[k for _, k in REFUSED])
def test_shapes_loom_cannot_represent_are_refused_before_any_weight_is_read(tmp_path, change, key):
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    config = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512, **change}
    (model_dir / "config.json").write_text(json.dumps(config))
    (model_dir / "model.safetensors").write_bytes(b"not weights: never read")
    with pytest.raises(ConfigError, match=key):
        import_hf(model_dir, tmp_path / "out", say=lambda _: None)
    assert not (tmp_path / "out").exists()


def test_the_command_line_names_what_is_wrong(tmp_path):
    missing = run_loom("import", "hf", "--model", str(tmp_path / "nothing"), "--out", str(tmp_path / "r"),
                       cwd=tmp_path, ok=False)
    assert "config.json cannot be read" in missing.stderr and "Traceback" not in missing.stderr
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    bad = run_loom("import", "hf", "--model", str(tmp_path / "bad"), "--out", str(tmp_path / "r"), cwd=tmp_path,
                   ok=False)
    assert "is not JSON" in bad.stderr
