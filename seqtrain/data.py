"""Dataset → batches: RETURNN's frame-budget batching, max_seqs, length filters, chunking, padding, workers.

Batches are planned in the main process from the epoch's order and the sequence lengths, then loaded and
padded by a DataLoader (in worker processes when `num_workers > 0`). The DataLoader keeps the planned
order, so the batches are the same whatever the number of workers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from seqtrain.config import BatchingConfig
from seqtrain.datasets.base import Dataset, DataSpec
from seqtrain.errors import ConfigError, DataError
from seqtrain.tensor import Dim, Tensor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Slice:
    """Frames [start, end) of corpus sequence `idx` (the whole sequence unless chunking)."""

    idx: int
    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start


def parse_chunking(chunking: str | None) -> tuple[int, int] | None:
    if not chunking:
        return None
    try:
        size, step = (int(x) for x in str(chunking).split(":"))
    except ValueError:
        raise ConfigError(f"batching.chunking: expected 'size:step', got {chunking!r}") from None
    if size <= 0 or step <= 0:
        raise ConfigError(f"batching.chunking: size and step must be positive, got {chunking!r}")
    return size, step


def chunk(idx: int, length: int, size: int, step: int) -> list[Slice]:
    """RETURNN's chunking: windows of `size` frames every `step` frames; the last ones may be shorter."""
    return [Slice(idx, t, min(t + size, length)) for t in range(0, max(length, 1), step)]


def plan_batches(
    slices: Sequence[Slice], batch_size: int, max_seqs: int, where: str = "batching"
) -> list[list[Slice]]:
    """Group slices in order: a batch's padded size `max_len * num_seqs` never exceeds `batch_size`."""
    batches: list[list[Slice]] = []
    current: list[Slice] = []
    max_len = 0
    for s in slices:
        if s.length > batch_size:
            log.warning(
                "%s: sequence %d has %d frames > batch_size %d; it forms its own batch",
                where,
                s.idx,
                s.length,
                batch_size,
            )
        new_max = max(max_len, s.length)
        if current and (new_max * (len(current) + 1) > batch_size or len(current) + 1 > max_seqs):
            batches.append(current)
            current, new_max = [], s.length
        current.append(s)
        max_len = new_max
    if current:
        batches.append(current)
    return batches


def seq_lens_of(ds: Dataset, idx: int) -> dict[str, int]:
    try:
        return ds.seq_len(idx)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{ds.name}: cannot load sequence {ds.seq_tag(idx)}: {exc}") from exc


def epoch_slices(ds: Dataset, cfg: BatchingConfig, train: bool) -> list[Slice]:
    """The epoch's sequences as slices: length filters and chunking apply to training data only."""
    chunking = parse_chunking(cfg.chunking) if train else None
    out, dropped = [], 0
    for idx in ds.seq_order:
        lens = seq_lens_of(ds, int(idx))
        length = max(lens.values(), default=1)
        if train and (
            (cfg.max_seq_length and length > cfg.max_seq_length)
            or (cfg.min_seq_length and length < cfg.min_seq_length)
        ):
            dropped += 1
            continue
        if chunking:
            if len(set(lens.values())) > 1:
                raise DataError(
                    f"{ds.name}: chunking needs equal lengths for all keys, got {lens} "
                    f"for sequence {ds.seq_tag(int(idx))}"
                )
            out.extend(chunk(int(idx), length, *chunking))
        else:
            out.append(Slice(int(idx), 0, length))
    if dropped:
        log.info(
            "%s epoch %s: %d of %d sequences dropped by max/min_seq_length",
            ds.name,
            ds.epoch,
            dropped,
            len(ds.seq_order),
        )
    return out


@dataclass
class Batch:
    """Padded data per key with the lengths of each sequence, and the sequence tags."""

    data: dict[str, torch.Tensor]
    seq_lens: dict[str, torch.Tensor]
    tags: list[str]

    @property
    def num_seqs(self) -> int:
        return len(self.tags)

    def num_frames(self) -> int:
        """Input frames (key `data`, else the first key): what frames/s counts."""
        key = "data" if "data" in self.seq_lens else next(iter(self.seq_lens))
        return int(self.seq_lens[key].sum())

    def tensors(self, specs: dict[str, DataSpec], device: torch.device) -> dict[str, Tensor]:
        """Tensors on `device`; keys of the same length per sequence share one time Dim."""
        batch_dim = Dim("batch", size=self.num_seqs)
        time_dims: dict[tuple[int, ...], Dim] = {}
        out = {}
        for key, raw in self.data.items():
            spec = specs[key]
            dims = [batch_dim]
            if spec.time:
                lens = self.seq_lens[key]
                sig = tuple(lens.tolist())
                if sig not in time_dims:
                    time_dims[sig] = Dim(f"time:{key}", seq_lens=lens.to(device))
                dims.append(time_dims[sig])
            sparse = Dim(f"vocab:{key}", size=spec.dim) if spec.sparse else None
            if not spec.sparse:
                dims.append(Dim(f"feature:{key}", size=spec.dim))
            out[key] = Tensor(raw.to(device, non_blocking=True), tuple(dims), sparse)
        return out


