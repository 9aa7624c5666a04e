"""specaugment: masks only in training, only inside each sequence's real frames, within the width limits."""

from __future__ import annotations

import torch

import seqtrain.layers.specaugment  # noqa: F401  (registers until layers/__init__ imports it)
from seqtrain.datasets.base import DataSpec
from seqtrain.layers import LAYERS
from seqtrain.layers.specaugment import random_masks
from seqtrain.registry import parse_options
from seqtrain.tensor import Dim, Tensor


def build(**options):
    cls, schema = LAYERS.get("specaugment", "test")
    return cls("specaug", parse_options(schema, options, "test"), [DataSpec(16)])


def ones_batch(lens: list[int], feat: int = 16) -> Tensor:
    raw = torch.ones(len(lens), max(lens), feat)
    return Tensor(
        raw, (Dim("batch", size=len(lens)), Dim("time", seq_lens=torch.tensor(lens)), Dim("f", size=feat))
    )


def test_identity_in_eval():
    layer = build().eval()
    x = ones_batch([30, 10])
    assert layer(x) is x


def test_time_masks_respect_lengths_and_widths():
    torch.manual_seed(0)
    lens = torch.tensor([50, 7, 0, 30])
    for _ in range(50):
        mask = random_masks(lens, 50, 1, 3, 5)
        assert not (mask & (torch.arange(50)[None, :] >= lens[:, None])).any()  # never past the end
        # at most 3 masks of at most 5 frames each, at least one frame masked where there are frames
        assert (mask.sum(1) <= 15).all()
        assert (mask.sum(1)[lens > 0] >= 1).all()


def test_training_masks_time_and_frequency_bands():
    torch.manual_seed(1)
    layer = build(max_time_masks=1, max_time_mask_width=4, max_freq_masks=1, max_freq_mask_width=3).train()
    y = layer(ones_batch([40, 20])).raw
    for b, n in enumerate([40, 20]):
        zero = y[b, :n] == 0
        time_cols = zero.all(1)  # frames masked across all features
        freq_rows = zero.all(0)  # features masked across all frames
        assert 1 <= int(time_cols.sum()) <= 4 and 1 <= int(freq_rows.sum()) <= 3
        # everything zero is explained by one of the two masks
        assert torch.equal(zero, time_cols[:, None] | freq_rows[None, :])


def test_no_masks_when_max_is_zero():
    layer = build(max_time_masks=0, max_freq_masks=0).train()
    x = ones_batch([5])
    assert torch.equal(layer(x).raw, x.raw)
