import subprocess
import sys
import tomllib

import pytest

from loom.config import PRESET_DIR, LoomConfig, load_config, presets
from loom.errors import ConfigError


def test_presets_load_and_gpt2_shape():
    assert {"quickstart", "gpt2-124m"} <= set(presets())
    cfg = load_config("gpt2-124m")
    m = cfg.model
    assert (m.n_layer, m.n_head, m.d_model, cfg.train.seq_len) == (12, 12, 768, 1024)
    assert m.vocab_size == cfg.tokenizer.vocab_size
    quickstart = load_config("quickstart")
    written = tomllib.loads((PRESET_DIR / "quickstart.toml").read_text())
    assert isinstance(quickstart, LoomConfig) and quickstart.train.steps == written["train"]["steps"] != 1000


def test_gpt2_preset_has_gpt2_small_parameter_count():
    from loom.model import GPT

    cfg = load_config("gpt2-124m")
    n = GPT(cfg.model).num_params()
    assert 120e6 < n < 130e6


def test_overrides_are_typed():
    cfg = load_config("quickstart", ["train.lr=1e-3", "train.steps=7", "run.name=exp", "train.compile=true",
                                     "model.mlp_ratio=4"])
    assert cfg.train.lr == 1e-3 and cfg.train.steps == 7 and cfg.run.name == "exp" and cfg.train.compile is True
    assert cfg.model.mlp_ratio == 4.0 and isinstance(cfg.model.mlp_ratio, float)


def test_unknown_key_names_key_and_suggests(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[model]\nn_layers = 4\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path) in msg and "model.n_layers" in msg and "model.n_layer" in msg


def test_unknown_section():
    with pytest.raises(ConfigError, match="unknown key trian"):
        load_config(None, ["trian.steps=3"])


def test_width_not_divisible_by_heads_is_explained():
    with pytest.raises(ConfigError) as err:
        load_config("quickstart", ["model.d_model=250"])
    msg = str(err.value)
    assert "model.d_model (250)" in msg and "model.n_head (8)" in msg and "Try d_model" in msg


def test_other_inconsistencies():
    cases = {
        "model.n_kv_head=3": "multiple of model.n_kv_head",
        "train.seq_len=512": "exceeds model.max_seq_len",
        "train.batch_tokens=1000": "multiple of train.micro_batch",
        "train.steps=0": "train.steps must be positive",
        "train.dtype=float16": "train.dtype",
        "model.vocab_size=100": "smaller than tokenizer.vocab_size",
        "tokenizer.vocab_size=10": "tokenizer.vocab_size",
        "data.val_fraction=1.5": "data.val_fraction",
    }
    for override, fragment in cases.items():
        with pytest.raises(ConfigError, match=fragment):
            load_config("quickstart", [override])


def test_wrong_types():
    with pytest.raises(ConfigError, match="train.steps must be int"):
        load_config(None, ['train.steps="ten"'])
    with pytest.raises(ConfigError, match="train.compile must be true or false"):
        load_config(None, ["train.compile=1"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["steps=3"])


def test_bad_toml_names_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[train\nsteps = 3\n")
    with pytest.raises(ConfigError, match="broken.toml: not valid TOML"):
        load_config(path)


def test_missing_config():
    with pytest.raises(ConfigError, match="not found"):
        load_config("no-such-preset")


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config("quickstart", ["train.steps=11"])
    path = tmp_path / "config.toml"
    path.write_text(cfg.to_toml())
    assert load_config(path) == cfg


def test_cli_prints_message_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "loom", "train", "--set", "model.d_model=250"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1
    assert "loom: error:" in result.stderr and "model.d_model (250)" in result.stderr
    assert "Traceback" not in result.stderr
    debug = subprocess.run([sys.executable, "-m", "loom", "--debug", "train", "--set", "model.d_model=250"],
                           capture_output=True, text=True, cwd=tmp_path)
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_errors_name_the_override_that_gave_the_bad_key(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config("quickstart", ["model.width=250"])
    assert str(e.value) == "--set model.width=250: unknown key model.width; did you mean model.d_model?"
    with pytest.raises(ConfigError, match=r"^--set train.steps=abc: train.steps must be int"):
        load_config("quickstart", ["train.steps=abc"])
    with pytest.raises(ConfigError, match=r"^--set data.sources=.*unknown key data.sources\[0\].kindd; did you mean "
                                          r"data.sources\[0\].kind\?"):
        load_config(None, ['data.sources=[{name="x", kindd="stdlib"}]'])
    # a key from the file is the file's; a value checked after loading names the overrides too
    path = tmp_path / "c.toml"
    path.write_text("[model]\nn_layers = 2\n")
    with pytest.raises(ConfigError, match=rf"^{path}: unknown key model.n_layers; did you mean model.n_layer\?"):
        load_config(path, ["train.steps=5"])
    with pytest.raises(ConfigError, match=r"quickstart.toml with --set model.d_model=250: model.d_model \(250\)"):
        load_config("quickstart", ["model.d_model=250"])


@pytest.mark.parametrize("other, ours", [("n_embd", "model.d_model"), ("hidden_size", "model.d_model"),
                                         ("num_hidden_layers", "model.n_layer"), ("block_size", "model.max_seq_len"),
                                         ("num_key_value_heads", "model.n_kv_head")])
def test_other_projects_names_suggest_ours(other, ours):
    with pytest.raises(ConfigError, match=rf"did you mean {ours}\?"):
        load_config(None, [f"model.{other}=4"])


def test_a_source_setting_is_checked_in_one_place_for_config_and_build():
    # the config names the source by index, the build by name; the words are the same check's
    from loom.data.sources import SourceConfig, validate_source

    with pytest.raises(ConfigError) as from_config:
        load_config(None, ['data.sources=[{name="x", kind="csv", path="."}]'])
    with pytest.raises(ConfigError) as from_build:
        validate_source(SourceConfig("x", "csv", "."))
    assert str(from_config.value).endswith(str(from_build.value).replace("data.sources[x]", "data.sources[0]"))


def test_every_section_with_settings_to_check_checks_them():
    cfg = load_config(None)
    for section, key, bad in [("model", "n_layer", 0), ("train", "lr", 0.0), ("data", "shard_tokens", 0),
                              ("dedup", "bands", 0), ("health", "spike_window", 0), ("cost", "peak_tflops", -1.0),
                              ("budget", "max_cost", -1.0), ("faults", "stall_seconds", -1.0),
                              ("tokenizer", "train_bytes", 0), ("sample", "top_k", -1)]:
        with pytest.raises(ConfigError, match=rf"^{section}\.{key} must be"):
            _with(cfg, section, key, bad).check()


def _with(cfg, section, key, value):
    import copy

    changed = copy.deepcopy(cfg)
    setattr(getattr(changed, section), key, value)
    return changed