class SeqLoader(torch.utils.data.Dataset):
    """Loads and pads one planned batch; runs in a DataLoader worker (or the main process).

    DataLoader hands `__getitems__` the whole batch plan `[(epoch, Slice), ...]`: the plan is made in the
    main process, so workers only load, and the batches stay the same with any number of workers.
    """

    def __init__(self, ds: Dataset):
        self.ds = ds

    def __getitems__(self, items: list[tuple[int, Slice]]) -> Batch:
        epoch = items[0][0]
        self.ds.init_epoch(epoch)  # a worker's copy of the dataset follows the main process's epoch
        slices = [s for _, s in items]
        seqs = []
        for s in slices:
            try:
                seq = self.ds.get_seq(s.idx)
            except DataError:
                raise
            except Exception as exc:
                raise DataError(
                    f"{self.ds.name}: cannot load sequence {self.ds.seq_tag(s.idx)}: {exc}"
                ) from exc
            seqs.append({k: v[s.start : s.end] if self.ds.extern_data[k].time else v for k, v in seq.items()})
        # A chunk's tag names its first frame, so a bad chunk can be found in its sequence.
        tags = [self.ds.seq_tag(s.idx) + (f"@{s.start}" if s.start else "") for s in slices]
        data, lens = {}, {}
        for key, spec in self.ds.extern_data.items():
            data[key], lens[key] = pad([seq[key] for seq in seqs], spec)
        return Batch(data, lens, tags)

    def __len__(self) -> int:
        return self.ds.num_seqs


def pad(arrays: list[np.ndarray], spec: DataSpec) -> tuple[torch.Tensor, torch.Tensor]:
    lens = torch.tensor([len(a) if spec.time else 1 for a in arrays], dtype=torch.int64)
    if not spec.time:
        return torch.as_tensor(np.stack(arrays)), lens
    max_len = int(lens.max()) if len(arrays) else 0
    first = arrays[0]
    out = np.zeros((len(arrays), max_len, *first.shape[1:]), dtype=first.dtype)
    for i, a in enumerate(arrays):
        out[i, : len(a)] = a
    raw = torch.from_numpy(out)
    if spec.sparse:
        raw = raw.long()
    return raw, lens


class _PlanSampler:
    """Yields the current epoch's planned batches (in the main process); set `plan` before each epoch."""

    def __init__(self):
        self.plan: list[list[tuple[int, Slice]]] = []

    def __iter__(self):
        return iter(self.plan)

    def __len__(self) -> int:
        return len(self.plan)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers share the cores with the training step; one thread each


def _identity(batch: Batch) -> Batch:
    return batch


class BatchLoader:
    """The batches of one dataset, epoch after epoch, with persistent workers.

    With `num_shards > 1` (distributed training) every shard plans the same global batches and takes every
    `num_shards`-th of them; with `equal_steps`, when they do not divide evenly, the first batches repeat
    so that all shards run the same number of steps (a rank without data would hang the others).
    """

    def __init__(
        self,
        ds: Dataset,
        cfg: BatchingConfig,
        train: bool,
        num_shards: int = 1,
        shard: int = 0,
        equal_steps: bool = True,
    ):
        self.ds, self.cfg, self.train = ds, cfg, train
        self.num_shards, self.shard, self.equal_steps = num_shards, shard, equal_steps
        self.batch_size = cfg.batch_size if train else (cfg.eval_batch_size or cfg.batch_size)
        self.sampler = _PlanSampler()
        workers = cfg.num_workers
        self.loader = DataLoader(
            SeqLoader(ds),
            batch_sampler=self.sampler,
            collate_fn=_identity,
            num_workers=workers,
            prefetch_factor=cfg.prefetch_factor if workers else None,
            persistent_workers=workers > 0,
            worker_init_fn=_worker_init if workers else None,
            generator=torch.Generator(),  # keeps the global RNG untouched, so resumed runs match
        )

    def plan(self, epoch: int) -> list[list[Slice]]:
        self.ds.init_epoch(epoch)
        batches = plan_batches(
            epoch_slices(self.ds, self.cfg, self.train),
            self.batch_size,
            self.cfg.max_seqs,
            "batching.batch_size",
        )
        if self.num_shards == 1:
            return batches
        missing = -len(batches) % self.num_shards if self.equal_steps else 0
        if missing and not batches:
            raise DataError(f"{self.ds.name}: epoch {epoch} has no batch to shard")
        if missing:
            log.info(
                "%s epoch %d: %d batches for %d shards; repeating the first %d so all run the same steps",
                self.ds.name,
                epoch,
                len(batches),
                self.num_shards,
                missing,
            )
            batches = batches + batches[:missing]
        return batches[self.shard :: self.num_shards]

    def epoch(self, epoch: int) -> Iterator[Batch]:
        self.sampler.plan = [[(epoch, s) for s in batch] for batch in self.plan(epoch)]
        try:
            yield from self.loader
        except DataError as exc:  # from a worker: the message carries the worker's traceback text
            raise DataError(str(exc).strip().splitlines()[-1].split("DataError: ", 1)[-1]) from None


def iterate_batches(ds: Dataset, cfg: BatchingConfig, epoch: int, train: bool) -> Iterator[Batch]:
    """The batches of one epoch, without keeping workers (for tools and tests)."""
    yield from BatchLoader(ds, cfg, train).epoch(epoch)
