"""Copy and reverse tasks: random label sequences whose target is the input itself or the input reversed.

Like RETURNN's CopyTaskDataset (uniform lengths in [min_len, max_len], uniform symbols), with `reverse`
for the classic seq2seq sanity check. Regenerated each epoch; `fixed_random_seed` fixes it (e.g. for dev).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from seqtrain.config import opt
from seqtrain.datasets import DATASETS
from seqtrain.datasets.base import DataSpec
from seqtrain.datasets.generating import GeneratingDataset, GeneratingOptions
from seqtrain.errors import ConfigError


@dataclass
class CopyTaskOptions(GeneratingOptions):
    vocab_size: int = opt(10, "number of symbols (labels 0..vocab_size-1)")
    min_len: int = opt(1, "shortest sequence", ge=0)
    max_len: int = opt(20, "longest sequence (inclusive)", ge=1)
    reverse: bool = opt(False, "target is the input reversed (else: copied)")


@DATASETS.register("copy_task", CopyTaskOptions)
class CopyTaskDataset(GeneratingDataset):
    """`data` and `classes` are sparse int32 label sequences of equal length."""

    def __init__(self, opts: CopyTaskOptions, name: str):
        super().__init__(opts, name)
        if opts.vocab_size < 1:
            raise ConfigError(f"{name}.vocab_size: must be >= 1, got {opts.vocab_size}")
        if not 1 <= opts.min_len <= opts.max_len:
            raise ConfigError(
                f"{name}.min_len/max_len: need 1 <= min_len <= max_len, got {opts.min_len}, {opts.max_len}"
            )

    @property
    def extern_data(self) -> dict[str, DataSpec]:
        spec = DataSpec(self.opts.vocab_size, sparse=True, dtype="int32")
        return {"data": spec, "classes": spec}

    def generate_seq(self, rng: random.Random) -> dict[str, np.ndarray]:
        n = rng.randint(self.opts.min_len, self.opts.max_len)
        seq = np.asarray([rng.randrange(self.opts.vocab_size) for _ in range(n)], dtype=np.int32)
        return {"data": seq, "classes": seq[::-1].copy() if self.opts.reverse else seq}
