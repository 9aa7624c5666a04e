import logging

import numpy as np
import pytest
import torch

from seqtrain.config import BatchingConfig
from seqtrain.data import BatchLoader, Slice, chunk, iterate_batches, parse_chunking, plan_batches
from seqtrain.datasets import build_dataset
from seqtrain.datasets.generating import Task12AXDataset
from seqtrain.errors import ConfigError, DataError

LENS = [5, 12, 3, 8, 20, 1, 15, 7, 9, 4]


def idx(batches):
    return [[s.idx for s in b] for b in batches]


def test_batching_counts_padded_frames():
    slices = [Slice(i, 0, n) for i, n in enumerate(LENS)]
    batches = plan_batches(slices, batch_size=20, max_seqs=3)
    assert idx(batches) == [[0], [1], [2, 3], [4], [5], [6], [7, 8], [9]]


def test_max_seqs_and_long_sequence(caplog):
    slices = [Slice(i, 0, n) for i, n in enumerate([2, 2, 2, 2, 2, 50, 2])]
    assert idx(plan_batches(slices, batch_size=100, max_seqs=2)) == [[0, 1], [2, 3], [4, 5], [6]]
    assert idx(plan_batches(slices, batch_size=20, max_seqs=10)) == [[0, 1, 2, 3, 4], [5], [6]]
    assert "50 frames > batch_size 20" in caplog.text


def test_chunking_as_returnn():
    # windows of 4 frames every 2 frames while the start is inside the sequence
    assert [(s.start, s.end) for s in chunk(0, 10, 4, 2)] == [(0, 4), (2, 6), (4, 8), (6, 10), (8, 10)]
    assert [(s.start, s.end) for s in chunk(0, 3, 5, 5)] == [(0, 3)]
    assert parse_chunking("50:25") == (50, 25)
    with pytest.raises(ConfigError, match="batching.chunking"):
        parse_chunking("50")


def task12ax(**opts):
    return build_dataset({"class": "task12ax", "num_seqs": 30, **opts}, "dataset.train")


def test_batches_are_padded_with_lengths():
    ds = task12ax(seq_ordering="sorted")
    batches = list(iterate_batches(ds, BatchingConfig(batch_size=300, max_seqs=5), 1, train=True))
    assert sum(b.num_seqs for b in batches) == 30
    b = batches[0]
    lens = b.seq_lens["data"]
    assert b.data["data"].shape == (b.num_seqs, int(lens.max()), 9)
    for i, tag in enumerate(b.tags):
        seq = ds.get_seq(int(tag.split("-")[1]))
        n = len(seq["data"])
        assert lens[i] == n and np.array_equal(b.data["data"][i, :n].numpy(), seq["data"])
        assert b.data["data"][i, n:].abs().sum() == 0 and b.data["classes"].dtype == torch.long
    tensors = b.tensors(ds.extern_data, torch.device("cpu"))
    assert tensors["data"].time_dim is tensors["classes"].time_dim  # same lengths share one Dim


def test_chunked_batches_cover_each_sequence():
    ds = task12ax()
    cfg = BatchingConfig(batch_size=1000, max_seqs=50, chunking="20:10")
    batches = list(iterate_batches(ds, cfg, 1, train=True))
    ds.init_epoch(1)
    first = ds.get_seq(0)["classes"]
    chunks = [
        (t, b.data["classes"][i, : b.seq_lens["classes"][i]])
        for b in batches
        for i, t in enumerate(b.tags)
        if t == "seq-0" or t.startswith("seq-0@")
    ]
    rebuilt = {0 if "@" not in t else int(t.split("@")[1]): c.numpy() for t, c in chunks}
    for start, values in rebuilt.items():
        assert np.array_equal(values, first[start : start + 20])
    assert sorted(rebuilt) == list(range(0, len(first), 10))


def test_length_filters_apply_to_training_only(caplog):
    caplog.set_level(logging.INFO)
    ds = task12ax()
    cfg = BatchingConfig(batch_size=10000, max_seqs=100, max_seq_length=50, min_seq_length=20)
    train = [n for b in iterate_batches(ds, cfg, 1, train=True) for n in b.seq_lens["data"].tolist()]
    dev = [n for b in iterate_batches(ds, cfg, 1, train=False) for n in b.seq_lens["data"].tolist()]
    assert all(20 <= n <= 50 for n in train) and len(dev) == 30 and len(train) < 30
    assert "sequences dropped by max/min_seq_length" in caplog.text


@pytest.mark.slow
def test_same_batches_with_persistent_workers():
    ds = task12ax(seq_ordering="random")

    def run(workers):
        loader = BatchLoader(ds, BatchingConfig(batch_size=400, max_seqs=8, num_workers=workers), train=True)
        return [(b.tags, b.data["data"]) for e in (1, 2, 3) for b in loader.epoch(e)]

    ref, got = run(0), run(2)
    assert [t for t, _ in ref] == [t for t, _ in got]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(ref, got))


class Broken(Task12AXDataset):
    """Its lengths are known (as from an index), but loading sequence 7 fails."""

    def seq_len(self, idx):
        return {"data": 10, "classes": 10}

    def get_seq(self, idx):
        if idx == 7:
            raise ValueError("bad bytes")
        return super().get_seq(idx)


@pytest.mark.parametrize("workers", [0, 1])
def test_worker_errors_name_the_sequence(workers):
    ds = Broken(task12ax().opts, "dataset.train")
    loader = BatchLoader(ds, BatchingConfig(batch_size=1000, max_seqs=4, num_workers=workers), train=True)
    with pytest.raises(DataError) as info:
        list(loader.epoch(1))
    assert str(info.value) == "dataset.train: cannot load sequence seq-7: bad bytes"


def test_shards_are_disjoint_and_equally_long():
    ds = task12ax()
    cfg = BatchingConfig(batch_size=200, max_seqs=3)
    full = BatchLoader(ds, cfg, train=True).plan(1)
    shards = [BatchLoader(ds, cfg, train=True, num_shards=3, shard=r).plan(1) for r in range(3)]
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == -(-len(full) // 3)
    assert [b for i in range(len(shards[0])) for s in shards for b in s[i : i + 1]][: len(full)] == full
