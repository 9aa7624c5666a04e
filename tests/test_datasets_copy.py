import numpy as np
import pytest

from seqtrain.datasets import DataSpec, build_dataset
from seqtrain.errors import ConfigError
from tests.conftest import SEQ_ORDERINGS, assert_same_batches_with_workers

MODES = SEQ_ORDERINGS


def copy_task(**opts):
    return build_dataset({"class": "copy_task", "num_seqs": 50, **opts}, "dataset.train")


@pytest.mark.parametrize("reverse", [False, True])
def test_targets_copy_or_reverse_the_input(reverse):
    ds = copy_task(reverse=reverse, vocab_size=7, min_len=3, max_len=9)
    ds.init_epoch(1)
    assert ds.extern_data == {
        "data": DataSpec(7, sparse=True, dtype="int32"),
        "classes": DataSpec(7, sparse=True, dtype="int32"),
    }
    lens = set()
    for i in range(ds.num_seqs):
        seq = ds.get_seq(i)
        expected = seq["data"][::-1] if reverse else seq["data"]
        assert np.array_equal(seq["classes"], expected) and seq["data"].dtype == np.int32
        assert 3 <= len(seq["data"]) <= 9 and 0 <= seq["data"].min() and seq["data"].max() < 7
        lens.add(len(seq["data"]))
    assert lens == set(range(3, 10))  # the whole range is used


def test_regenerated_per_epoch_unless_fixed():
    ds, fixed = copy_task(), copy_task(fixed_random_seed=3)
    data = {}
    for epoch in (1, 2):
        ds.init_epoch(epoch)
        fixed.init_epoch(epoch)
        data[epoch] = (
            [ds.get_seq(i)["data"].tolist() for i in range(50)],
            [fixed.get_seq(i)["data"].tolist() for i in range(50)],
        )
    assert data[1][0] != data[2][0] and data[1][1] == data[2][1]


def test_config_errors():
    with pytest.raises(ConfigError, match="dataset.train.min_len/max_len"):
        copy_task(min_len=5, max_len=4)
    with pytest.raises(ConfigError, match="dataset.train.vocab_size"):
        copy_task(vocab_size=0)


@pytest.mark.parametrize("parts", [1, 3])
def test_every_seq_ordering_and_partition(parts):
    for mode in MODES:
        ds = copy_task(seq_ordering=mode, partition_epoch=parts)
        seen = []
        for epoch in range(1, parts + 1):
            ds.init_epoch(epoch)
            seen += ds.seq_order.tolist()
        assert sorted(seen) == list(range(ds.num_seqs)), mode


def test_same_batches_with_workers():
    ds = copy_task(seq_ordering="laplace:.10", partition_epoch=2, reverse=True)
    assert_same_batches_with_workers(ds, 200, 8, (1, 2, 3))
