"""The batch loader: fixed-length training windows from token shards, deterministic and resumable.

Each shard file is cut into non-overlapping windows of `seq_len + 1` tokens (inputs and the
targets shifted by one); the tail shorter than a window is not used. Every epoch visits all
windows once in an order drawn from `(seed, epoch)`. A global batch is the next
`batch_size * world_size` windows of that order, and rank r takes the r-th contiguous slice of
it, so ranks never share a window, and the union over ranks is the same set whatever the number
of processes: one process with gradient accumulation sees what N processes see together.

The position is two integers (epoch, cursor), reported by `state_dict` and restored by
`load_state_dict`, so a resumed run continues with exactly the next batch.

Does not own: how the shards were made (see `loom.data.shards`), devices or the model.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from loom.data.shards import open_tokens, read_manifest, split_files
from loom.errors import DataError


class WindowLoader:
    """Batches of fixed windows in a seeded order per epoch, split disjointly across ranks, with a
    position (epoch, cursor) to save and restore. Subclasses say how many windows there are
    (`num_windows`) and what a batch of them holds (`_batch`)."""

    def __init__(self, num_windows: int, seq_len: int, batch_size: int, rank: int, world_size: int, seed: int):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.num_windows, self.seq_len, self.seed = num_windows, seq_len, seed
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.epoch, self.cursor = 0, 0
        self._order_epoch, self._order = -1, None

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    @property
    def batches_per_epoch(self) -> int:
        return self.num_windows // self.global_batch

    def _epoch_order(self) -> np.ndarray:
        if self._order_epoch != self.epoch:
            self._order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_windows)
            self._order_epoch = self.epoch
        return self._order

    def _batch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next (inputs, targets), each (batch_size, seq_len) int64 on the CPU."""
        if self.cursor + self.global_batch > self.num_windows:
            self.epoch, self.cursor = self.epoch + 1, 0  # the remainder of an epoch is dropped
        begin = self.cursor + self.rank * self.batch_size
        indices = self._epoch_order()[begin : begin + self.batch_size]
        self.cursor += self.global_batch
        return self._batch(indices)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor, "seed": self.seed, "seq_len": self.seq_len,
                "num_windows": self.num_windows}

    def load_state_dict(self, state: dict) -> None:
        for key in ("seed", "seq_len", "num_windows"):
            if state[key] != getattr(self, key):
                raise DataError(
                    f"cannot restore the loader position: {key} was {state[key]} when it was saved and "
                    f"is {getattr(self, key)} now (the data or settings changed since the checkpoint)"
                )
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])


class ShardLoader(WindowLoader):
    def __init__(
        self,
        shard_dir: str | os.PathLike,
        split: str,
        seq_len: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
    ):
        manifest = read_manifest(shard_dir)
        self.shard_dir, self.split = str(shard_dir), split
        self.vocab_size = manifest["vocab_size"]
        self.shards = [open_tokens(shard_dir, f, manifest["dtype"]) for f in split_files(shard_dir, split, manifest)]
        window = seq_len + 1
        per_shard = [len(s) // window for s in self.shards]
        self.first_window = np.cumsum([0] + per_shard)  # global index of each shard's first window
        super().__init__(int(self.first_window[-1]), seq_len, batch_size, rank, world_size, seed)
        if self.num_windows < self.global_batch:
            raise DataError(
                f"{shard_dir}: the {split!r} split has {self.num_windows} windows of {window} tokens, "
                f"fewer than one global batch ({self.global_batch}); use more data "
                "(data.sources, data.val_fraction) or a smaller batch or seq_len"
            )

    def _window(self, index: int) -> np.ndarray:
        shard = int(np.searchsorted(self.first_window, index, side="right")) - 1
        start = (index - self.first_window[shard]) * (self.seq_len + 1)
        return self.shards[shard][start : start + self.seq_len + 1]

    def _batch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        windows = torch.from_numpy(np.stack([self._window(i) for i in indices]).astype(np.int64))
        return windows[:, :-1], windows[:, 1:]
