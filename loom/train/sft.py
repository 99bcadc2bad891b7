"""Supervised fine-tuning on conversations: the pretraining loop with another data source.

`sft(base_run, data, overrides)` makes a new run that starts from the base run's newest weights
(a fresh optimizer, and the schedule of its own `[train]`: steps, warmup, learning rate) and
trains on conversations (`loom.chat`): rendered with the base run's tokenizer, packed best fit
into sequences of `train.seq_len + 1` tokens, each conversation whole. The targets of every token
the assistant did not write are -100, which cross-entropy ignores, so the loss is the mean over
assistant tokens only and `next_token_loss` serves unchanged. Guards, checkpoints, exact resume,
cost and the report are the Trainer's, as in pretraining.

Every `val_every`-th conversation (by its place in the files) is held out for the validation
loss. A micro-batch's loss is the mean over its own assistant tokens, and micro-batches count
alike in a step (not weighted by how many assistant tokens each holds).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from loom.chat import pack, read_conversations, render
from loom.checkpoint import find_resumable
from loom.config import LoomConfig, load_config
from loom.data import WindowLoader
from loom.errors import ConfigError, DataError
from loom.tokenizer import Tokenizer

IGNORED = -100  # F.cross_entropy's ignore_index


class ConversationLoader(WindowLoader):
    """Packed conversation sequences, in the loader contract of `ShardLoader`: inputs, and
    targets that are -100 wherever the assistant did not write the token."""

    def __init__(self, ids: np.ndarray, trained: np.ndarray, batch_size: int, rank: int, world_size: int,
                 seed: int):
        super().__init__(len(ids), ids.shape[1] - 1, batch_size, rank, world_size, seed)
        self.ids, self.trained = ids, trained

    def _batch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.from_numpy(self.ids[indices])
        targets = ids[:, 1:].clone()
        targets[~torch.from_numpy(self.trained[indices, 1:])] = IGNORED
        return ids[:, :-1], targets


class ConversationData:
    """The data source of an SFT run: conversations from JSONL files, packed; a share held out."""

    def __init__(self, paths: list[Path], tokenizer: Path, t, seed: int, val_every: int = 20):
        self.tokenizer, self.t, self.seed = tokenizer, t, seed
        tok = Tokenizer.from_file(tokenizer)
        rendered = [render(tok, messages) for path in paths for messages in read_conversations(path, True)]
        if len(rendered) < 2:
            raise DataError(f"{', '.join(map(str, paths))}: {len(rendered)} conversation(s); SFT needs at least "
                            "two (one is held out for validation)")
        held_out = [r for i, r in enumerate(rendered) if i % val_every == 0]
        kept = [r for i, r in enumerate(rendered) if i % val_every]
        self.splits = {}
        for name, part in (("train", kept), ("val", held_out)):
            packed = pack(part, t.seq_len + 1, tok.pad_id)
            if not packed.sequences:
                raise DataError(f"no {name} conversation fits in train.seq_len + 1 = {t.seq_len + 1} tokens "
                                f"({len(packed.dropped)} longer); raise train.seq_len")
            self.splits[name] = (np.array([s.ids for s in packed.sequences], dtype=np.int64),
                                 np.array([s.mask for s in packed.sequences], dtype=bool))
            self.splits[name + "_dropped"] = len(packed.dropped)
            self.splits[name + "_fill"] = packed.fill

    def _loader(self, split: str, rank: int, world_size: int) -> ConversationLoader:
        ids, trained = self.splits[split]
        if len(ids) < self.t.micro_batch * world_size:
            raise DataError(f"the {split} conversations pack into {len(ids)} sequence(s) of {self.t.seq_len + 1} "
                            f"tokens, fewer than one batch ({self.t.micro_batch} x {world_size} rank(s)); add "
                            "conversations or lower train.micro_batch")
        return ConversationLoader(ids, trained, self.t.micro_batch, rank, world_size, self.seed)

    def train_batches(self, rank: int, world_size: int) -> ConversationLoader:
        return self._loader("train", rank, world_size)

    def val_batches(self, rank: int, world_size: int) -> ConversationLoader:
        return self._loader("val", rank, world_size)


def sft_config(base_run: str | os.PathLike, overrides: list[str]) -> tuple[LoomConfig, Path]:
    """The SFT run's config (the base run's, `run.name` = `<base>-sft` unless set, then the
    overrides) and the base checkpoint it starts from."""
    base = Path(base_run)
    if not (base / "config.toml").is_file():
        raise ConfigError(f"{base} is not a loom run (no config.toml); give --run a trained run directory")
    checkpoint, notes = find_resumable(base / "checkpoints")
    if checkpoint is None:
        raise ConfigError(f"{base} has no complete checkpoint to start from" + (f" ({'; '.join(notes)})" if notes
                                                                                 else ""))
    cfg = load_config(base / "config.toml", [f'run.name="{base.name}-sft"', *overrides])
    if cfg.run_dir.resolve() == base.resolve():
        raise ConfigError(f"run.name {cfg.run.name!r} is the base run itself; pick another name for the SFT run")
    return cfg, checkpoint


def sft(base_run: str | os.PathLike, data: list[str | os.PathLike], overrides: list[str] = (),
        resume: str = "auto") -> dict:
    """Fine-tunes a copy of `base_run` on the conversations in `data`; returns the run summary."""
    from loom.train.trainer import train

    cfg, checkpoint = sft_config(base_run, list(overrides))
    paths = [Path(p) for p in data]
    source = ConversationData(paths, Path(base_run) / "tokenizer.json", cfg.train, cfg.run.seed)
    return train(cfg, resume, data=source, init_from=checkpoint)
