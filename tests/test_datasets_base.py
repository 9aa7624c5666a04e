"""Sequence ordering and partitioning against RETURNN's algorithm (and RETURNN itself if installed)."""

import numpy as np
import pytest

from seqtrain.datasets.base import Dataset, DatasetOptions, DataSpec, partition
from seqtrain.errors import ConfigError

LENS = [5, 12, 3, 8, 20, 1, 15, 7, 9, 4]


class Lens(Dataset):
    def __init__(self, lens, **opts):
        super().__init__(DatasetOptions(**opts), "dataset.test")
        self.lens = lens

    @property
    def num_seqs(self):
        return len(self.lens)

    @property
    def extern_data(self):
        return {"data": DataSpec(1)}

    def get_seq(self, idx):
        return {"data": np.zeros((self.lens[idx], 1), np.float32)}


def order(mode, epoch=1, **opts):
    ds = Lens(LENS, seq_ordering=mode, **opts)
    ds.init_epoch(epoch)
    return ds.seq_order.tolist()


def test_fixed_orders():
    assert order("default") == list(range(10))
    assert order("reverse") == list(range(9, -1, -1))
    assert order("sorted") == [5, 2, 9, 0, 7, 3, 8, 1, 6, 4]  # lengths 1,3,4,5,7,8,9,12,15,20
    assert order("sorted_reverse") == [4, 6, 1, 8, 3, 7, 0, 9, 2, 5]


def test_random_is_seeded_by_epoch():
    assert order("random", epoch=1) == np.random.RandomState(1).permutation(10).tolist()
    assert order("random", epoch=3) == np.random.RandomState(3).permutation(10).tolist()
    assert order("random", epoch=3, random_seed_offset=5) == np.random.RandomState(8).permutation(10).tolist()
    # random:2 keeps the seed for 2 epochs: epochs 3 and 4 use seed 2
    assert (
        order("random:2", epoch=3)
        == order("random:2", epoch=4)
        == np.random.RandomState(2).permutation(10).tolist()
    )
    assert (
        order("random", epoch=7, fixed_random_seed=11) == np.random.RandomState(11).permutation(10).tolist()
    )


def test_laplace_by_hand():
    perm = np.random.RandomState(1).permutation(10)  # [2 9 6 4 0 3 1 7 8 5]
    bins = [perm[0:3], perm[3:6], perm[6:10]]  # 3 bins, alternately sorted up and down
    lens = np.array(LENS)
    expected = [
        *sorted(bins[0], key=lambda i: lens[i]),
        *sorted(bins[1], key=lambda i: -lens[i]),
        *sorted(bins[2], key=lambda i: lens[i]),
    ]
    assert order("laplace:3") == [int(i) for i in expected]
    assert order("laplace:.5") == order("laplace:2")  # ".5": about 5 seqs per bin -> 10 // 5 = 2 bins


def test_sort_bin_shuffle_by_hand():
    rng = np.random.RandomState(1)
    by_len = sorted(rng.permutation(10).tolist(), key=lambda i: LENS[i])
    bin_order = rng.permutation(2)
    expected = [i for b in bin_order for i in by_len[b * 5 : (b + 1) * 5]]
    assert order("sort_bin_shuffle") == expected
    assert sorted(order("sort_bin_shuffle_x2:3")) == list(range(10))


def test_partition_epoch_splits_the_full_epoch():
    full = np.random.RandomState(1).permutation(10).tolist()  # seed stays 1 for sub-epochs 1..3
    parts = [order("random", epoch=e, partition_epoch=3) for e in (1, 2, 3)]
    assert parts == [full[0:4], full[4:7], full[7:10]]  # 10 = 4 + 3 + 3, the remainder goes first
    assert (
        order("random", epoch=4, partition_epoch=3) == np.random.RandomState(2).permutation(10)[:4].tolist()
    )
    assert partition(np.arange(10), 2, 1, num_shards=2, shard=1).tolist() == [3, 4, 5]


@pytest.mark.parametrize(
    "mode",
    [
        "sorted",
        "random",
        "random:3",
        "laplace:3",
        "laplace:.4",
        "sort_bin_shuffle",
        "sort_bin_shuffle_x2:.3",
        "reverse",
    ],
)
@pytest.mark.parametrize("partition_epoch", [1, 3])
def test_same_as_returnn(mode, partition_epoch):
    basic = pytest.importorskip("returnn.datasets.generating", reason="returnn not installed (dev extra)")
    ref = basic.StaticDataset(
        [{"data": np.zeros((n, 1), "float32")} for n in LENS],
        seq_ordering=mode,
        partition_epoch=partition_epoch,
        random_seed_offset=0,
    )
    for epoch in (1, 2, 5):
        expected = list(ref.get_seq_order_for_epoch(epoch, 10, lambda i: LENS[i]))
        assert order(mode, epoch=epoch, partition_epoch=partition_epoch) == [int(i) for i in expected]


@pytest.mark.parametrize("mode", ["shuffled", "random:x", "sorted:2", "laplace:1:2:3"])
def test_bad_ordering_names_the_key(mode):
    with pytest.raises(ConfigError, match=r"dataset.test.seq_ordering: invalid"):
        Lens(LENS, seq_ordering=mode)
