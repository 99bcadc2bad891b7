"""Every setting of loom, typed and validated in one place.

A config is a TOML file (or a preset name: `quickstart`, `gpt2-124m`, ... from `loom/configs/`)
whose sections match the dataclasses below; keys left out take the defaults shown here.
`--set section.key=value` overrides are applied on top, with values parsed as TOML literals
(`--set train.lr=1e-3`, `--set run.name=exp1`). Unknown keys, wrong types and inconsistent
values are errors that name the key and say how to fix it.

Does not own: what the settings do (each stage reads its section).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from loom.data.dedup import DedupConfig
from loom.data.execute import EXECUTORS, SlurmConfig
from loom.data.quality import CodeQualityConfig, TextQualityConfig
from loom.data.sources import KINDS, MARKUPS, SourceConfig, glob_problem
from loom.errors import ConfigError
from loom.model.gpt import ModelConfig
from loom.tokenizer import MIN_VOCAB_SIZE

PRESET_DIR = Path(__file__).parent / "configs"


@dataclass
class RunConfig:
    name: str = "quickstart"
    dir: str = "runs"  # the run lives in <dir>/<name>/
    seed: int = 1337


@dataclass
class DataConfig:
    # the inputs, as [[data.sources]] tables; by default the embedded standard-library corpus
    sources: list[SourceConfig] = field(default_factory=lambda: [SourceConfig()])
    dir: str = "data/stdlib"  # tokenizer.json, shards/ and the data card are written here
    val_fraction: float = 0.02  # share of documents, by id hash, held out for validation
    scrub_pii: bool = True  # replace e-mail and IP addresses, keys and tokens by placeholders
    # target share of training tokens per domain group ("text", "code"), met by up- or
    # down-sampling; empty: the corpus' natural proportions
    mixture: dict[str, float] = field(default_factory=dict)
    shard_tokens: int = 50_000_000  # tokens per shard file before a new one is started
    # where the clean stage's tasks run: local (a process pool of `workers`), ray or slurm;
    # see loom.data.execute
    executor: str = "local"
    workers: int = 0  # local executor: processes (0: one per CPU)
    task_files: int = 256  # a clean task reads at most this many files of one source...
    task_bytes: int = 16_000_000  # ... or about this many bytes (one larger file is one task)
    ray_address: str = ""  # ray executor: "" starts Ray here; "auto" or host:port joins a cluster
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    # evaluation suites ("all", or names from `loom eval --list`) whose test items no training
    # document may share a word n-gram with (GPT-3's decontamination, Brown et al. 2020, app. C)
    decontaminate: list[str] = field(default_factory=list)
    decontaminate_ngram: int = 13


@dataclass
class QualityConfig:
    enabled: bool = True
    text: TextQualityConfig = field(default_factory=TextQualityConfig)
    code: CodeQualityConfig = field(default_factory=CodeQualityConfig)


@dataclass
class TokenizerConfig:
    vocab_size: int = 8192
    train_bytes: int = 8_000_000  # size of the corpus sample the BPE merges are learnt from


@dataclass
class TrainConfig:
    steps: int = 1000
    seq_len: int = 256
    micro_batch: int = 16  # sequences per process per forward/backward pass
    batch_tokens: int = 0  # global tokens per optimizer step (0: micro_batch * seq_len * processes)
    lr: float = 3e-3
    min_lr_ratio: float = 0.1  # cosine decay ends at lr * min_lr_ratio
    warmup_steps: int = 50
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # max global gradient norm (0: no clipping)
    eval_every: int = 100  # validation loss every N steps (and at the start and end)
    eval_batches: int = 10  # micro-batches per process in each validation
    log_every: int = 10
    ckpt_every: int = 500  # a checkpoint every N steps (and at the end)
    keep_last: int = 3  # checkpoints kept: the newest N ...
    keep_every: int = 0  # ... and every one whose step is a multiple of this (0: none more)
    async_checkpoint: bool = False  # write checkpoints in a background thread (the loop waits only for a copy)
    compile: bool = False  # torch.compile the model
    device: str = "auto"  # auto: cuda if present, else cpu
    dtype: str = "auto"  # auto: bfloat16 autocast on CUDA, float32 elsewhere


@dataclass
class HealthConfig:
    """In-run guards (loom.train.health); every event lands in events.jsonl."""

    # a step whose loss or gradient norm is not finite is skipped (no optimizer step); after this
    # many in a row the run rolls back to its last good checkpoint and skips those data windows
    nonfinite_limit: int = 3
    loss_spike_zscore: float = 6.0  # a loss this many deviations above its running mean is a spike (0: off)
    loss_spike_action: str = "skip"  # log | skip (the optimizer step) | rollback (and skip the window)
    grad_spike_zscore: float = 10.0  # likewise for the gradient norm (0: off)
    grad_spike_action: str = "log"
    spike_window: int = 100  # steps in the running mean and deviation
    spike_min_steps: int = 20  # steps seen before spikes are judged
    spike_patience: int = 10  # this many spikes in a row are a new level, not spikes: accepted
    max_rollbacks: int = 5  # more rollbacks than this in one process and the run stops with an error
    watchdog_factor: float = 20.0  # no step within factor x median step time is a hang (0: no watchdog)
    watchdog_min_s: float = 300.0  # ... and never less than this
    watchdog_first_s: float = 1800.0  # before the first step (start-up, compilation)
    heartbeat_s: float = 10.0  # heartbeat/rank<R>.json rewritten at most this often (0: off)
    straggler_every: int = 100  # gather per-rank step times every N steps (multi-process runs)
    straggler_ratio: float = 1.3  # a rank this much slower than the median rank is named


@dataclass
class CostConfig:
    """Money and MFU (loom.train.cost); defaults are documented assumptions."""

    peak_tflops: float = 0.0  # per-device peak for MFU (0: datasheet table on GPUs, measured on CPUs)
    price_per_device_hour: float = -1.0  # money per device-hour (-1: loom.train.cost.PRICE_PER_HOUR)
    currency: str = "USD"


@dataclass
class BudgetConfig:
    """Limits at which the run stops cleanly with a checkpoint (0: no limit)."""

    max_cost: float = 0.0
    max_device_hours: float = 0.0
    max_wall_hours: float = 0.0


@dataclass
class FaultConfig:
    """Deliberate faults, to prove the guards work (tests, drills); each strikes once per process."""

    nan_at_steps: list[int] = field(default_factory=list)  # these steps' loss becomes NaN
    spike_at_steps: list[int] = field(default_factory=list)  # these steps' loss is multiplied by spike_factor
    spike_factor: float = 10.0
    stall_at_step: int = -1  # sleep stall_seconds inside this step (first attempt of a torchrun job only)
    stall_seconds: float = 0.0
    stall_rank: int = -1  # only this rank stalls (-1: all)
    checkpoint_delay_s: float = 0.0  # pause while writing each checkpoint file (to kill mid-write)


@dataclass
class SampleConfig:
    prompt: str = "def"
    max_new_tokens: int = 200
    temperature: float = 0.8  # 0: greedy
    top_k: int = 50  # 0: off
    top_p: float = 0.95  # 1.0: off


@dataclass
class EvalConfig:
    # `loom eval` (loom.eval): generated suites
    items: int = 50  # test items per suite and difficulty
    shots: int = 3  # examples in the few-shot prompt (from the suite's train split)
    seed: int = 0
    difficulty: dict[str, list[int]] = field(default_factory=dict)  # suite -> difficulties (default: its own)
    # HumanEval: samples per problem (1: greedy), pass@k reported for each k <= samples
    humaneval_samples: int = 5
    humaneval_k: list[int] = field(default_factory=lambda: [1, 5])
    humaneval_temperature: float = 0.8  # Chen et al. 2021 sampled pass@k>1 at 0.8 (pass@1 at 0.2)
    humaneval_max_new_tokens: int = 128
    humaneval_limit: int = 0  # problems (0: all 164)
    # bits per byte on the validation shards: at most this many bytes per domain (0: all)
    bpb_max_bytes: int = 2_000_000


@dataclass
class LoomConfig:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    cost: CostConfig = field(default_factory=CostConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    faults: FaultConfig = field(default_factory=FaultConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.run.dir) / self.run.name

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def resolve_config_path(source: str | Path) -> Path:
    """A path to a TOML file, or the name of a preset."""
    path = Path(source)
    if path.is_file():
        return path
    preset = PRESET_DIR / f"{source}.toml"
    if preset.is_file() and path.suffix != ".toml":
        return preset
    raise ConfigError(
        f"config {source} not found: give a path to a TOML file or one of the presets "
        f"({', '.join(presets())})"
    )


def load_config(source: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> LoomConfig:
    """Reads a config file or preset (defaults only when None), applies `section.key=value`
    overrides, and validates the result. Errors name where the bad key came from: the file, or
    the `--set` that gave it."""
    raw: dict = {}
    where = "defaults"
    if source is not None:
        path = resolve_config_path(source)
        where = str(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{where}: not valid TOML: {e}") from None
    set_by: dict[str, str] = {}  # dotted key -> the override that set it
    for item in overrides:
        set_by[_apply_override(raw, item)] = item

    def origin(key: str) -> str:
        """The override that set `key` (or a table holding it), else the file."""
        for dotted, item in set_by.items():
            if key == dotted or key.startswith((dotted + ".", dotted + "[")):
                return f"--set {item}"
        return where

    cfg = _build(LoomConfig, raw, origin, "")
    if "vocab_size" not in raw.get("model", {}):
        cfg.model.vocab_size = cfg.tokenizer.vocab_size
    validate(cfg, f"{where} with --set {', '.join(overrides)}" if overrides else where)
    return cfg


def _apply_override(raw: dict, item: str) -> str:
    """Sets one `section.key=value` in `raw`; returns the dotted key."""
    key, sep, text = item.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) < 2 or not all(parts):
        raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. --set train.lr=1e-3")
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()  # a bare word: take it as a string
    table = raw
    for depth, part in enumerate(parts[:-1]):
        table = table.setdefault(part, {})
        if not isinstance(table, dict):
            raise ConfigError(f"--set {item!r}: {'.'.join(parts[: depth + 1])} is not a section")
    table[parts[-1]] = value
    return ".".join(parts)


# What other projects call loom's settings (nanoGPT, Hugging Face configs, torchtitan): a key
# of this table that is unknown gets its loom name suggested, when the section has that name.
OTHER_NAMES = {
    "width": "d_model", "n_embd": "d_model", "hidden_size": "d_model", "dim": "d_model", "d_embed": "d_model",
    "n_layers": "n_layer", "num_layers": "n_layer", "num_hidden_layers": "n_layer", "layers": "n_layer",
    "depth": "n_layer", "n_heads": "n_head", "num_heads": "n_head", "num_attention_heads": "n_head",
    "heads": "n_head", "n_kv_heads": "n_kv_head", "num_key_value_heads": "n_kv_head",
    "block_size": "max_seq_len", "context_length": "max_seq_len", "max_position_embeddings": "max_seq_len",
    "vocab": "vocab_size", "learning_rate": "lr", "max_steps": "steps", "max_iters": "steps", "iters": "steps",
    "batch_size": "micro_batch", "warmup": "warmup_steps", "warmup_iters": "warmup_steps",
    "intermediate_size": "mlp_ratio", "rms_norm_eps": "norm_eps", "num_experts": "n_experts",
    "num_experts_per_tok": "top_k",
}


def _suggest(key: str, names: list[str]) -> str | None:
    alias = OTHER_NAMES.get(key.lower())
    if alias in names:
        return alias
    close = difflib.get_close_matches(key, names, n=1) or difflib.get_close_matches(key.lower(), names, n=1)
    return close[0] if close else None


def _build(cls, raw: dict, origin, prefix: str):
    """`origin(key)` says where a key came from, for the error message."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin(prefix.rstrip('.'))}: [{prefix.rstrip('.')}] must be a table of settings")
    values = {}
    for key, value in raw.items():
        if key not in names:
            close = _suggest(key, names)
            hint = f"; did you mean {prefix}{close}?" if close else f"; valid keys: {', '.join(names)}"
            raise ConfigError(f"{origin(prefix + key)}: unknown key {prefix}{key}{hint}")
        values[key] = _convert(value, hints[key], origin, f"{prefix}{key}")
    return cls(**values)


