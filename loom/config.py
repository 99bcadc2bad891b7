"""Every setting of loom, typed, each section validated by a `check` beside its dataclass.

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
from loom.data.sources import SourceConfig
from loom.errors import ConfigError, require_non_negative, require_positive
from loom.model.gpt import ModelConfig
from loom.tokenizer import MIN_VOCAB_SIZE

PRESET_DIR = Path(__file__).parent / "configs"
MAX_NEW_TOKENS = 1_000_000  # a sample longer than this is a typo, not a wish


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

    def check(self, key: str = "data") -> None:
        require_positive(self, key, "shard_tokens")
        if self.workers < 0:
            raise ConfigError(f"{key}.workers must be zero (one per CPU) or more, not {self.workers}")
        if not self.sources:
            raise ConfigError(f"{key}.sources is empty: add at least one [[data.sources]] table")
        names = [s.name for s in self.sources]
        for name in names:
            if names.count(name) > 1:
                raise ConfigError(f"{key}.sources: the name {name!r} is used twice; give each source its own name")
        for i, source in enumerate(self.sources):
            source.check(f"{key}.sources[{i}]")
        if self.executor not in EXECUTORS:
            raise ConfigError(f"{key}.executor {self.executor!r} is not known; use one of {', '.join(EXECUTORS)}")
        if self.task_files <= 0 or self.task_bytes <= 0:
            raise ConfigError(f"{key}.task_files and {key}.task_bytes must be positive")
        for group, weight in self.mixture.items():
            if group not in ("text", "code"):
                raise ConfigError(f"{key}.mixture.{group}: mixture keys are domain groups, 'text' or 'code'")
            if weight < 0:
                raise ConfigError(f"{key}.mixture.{group} must be zero or more, not {weight}")
        if self.mixture and sum(self.mixture.values()) <= 0:
            raise ConfigError(f"{key}.mixture: the weights must not all be zero")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"{key}.val_fraction must be between 0 and 1 (exclusive), not {self.val_fraction}")
        if self.decontaminate_ngram < 4:
            raise ConfigError(f"{key}.decontaminate_ngram must be 4 or more (GPT-3 used 13), not "
                              f"{self.decontaminate_ngram}")


@dataclass
class QualityConfig:
    enabled: bool = True
    text: TextQualityConfig = field(default_factory=TextQualityConfig)
    code: CodeQualityConfig = field(default_factory=CodeQualityConfig)


@dataclass
class TokenizerConfig:
    vocab_size: int = 8192
    train_bytes: int = 8_000_000  # size of the corpus sample the BPE merges are learnt from
    # an existing tokenizer.json to use instead of training one (a base run's, so that a further
    # stage of training on other data reads the same ids); its size must be vocab_size
    path: str = ""

    def check(self, key: str = "tokenizer") -> None:
        require_positive(self, key, "train_bytes")
        if self.path and not Path(self.path).is_file():
            raise ConfigError(f"{key}.path {self.path!r} is not a file; give a tokenizer.json (a run directory "
                              "holds one) or leave it out to train a tokenizer on the corpus")
        if not MIN_VOCAB_SIZE <= self.vocab_size <= 2**32:
            raise ConfigError(f"{key}.vocab_size must be between {MIN_VOCAB_SIZE} and 2**32, not {self.vocab_size}")


@dataclass
class TrainConfig:
    steps: int = 1000
    seq_len: int = 256
    micro_batch: int = 16  # sequences per process per forward/backward pass
    batch_tokens: int = 0  # global tokens per optimizer step (0: micro_batch * seq_len * processes)
    lr: float = 3e-3
    min_lr_ratio: float = 0.1  # the decay ends at lr * min_lr_ratio
    warmup_steps: int = 50
    schedule: str = "cosine"  # after warmup: cosine | wsd (peak held, then a linear decay; loom.train.optim)
    decay_fraction: float = 0.2  # wsd: the share of the post-warmup steps spent decaying
    optimizer: str = "adamw"  # adamw | muon (the blocks' matrices; AdamW for the rest)
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
    # the blocks' linear layers multiply in float8 (torchao; loom.train.parallelize.float8_matmuls):
    # a speed-up on H100/H200-class GPUs, under compile; weights, checkpoints and exports unchanged
    float8: bool = False
    device: str = "auto"  # auto: cuda if present, else cpu
    dtype: str = "auto"  # auto: bfloat16 autocast on CUDA, float32 elsewhere

    def check(self, key: str = "train") -> None:
        require_positive(self, key, "steps", "seq_len", "micro_batch", "lr", "eval_every", "eval_batches",
                         "log_every", "ckpt_every", "keep_last")
        require_non_negative(self, key, "batch_tokens", "warmup_steps", "weight_decay", "grad_clip", "keep_every")
        if self.batch_tokens % (self.micro_batch * self.seq_len):
            raise ConfigError(
                f"{key}.batch_tokens ({self.batch_tokens}) must be a multiple of {key}.micro_batch * "
                f"{key}.seq_len ({self.micro_batch * self.seq_len}) so every step sees whole sequences"
            )
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"{key}.min_lr_ratio must be between 0 and 1, not {self.min_lr_ratio}")
        if self.schedule not in ("cosine", "wsd"):
            raise ConfigError(f"{key}.schedule {self.schedule!r} is not known; use cosine or wsd")
        if not 0 < self.decay_fraction <= 1:
            raise ConfigError(f"{key}.decay_fraction must be in (0, 1], not {self.decay_fraction}")
        if self.optimizer not in ("adamw", "muon"):
            raise ConfigError(f"{key}.optimizer {self.optimizer!r} is not known; use adamw or muon")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ConfigError(f"{key}.beta1 and {key}.beta2 must be in [0, 1)")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise ConfigError(f"{key}.dtype must be auto, float32 or bfloat16, not {self.dtype!r}")
        if not (self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:")):
            raise ConfigError(f"{key}.device must be auto, cpu, cuda, cuda:N or mps, not {self.device!r}")


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

    def check(self, key: str = "health") -> None:
        require_positive(self, key, "spike_window", "spike_patience", "watchdog_min_s", "watchdog_first_s",
                         "straggler_every", "straggler_ratio")
        require_non_negative(self, key, "nonfinite_limit", "loss_spike_zscore", "grad_spike_zscore", "max_rollbacks",
                             "watchdog_factor", "heartbeat_s")
        for name in ("loss_spike_action", "grad_spike_action"):
            if getattr(self, name) not in ("log", "skip", "rollback"):
                raise ConfigError(f"{key}.{name} {getattr(self, name)!r} is not known; use log, skip or rollback")


@dataclass
class CostConfig:
    """Money and MFU (loom.train.cost); defaults are documented assumptions."""

    peak_tflops: float = 0.0  # per-device peak for MFU (0: datasheet table on GPUs, measured on CPUs)
    price_per_device_hour: float = -1.0  # money per device-hour (-1: loom.train.cost.PRICE_PER_HOUR)
    currency: str = "USD"

    def check(self, key: str = "cost") -> None:
        require_non_negative(self, key, "peak_tflops")


@dataclass
class BudgetConfig:
    """Limits at which the run stops cleanly with a checkpoint (0: no limit)."""

    max_cost: float = 0.0
    max_device_hours: float = 0.0
    max_wall_hours: float = 0.0

    def check(self, key: str = "budget") -> None:
        require_non_negative(self, key, "max_cost", "max_device_hours", "max_wall_hours")


@dataclass
class ParallelConfig:
    """How the model is split over the processes (loom.train.parallelize): a device mesh of
    (dp_replicate, dp_shard, tp) whose product is the world size."""

    dp_replicate: int = 0  # whole-model replicas (DDP, or HSDP with dp_shard); 0: what the world size leaves
    dp_shard: int = 1  # FSDP2: parameters, gradients and optimizer state sharded over this many ranks
    tp: int = 1  # tensor parallel: each block's projections split by head / hidden unit over this many ranks
    # none; full: each block's activations recomputed in the backward pass instead of kept;
    # selective: only the cheap element-wise work recomputed, matrix products' outputs kept
    activation_checkpointing: str = "none"

    def check(self, key: str = "parallel") -> None:
        require_positive(self, key, "dp_shard", "tp")
        require_non_negative(self, key, "dp_replicate")
        if self.activation_checkpointing not in ("none", "full", "selective"):
            raise ConfigError(f"{key}.activation_checkpointing {self.activation_checkpointing!r} is not known; "
                              "use none, full or selective")

    def degrees(self, world_size: int) -> tuple[int, int, int]:
        """(dp_replicate, dp_shard, tp) for `world_size` processes, refused with the fix when their
        product cannot be the world size."""
        fixed = self.dp_shard * self.tp
        replicate = self.dp_replicate or world_size // fixed
        if world_size % fixed or replicate * fixed != world_size:
            asked = f"{self.dp_replicate} x " if self.dp_replicate else ""
            raise ConfigError(
                f"parallel: dp_replicate x dp_shard x tp ({asked}{self.dp_shard} x {self.tp}) must equal the "
                f"{world_size} process(es) of this run; set the degrees so that their product is {world_size} "
                f"(dp_replicate = 0 takes what the others leave), or start that many processes"
            )
        return replicate, self.dp_shard, self.tp


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

    def check(self, key: str = "faults") -> None:
        require_non_negative(self, key, "stall_seconds", "checkpoint_delay_s")


@dataclass
class SampleConfig:
    prompt: str = "def"
    max_new_tokens: int = 200
    temperature: float = 0.8  # 0: greedy
    top_k: int = 50  # 0: off
    top_p: float = 0.95  # 1.0: off

    def check(self, key: str = "sample", name=None) -> None:
        """Raises `ConfigError` for a setting generation cannot use; `name(field)` is how the
        message names it (default `<key>.<field>`; `--top-p` for a command line's flags)."""
        name = name or (lambda field_name: f"{key}.{field_name}")
        if not isinstance(self.prompt, str):
            raise ConfigError(f"{name('prompt')} must be text, not {self.prompt!r}")
        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS:
            raise ConfigError(f"{name('max_new_tokens')} must be between 1 and {MAX_NEW_TOKENS:,}, "
                              f"not {self.max_new_tokens}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ConfigError(f"{name('temperature')} must be 0 (greedy) or more, not {self.temperature}; "
                              "0.7 to 1.0 samples usual text")
        if self.top_k < 0:
            raise ConfigError(f"{name('top_k')} must be 0 (off) or more, not {self.top_k}")
        if not 0 < self.top_p <= 1:  # also refuses nan
            raise ConfigError(f"{name('top_p')} must be in (0, 1] (1: off), not {self.top_p}")


@dataclass
class EvalConfig:
    # `loom eval` (loom.eval): generated suites
    items: int = 50  # test items per suite and difficulty
    shots: int = 3  # examples in the few-shot prompt (from the suite's train split)
    seed: int = 0
    difficulty: dict[str, list[int]] = field(default_factory=dict)  # suite -> difficulties (default: its own)
    # how a generated suite's question is put: "few-shot" text ("Q: ...\nA:"), or "chat": a user
    # message in the chat template (shots as earlier turns), answered until <|end_of_turn|>
    format: str = "few-shot"
    # HumanEval: samples per problem (1: greedy), pass@k reported for each k <= samples
    humaneval_samples: int = 5
    humaneval_k: list[int] = field(default_factory=lambda: [1, 5])
    humaneval_temperature: float = 0.8  # Chen et al. 2021 sampled pass@k>1 at 0.8 (pass@1 at 0.2)
    humaneval_max_new_tokens: int = 128
    humaneval_limit: int = 0  # problems (0: all 164)
    # bits per byte on the validation shards: at most this many bytes per domain (0: all)
    bpb_max_bytes: int = 2_000_000

    def check(self, key: str = "eval") -> None:
        if self.format not in ("few-shot", "chat"):
            raise ConfigError(f'{key}.format must be "few-shot" or "chat", not {self.format!r}')
        if self.items < 1 or self.shots < 0 or self.humaneval_samples < 1 or self.humaneval_max_new_tokens < 1:
            raise ConfigError(f"{key}.items, {key}.humaneval_samples and {key}.humaneval_max_new_tokens must be 1 "
                              f"or more, {key}.shots 0 or more")
        if any(k < 1 or k > self.humaneval_samples for k in self.humaneval_k):
            raise ConfigError(f"{key}.humaneval_k {self.humaneval_k}: each k must be between 1 and "
                              f"{key}.humaneval_samples ({self.humaneval_samples}); pass@k needs at least k samples")


LAUNCH_ENGINES = ("slurm", "ray")
_SLURM_TIME = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?")
_SLURM_WORD = re.compile(r"[^\s'\"`$\\;|&<>]*")  # a partition, account or QoS name: no spaces, quotes or shell


def slurm_time_seconds(text: str) -> int | None:
    """Seconds in a Slurm time limit ("MM", "MM:SS", "HH:MM:SS", "D-HH", "D-HH:MM", "D-HH:MM:SS"),
    or None when `text` is not one."""
    m = _SLURM_TIME.fullmatch(text.strip())
    if not m:
        return None
    days, a, b, c = m.groups()
    if days is not None:
        return ((int(days) * 24 + int(a)) * 60 + int(b or 0)) * 60 + int(c or 0)
    if c is not None:
        return (int(a) * 60 + int(b)) * 60 + int(c)
    return int(a) * 60 + int(b) if b is not None else int(a) * 60


@dataclass
class LaunchConfig:
    """Where `loom launch` hands the run (loom.launch): a Slurm batch job or a Ray cluster.
    `loom train` itself ignores this section."""

    engine: str = "slurm"  # slurm | ray (`loom launch --engine` overrides)
    nodes: int = 1
    procs_per_node: int = 0  # training processes per node (0: gpus_per_node, or 1 without GPUs)
    gpus_per_node: int = 0  # slurm: --gpus-per-node; ray: one GPU per worker when > 0
    cpus_per_proc: int = 1  # CPUs per training process (slurm: --cpus-per-task is this x procs_per_node)
    mem: str = ""  # slurm: --mem per node, e.g. 64G (empty: the partition's default)
    time: str = "04:00:00"  # slurm: --time of each attempt (D-HH:MM:SS, HH:MM:SS, MM...; empty: the default)
    partition: str = ""  # slurm: --partition (empty: the cluster's default)
    account: str = ""  # slurm: --account (empty: your default)
    qos: str = ""  # slurm: --qos (empty: the default)
    signal_seconds: int = 120  # slurm: SIGUSR1 this long before the time limit, to checkpoint (0: none)
    requeue: bool = True  # slurm: --requeue, and the job requeues itself after that signal
    max_restarts: int = 3  # failed workers restarted within one attempt (torchrun --max-restarts, Ray max_failures)
    port: int = 0  # slurm: the rendezvous port on the first node (0: 20000 + job id % 20000)
    sbatch_lines: list[str] = field(default_factory=list)  # more sbatch options, e.g. ["--exclusive"]
    setup: list[str] = field(default_factory=list)  # shell lines run before srun, e.g. ["module load cuda"]
    submit: bool = True  # slurm: false writes the sbatch script and stops
    ray_address: str = ""  # ray: "" starts a Ray instance here for the run; "auto" or host:port joins one

    @property
    def procs(self) -> int:
        """Training processes per node."""
        return self.procs_per_node or self.gpus_per_node or 1

    def check(self, key: str = "launch") -> None:
        if self.engine not in LAUNCH_ENGINES:
            raise ConfigError(f"{key}.engine {self.engine!r} is not known; use {' or '.join(LAUNCH_ENGINES)}")
        require_positive(self, key, "nodes", "cpus_per_proc")
        require_non_negative(self, key, "procs_per_node", "gpus_per_node", "signal_seconds", "max_restarts", "port")
        if self.gpus_per_node and self.procs_per_node not in (0, self.gpus_per_node):
            raise ConfigError(f"{key}.procs_per_node ({self.procs_per_node}) must equal {key}.gpus_per_node "
                              f"({self.gpus_per_node}), one process per GPU; leave it at 0 to take that")
        if self.port and not 1024 <= self.port <= 65535:
            raise ConfigError(f"{key}.port must be 0 (derived from the job id) or a port from 1024 to 65535, "
                              f"not {self.port}")
        limit = slurm_time_seconds(self.time) if self.time else None
        if self.time and limit is None:
            raise ConfigError(f"{key}.time {self.time!r} is not a Slurm time limit; write e.g. \"04:00:00\", "
                              "\"1-12:00:00\" (1 day 12 hours) or \"90\" (minutes)")
        if self.signal_seconds > 65535:
            raise ConfigError(f"{key}.signal_seconds must be at most 65535 (Slurm's limit), not {self.signal_seconds}")
        if limit is not None and self.signal_seconds >= limit:
            raise ConfigError(f"{key}.signal_seconds ({self.signal_seconds}) must be shorter than {key}.time "
                              f"({self.time} = {limit}s): the warning would come at the start; lower it or "
                              "raise the time limit")
        if self.mem and not re.fullmatch(r"\d+[KMGT]?", self.mem):
            raise ConfigError(f"{key}.mem {self.mem!r} is not a Slurm memory size; write e.g. \"64G\" or \"512000M\"")
        for name in ("partition", "account", "qos"):
            if not _SLURM_WORD.fullmatch(getattr(self, name)):
                raise ConfigError(f"{key}.{name} {getattr(self, name)!r} must be a name without spaces, quotes or "
                                  "shell characters")
        for i, line in enumerate(self.sbatch_lines):
            if not line.startswith("-") or "\n" in line:
                raise ConfigError(f"{key}.sbatch_lines[{i}] {line!r} must be one sbatch option, e.g. \"--exclusive\" "
                                  "or \"--constraint=h100\"")
        for i, line in enumerate(self.setup):
            if "\n" in line:
                raise ConfigError(f"{key}.setup[{i}] holds a line break; give each shell line its own list item")
        address = self.ray_address
        if address not in ("", "auto") and not (address.startswith("ray://") or re.fullmatch(r"[\w.-]+:\d+", address)):
            raise ConfigError(f"{key}.ray_address {address!r} is not a Ray address; use \"\" (a Ray instance "
                              "started here), \"auto\" (the cluster this machine is in) or host:port")


@dataclass
class LoomConfig:
    run: RunConfig = field(default_factory=RunConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)
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
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    faults: FaultConfig = field(default_factory=FaultConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.run.dir) / self.run.name

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    def check(self) -> None:
        """Every section's own checks (each `check` beside its dataclass), then what spans two."""
        for f in dataclasses.fields(self):
            section = getattr(self, f.name)
            if hasattr(section, "check"):
                section.check(f.name)
        m, t = self.model, self.train
        if m.vocab_size < self.tokenizer.vocab_size:
            raise ConfigError(f"model.vocab_size ({m.vocab_size}) is smaller than tokenizer.vocab_size "
                              f"({self.tokenizer.vocab_size}); leave it out to take the tokenizer's")
        if t.seq_len > m.max_seq_len:
            raise ConfigError(f"train.seq_len ({t.seq_len}) exceeds model.max_seq_len ({m.max_seq_len}); "
                              "raise the latter")
        tp = self.parallel.tp
        if t.float8 and tp > 1:
            raise ConfigError(f"train.float8 with parallel.tp = {tp}: loom does not give the tensor-parallel "
                              "layers torchao's float8 plans yet; leave tp at 1 (data parallel or parallel.dp_shard "
                              "shard float8 models) or turn float8 off")
        if t.optimizer == "muon" and (tp > 1 or self.parallel.dp_shard > 1):
            raise ConfigError("train.optimizer = \"muon\" with parallel.tp or parallel.dp_shard above 1: Muon "
                              "orthogonalises each whole matrix, and loom does not gather sharded ones for it yet; "
                              "train Muon on one process or with data parallel (dp_replicate), or use adamw")
        if tp > 1:
            if m.moe.enabled:
                raise ConfigError(f"parallel.tp = {tp} with an MoE model (model.moe.n_experts = {m.moe.n_experts}): "
                                  "loom does not split experts across ranks yet; shard the MoE model with "
                                  "parallel.dp_shard instead, or leave tp at 1")
            if m.qk_norm:  # its gains serve every head: each rank would see only its heads' share of their gradient
                raise ConfigError(f"parallel.tp = {tp} with model.qk_norm: loom does not sum the query/key norm "
                                  "gradients over the tensor-parallel group yet; leave tp at 1 (data parallel or "
                                  "parallel.dp_shard) or turn qk_norm off")
            for name, value in (("model.n_head", m.n_head), ("model.n_kv_head", m.n_kv_head),
                                ("train.seq_len", t.seq_len),
                                ("the MLP width (model.mlp_ratio x d_model)", m.mlp_hidden)):
                if value % tp:
                    raise ConfigError(f"{name} ({value}) must be divisible by parallel.tp ({tp}): tensor parallel "
                                      "splits heads and hidden units, and sequence parallel splits the sequence, "
                                      "evenly; pick a tp that divides it")


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
    """Raises `ConfigError` for the first setting that is wrong, prefixed by where the config
    came from (the file, the `--set` overrides)."""
    try:
        cfg.check()
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


