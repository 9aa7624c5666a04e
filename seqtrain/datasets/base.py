"""The Dataset contract and RETURNN's epoch-wise sequence ordering and partitioning.

A dataset knows its sequences and their lengths; it knows nothing of torch or batching. `init_epoch`
fixes the epoch's order exactly as RETURNN's `Dataset.get_seq_order_for_epoch` does, so the same
config gives the same order in both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from seqtrain.config import opt
from seqtrain.errors import ConfigError


@dataclass
class DataSpec:
    """One data key: its feature size (or vocabulary size if sparse), whether it has a time axis."""

    dim: int
    sparse: bool = False
    dtype: str = "float32"
    time: bool = True
    vocab: list[str] | None = None


@dataclass
class DatasetOptions:
    """Options every dataset has; each dataset's schema extends this."""

    seq_ordering: str = opt(
        "default",
        "default, reverse, sorted, sorted_reverse, random[:N], laplace[:[.]N], sort_bin_shuffle[_x2][:[.]N]",
    )
    partition_epoch: int = opt(1, "split the data into this many sub-epochs")
    random_seed_offset: int = opt(0, "added to the epoch's seed for random orderings")
    fixed_random_seed: int | None = opt(None, "use this seed in every epoch (fixed order / fixed data)")


class Dataset:
    """Base of all datasets: sequences by corpus index, and the order of the current epoch."""

    registered_name = "?"

    def __init__(self, opts: DatasetOptions, name: str):
        self.opts = opts
        self.name = name  # config path, e.g. "dataset.train", used in messages
        self.epoch: int | None = None
        self.seq_order: np.ndarray = np.zeros(0, dtype=np.int64)
        check_seq_ordering(opts.seq_ordering, name)
        if opts.partition_epoch < 1:
            raise ConfigError(f"{name}.partition_epoch: must be >= 1, got {opts.partition_epoch}")

    # --- to implement ---
    @property
    def num_seqs(self) -> int:
        raise NotImplementedError

    @property
    def extern_data(self) -> dict[str, DataSpec]:
        raise NotImplementedError

    def get_seq(self, idx: int) -> dict[str, np.ndarray]:
        """The data of corpus sequence `idx`, per key (time first)."""
        raise NotImplementedError

    def seq_tag(self, idx: int) -> str:
        return f"{self.name}/seq-{idx}"

    def seq_len(self, idx: int) -> dict[str, int]:
        """Lengths per data key; override where they are cheaper than loading the sequence."""
        return {k: len(v) for k, v in self.get_seq(idx).items() if self.extern_data[k].time}

    def prepare_epoch(self, epoch: int) -> None:
        """Hook for datasets whose content depends on the epoch (generated data); called before ordering."""

    # --- provided ---
    def init_epoch(self, epoch: int) -> None:
        """Fix the sequence order of `epoch` (1-based)."""
        if epoch == self.epoch:
            return
        self.epoch = epoch
        self.prepare_epoch(epoch)
        self.seq_order = self.seq_order_for_epoch(epoch)

    def random_seed_for_epoch(self, epoch: int, num_epochs_fixed: int = 1) -> int:
        # RETURNN Dataset._get_random_seed_for_epoch: constant over a partitioned full epoch.
        if self.opts.fixed_random_seed is not None:
            return self.opts.fixed_random_seed
        seed = epoch
        if self.opts.partition_epoch > 1:
            seed = (seed - 1) // self.opts.partition_epoch + 1
        if num_epochs_fixed > 1:
            seed = (seed - 1) // num_epochs_fixed + 1
        return seed + self.opts.random_seed_offset

    def seq_order_for_epoch(self, epoch: int) -> np.ndarray:
        full = full_epoch_order(self, self.opts.seq_ordering, epoch)
        return partition(full, self.opts.partition_epoch, epoch)

    def sort_key_len(self, idx: int) -> int:
        """The length `sorted`/`laplace` orderings use: the `data` key, as in RETURNN."""
        lens = self.seq_len(idx)
        return lens.get("data", max(lens.values(), default=0))