def _convert(value, kind, origin, key: str):
    """Checks (and builds) a value against its annotated type: a dataclass, list[...],
    dict[str, ...] or a plain scalar type."""
    if dataclasses.is_dataclass(kind):
        return _build(kind, value, origin, f"{key}.")
    origin_type, args = typing.get_origin(kind), typing.get_args(kind)
    if origin_type is list:
        if not isinstance(value, list):
            raise ConfigError(f"{origin(key)}: {key} must be a list, not {type(value).__name__} {value!r}")
        return [_convert(v, args[0], origin, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin_type is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{origin(key)}: {key} must be a table, e.g. {{text = 0.6, code = 0.4}}")
        return {k: _convert(v, args[1], origin, f"{key}.{k}") for k, v in value.items()}
    return _check_type(value, kind, origin(key), key)


def _check_type(value, kind, where: str, key: str):
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: {key} must be true or false, not {value!r}")
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: {key} must be {kind.__name__}, not {type(value).__name__} {value!r}")
    return value


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def validate(cfg: LoomConfig, where: str = "config") -> None:
    def fail(msg: str):
        raise ConfigError(f"{where}: {msg}")

    positive = {
        "data.shard_tokens": cfg.data.shard_tokens,
        "tokenizer.train_bytes": cfg.tokenizer.train_bytes,
        "model.n_layer": cfg.model.n_layer,
        "model.n_head": cfg.model.n_head,
        "model.n_kv_head": cfg.model.n_kv_head,
        "model.d_model": cfg.model.d_model,
        "model.max_seq_len": cfg.model.max_seq_len,
        "model.mlp_ratio": cfg.model.mlp_ratio,
        "model.rope_theta": cfg.model.rope_theta,
        "model.norm_eps": cfg.model.norm_eps,
        "train.steps": cfg.train.steps,
        "train.seq_len": cfg.train.seq_len,
        "train.micro_batch": cfg.train.micro_batch,
        "train.lr": cfg.train.lr,
        "train.eval_every": cfg.train.eval_every,
        "train.eval_batches": cfg.train.eval_batches,
        "train.log_every": cfg.train.log_every,
        "train.ckpt_every": cfg.train.ckpt_every,
        "train.keep_last": cfg.train.keep_last,
        "health.spike_window": cfg.health.spike_window,
        "health.spike_patience": cfg.health.spike_patience,
        "health.watchdog_min_s": cfg.health.watchdog_min_s,
        "health.watchdog_first_s": cfg.health.watchdog_first_s,
        "health.straggler_every": cfg.health.straggler_every,
        "health.straggler_ratio": cfg.health.straggler_ratio,
    }
    non_negative = {
        "data.workers": cfg.data.workers,
        "train.batch_tokens": cfg.train.batch_tokens,
        "train.warmup_steps": cfg.train.warmup_steps,
        "train.weight_decay": cfg.train.weight_decay,
        "train.grad_clip": cfg.train.grad_clip,
        "train.keep_every": cfg.train.keep_every,
        "health.nonfinite_limit": cfg.health.nonfinite_limit,
        "health.loss_spike_zscore": cfg.health.loss_spike_zscore,
        "health.grad_spike_zscore": cfg.health.grad_spike_zscore,
        "health.max_rollbacks": cfg.health.max_rollbacks,
        "health.watchdog_factor": cfg.health.watchdog_factor,
        "health.heartbeat_s": cfg.health.heartbeat_s,
        "cost.peak_tflops": cfg.cost.peak_tflops,
        "budget.max_cost": cfg.budget.max_cost,
        "budget.max_device_hours": cfg.budget.max_device_hours,
        "budget.max_wall_hours": cfg.budget.max_wall_hours,
        "faults.stall_seconds": cfg.faults.stall_seconds,
        "faults.checkpoint_delay_s": cfg.faults.checkpoint_delay_s,
    }
    for key, value in positive.items():
        if value <= 0:
            fail(f"{key} must be positive, not {value}")
    moe = cfg.model.moe
    if moe.n_experts < 0 or (moe.enabled and not 1 <= moe.top_k <= moe.n_experts):
        fail(f"model.moe: top_k ({moe.top_k}) must be between 1 and n_experts ({moe.n_experts})")
    if moe.every < 1 or moe.shared_experts < 0 or moe.expert_hidden < 0 or moe.capacity_factor < 0:
        fail("model.moe: every must be 1 or more; shared_experts, expert_hidden and capacity_factor zero or more")
    if moe.router not in ("softmax", "sigmoid"):
        fail(f"model.moe.router {moe.router!r} is not known; use softmax or sigmoid")
    if min(moe.aux_loss_coef, moe.z_loss_coef, moe.bias_update_rate) < 0:
        fail("model.moe: aux_loss_coef, z_loss_coef and bias_update_rate must be zero or more")
    for key in ("loss_spike_action", "grad_spike_action"):
        if getattr(cfg.health, key) not in ("log", "skip", "rollback"):
            fail(f"health.{key} {getattr(cfg.health, key)!r} is not known; use log, skip or rollback")
    for key, value in non_negative.items():
        if value < 0:
            fail(f"{key} must be zero or more, not {value}")

    _validate_data(cfg, fail)
    if not 0 < cfg.data.val_fraction < 1:
        fail(f"data.val_fraction must be between 0 and 1 (exclusive), not {cfg.data.val_fraction}")
    if not MIN_VOCAB_SIZE <= cfg.tokenizer.vocab_size <= 2**32:
        fail(f"tokenizer.vocab_size must be between {MIN_VOCAB_SIZE} and 2**32, not {cfg.tokenizer.vocab_size}")

    m = cfg.model
    if m.d_model % m.n_head:
        fail(
            f"model.d_model ({m.d_model}) must be divisible by model.n_head ({m.n_head}): each "
            f"attention head gets d_model / n_head dimensions. Try d_model = "
            f"{m.n_head * max(2, round(m.d_model / m.n_head / 2) * 2)} or another n_head"
        )
    if m.head_dim % 2:
        fail(f"model.d_model / model.n_head = {m.head_dim} must be even: rotary embedding rotates pairs")
    if m.n_head % m.n_kv_head:
        fail(
            f"model.n_head ({m.n_head}) must be a multiple of model.n_kv_head ({m.n_kv_head}): "
            "each key/value head is shared by an equal group of query heads"
        )
    if m.vocab_size < cfg.tokenizer.vocab_size:
        fail(f"model.vocab_size ({m.vocab_size}) is smaller than tokenizer.vocab_size "
             f"({cfg.tokenizer.vocab_size}); leave it out to take the tokenizer's")

    t = cfg.train
    if t.seq_len > m.max_seq_len:
        fail(f"train.seq_len ({t.seq_len}) exceeds model.max_seq_len ({m.max_seq_len}); raise the latter")
    if t.batch_tokens % (t.micro_batch * t.seq_len):
        fail(
            f"train.batch_tokens ({t.batch_tokens}) must be a multiple of train.micro_batch * "
            f"train.seq_len ({t.micro_batch * t.seq_len}) so every step sees whole sequences"
        )
    if not 0 <= t.min_lr_ratio <= 1:
        fail(f"train.min_lr_ratio must be between 0 and 1, not {t.min_lr_ratio}")
    if not (0 <= t.beta1 < 1 and 0 <= t.beta2 < 1):
        fail("train.beta1 and train.beta2 must be in [0, 1)")
    if t.dtype not in ("auto", "float32", "bfloat16"):
        fail(f"train.dtype must be auto, float32 or bfloat16, not {t.dtype!r}")
    if not (t.device in ("auto", "cpu", "cuda", "mps") or t.device.startswith("cuda:")):
        fail(f"train.device must be auto, cpu, cuda, cuda:N or mps, not {t.device!r}")
    e = cfg.eval
    if e.items < 1 or e.shots < 0 or e.humaneval_samples < 1 or e.humaneval_max_new_tokens < 1:
        fail("eval.items, eval.humaneval_samples and eval.humaneval_max_new_tokens must be 1 or more, "
             "eval.shots 0 or more")
    if any(k < 1 or k > e.humaneval_samples for k in e.humaneval_k):
        fail(f"eval.humaneval_k {e.humaneval_k}: each k must be between 1 and eval.humaneval_samples "
             f"({e.humaneval_samples}); pass@k needs at least k samples")
    if cfg.data.decontaminate_ngram < 4:
        fail(f"data.decontaminate_ngram must be 4 or more (GPT-3 used 13), not {cfg.data.decontaminate_ngram}")
    try:
        check_sampling(cfg.sample)
    except ConfigError as e:
        fail(str(e))


MAX_NEW_TOKENS = 1_000_000  # a sample longer than this is a typo, not a wish


def check_sampling(s: SampleConfig, name=lambda key: f"sample.{key}") -> None:
    """Raises `ConfigError` for a sampling setting generation cannot use; `name(field)` is how
    the message names the setting (`sample.top_p` in a config, `--top-p` on a command line)."""
    if not isinstance(s.prompt, str):
        raise ConfigError(f"{name('prompt')} must be text, not {s.prompt!r}")
    if not 1 <= s.max_new_tokens <= MAX_NEW_TOKENS:
        raise ConfigError(f"{name('max_new_tokens')} must be between 1 and {MAX_NEW_TOKENS:,}, not {s.max_new_tokens}")
    if not (math.isfinite(s.temperature) and s.temperature >= 0):
        raise ConfigError(f"{name('temperature')} must be 0 (greedy) or more, not {s.temperature}; "
                          "0.7 to 1.0 samples usual text")
    if s.top_k < 0:
        raise ConfigError(f"{name('top_k')} must be 0 (off) or more, not {s.top_k}")
    if not 0 < s.top_p <= 1:  # also refuses nan
        raise ConfigError(f"{name('top_p')} must be in (0, 1] (1: off), not {s.top_p}")


def _validate_data(cfg: LoomConfig, fail) -> None:
    if not cfg.data.sources:
        fail("data.sources is empty: add at least one [[data.sources]] table")
    names = [s.name for s in cfg.data.sources]
    for name in names:
        if names.count(name) > 1:
            fail(f"data.sources: the name {name!r} is used twice; give each source its own name")
    for i, source in enumerate(cfg.data.sources):
        key = f"data.sources[{i}]"
        if source.kind not in KINDS:
            fail(f"{key}.kind {source.kind!r} is not known; use one of {', '.join(KINDS)}")
        if source.kind != "stdlib" and not source.path:
            fail(f"{key}.path is required for a {source.kind} source")
        if source.domain and not (source.domain == "text" or re.fullmatch(r"code:[\w+#.-]+", source.domain)):
            fail(f"{key}.domain {source.domain!r} must be 'text' or 'code:LANGUAGE' (e.g. code:python)")
        if source.max_file_bytes <= 0 or source.max_files < 0:
            fail(f"{key}: max_file_bytes must be positive and max_files zero or more")
        for globs in ("include", "exclude"):
            for pattern in getattr(source, globs):
                if problem := glob_problem(pattern):
                    fail(f"{key}.{globs}: {problem}")
        if source.markup and source.markup not in MARKUPS:
            fail(f"{key}.markup {source.markup!r} is not known; use one of {', '.join(MARKUPS)}, or leave it empty")
    if cfg.data.executor not in EXECUTORS:
        fail(f"data.executor {cfg.data.executor!r} is not known; use one of {', '.join(EXECUTORS)}")
    if cfg.data.task_files <= 0 or cfg.data.task_bytes <= 0:
        fail("data.task_files and data.task_bytes must be positive")
    if cfg.data.workers < 0:
        fail(f"data.workers must be zero (one per CPU) or more, not {cfg.data.workers}")
    for group, weight in cfg.data.mixture.items():
        if group not in ("text", "code"):
            fail(f"data.mixture.{group}: mixture keys are domain groups, 'text' or 'code'")
        if weight < 0:
            fail(f"data.mixture.{group} must be zero or more, not {weight}")
    if cfg.data.mixture and sum(cfg.data.mixture.values()) <= 0:
        fail("data.mixture: the weights must not all be zero")
    d = cfg.dedup
    for key, value in (("dedup.shingle_size", d.shingle_size), ("dedup.bands", d.bands), ("dedup.rows", d.rows)):
        if value <= 0:
            fail(f"{key} must be positive, not {value}")
    if not 0 <= d.min_jaccard <= 1:
        fail(f"dedup.min_jaccard must be between 0 and 1, not {d.min_jaccard}")