def check_seq_ordering(mode: str, where: str) -> None:
    base, *args = mode.split(":")
    with_args = {"random", "laplace", "sort_bin_shuffle", "sort_bin_shuffle_x2"}
    known = {"default", "reverse", "sorted", "sorted_reverse"} | with_args
    ok = base in known and (not args or base in with_args) and len(args) <= 2
    ok = ok and all(a.lstrip(".").isdigit() for a in args)
    if not ok:
        raise ConfigError(f"{where}.seq_ordering: invalid {mode!r}; known: {', '.join(sorted(known))}")


def full_epoch_order(ds: Dataset, mode: str, epoch: int) -> np.ndarray:
    """RETURNN's seq_ordering over the whole corpus (before partition_epoch)."""
    n = ds.num_seqs
    base, *args = mode.split(":")
    if base == "default":
        return np.arange(n)
    if base == "reverse":
        return np.arange(n)[::-1].copy()
    if base in ("sorted", "sorted_reverse"):
        lens = _seq_lens(ds)
        return np.argsort(-lens if base == "sorted_reverse" else lens, kind="stable")
    if base == "random":
        nth = int(args[0]) if args else 1
        return np.random.RandomState(ds.random_seed_for_epoch(epoch, nth)).permutation(n)
    bins, nth = _bins_and_nth(args, n)
    rng = np.random.RandomState(ds.random_seed_for_epoch(epoch, nth))
    if base == "laplace":
        return _laplace(rng.permutation(n), _seq_lens(ds), bins)
    return _sort_bin_shuffle(rng, n, _seq_lens(ds), bins, shuffle_in_bin=base.endswith("_x2"))


def _seq_lens(ds: Dataset) -> np.ndarray:
    return np.array([ds.sort_key_len(i) for i in range(ds.num_seqs)], dtype=np.int64)


def _bins_and_nth(args: list[str], num_seqs: int) -> tuple[int, int]:
    if not args:
        bins = 2
    elif args[0].startswith("."):  # ".N": about N sequences per bin
        bins = max(num_seqs // int(args[0][1:]), 2)
    else:
        bins = int(args[0])
    nth = int(args[1]) if len(args) > 1 else 1
    return bins, nth


def _laplace(perm: np.ndarray, lens: np.ndarray, bins: int) -> np.ndarray:
    # Random bins, sorted alternately ascending and descending: lengths rise and fall like a saw.
    parts = []
    for i in range(bins):
        part = perm[i * len(perm) // bins : (i + 1) * len(perm) // bins]
        key = -lens[part] if i % 2 == 1 else lens[part]
        parts.append(part[np.argsort(key, kind="stable")])
    return np.concatenate(parts) if parts else perm


def _sort_bin_shuffle(rng, n: int, lens: np.ndarray, bins: int, shuffle_in_bin: bool) -> np.ndarray:
    # Shuffle, sort by length (stable), then visit the length bins in random order.
    order = sorted(rng.permutation(n).tolist(), key=lambda i: lens[i])
    parts = []
    for b in rng.permutation(bins):
        end = None if b == bins - 1 else (b + 1) * n // bins
        part = list(order[b * n // bins : end])
        if shuffle_in_bin:
            rng.shuffle(part)
        parts.append(np.asarray(part, dtype=np.int64))
    return np.concatenate(parts)


def partition(order: np.ndarray, parts: int, epoch: int, num_shards: int = 1, shard: int = 0) -> np.ndarray:
    """The slice of the full-epoch order that sub-epoch `epoch` (and shard) reads, as RETURNN splits it."""
    if parts == 1 and num_shards == 1:
        return np.asarray(order)
    n = len(order)
    num = parts * num_shards
    current = ((epoch - 1) % parts) * num_shards + shard
    sizes = [n // num + 1] * (n % num) + [n // num] * (num - n % num)
    start = sum(sizes[:current])
    return np.asarray(order[start : start + sizes[current]])


def build_dataset(options: dict[str, Any] | None, where: str):
    """Build a dataset from its config dict (`class` picks it in the registry)."""
    from seqtrain.datasets import DATASETS
    from seqtrain.registry import parse_options

    if options is None:
        return None
    options = dict(options)
    name = options.pop("class", None)
    if name is None:
        raise ConfigError(f"{where}: missing 'class'; known: {', '.join(DATASETS.names())}")
    cls, schema = DATASETS.get(name, f"{where}.class")
    return cls(parse_options(schema, options, where), where)
