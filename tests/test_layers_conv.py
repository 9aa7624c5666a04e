"""pool, conv, window, stack: each padded batch against torch's own ops on every sequence alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import seqtrain.layers.conv  # noqa: F401  (registers until layers/__init__ imports it)
from seqtrain.datasets.base import DataSpec
from seqtrain.errors import ConfigError, NetworkError
from seqtrain.layers import LAYERS
from seqtrain.network import Network
from seqtrain.registry import parse_options
from seqtrain.tensor import Dim, Tensor

LENS = [7, 4, 1]


def make_input(lens=LENS, feat=3, garbage=1e6, seed=0) -> Tensor:
    """A batch whose padded frames hold `garbage`, so a leak shows up in the outputs."""
    torch.manual_seed(seed)
    lens_t = torch.tensor(lens)
    raw = torch.randn(len(lens), max(lens), feat)
    mask = torch.arange(max(lens))[None, :] < lens_t[:, None]
    raw = raw.masked_fill(~mask[..., None], garbage)
    return Tensor(raw, (Dim("batch", size=len(lens)), Dim("time", seq_lens=lens_t), Dim("feat", size=feat)))


def build(cls_name: str, feat: int = 3, **options):
    cls, schema = LAYERS.get(cls_name, "test")
    return cls("layer", parse_options(schema, options, "test"), [DataSpec(feat)])


def seqs(x: Tensor) -> list[torch.Tensor]:
    return [x.raw[b, :n] for b, n in enumerate(x.time_dim.seq_lens.tolist())]


def check_against(y: Tensor, expected: list[torch.Tensor]) -> None:
    assert y.time_dim.seq_lens.tolist() == [len(e) for e in expected]
    for b, e in enumerate(expected):
        torch.testing.assert_close(y.raw[b, : len(e)], e)
        assert (y.raw[b, len(e) :] == 0).all()  # padding is zeroed


# --- pool ---


@pytest.mark.parametrize("mode", ["max", "avg"])
def test_pool_same_halves_lengths_and_ignores_padding(mode):
    x = make_input()
    y = build("pool", mode=mode, pool_size=2)(x)
    expected = []
    for s in seqs(x):  # windows [0,2), [2,4), ...; the last one holds only real frames
        windows = [s[t : t + 2] for t in range(0, len(s), 2)]
        expected.append(torch.stack([w.amax(0) if mode == "max" else w.mean(0) for w in windows]))
    check_against(y, expected)
    assert y.time_dim.seq_lens.tolist() == [4, 2, 1]  # ceil(len / 2)


def test_pool_stride_3_and_valid():
    x = make_input([8, 5])
    same = build("pool", mode="max", pool_size=3)(x)
    assert same.time_dim.seq_lens.tolist() == [3, 2]
    valid = build("pool", mode="max", pool_size=3, strides=1, padding="valid")(x)
    assert valid.time_dim.seq_lens.tolist() == [6, 3]  # len - 2
    expected = [F.max_pool1d(s.T[None], 3, 1)[0].T for s in seqs(x)]
    check_against(valid, expected)


def test_pool_options_are_checked():
    with pytest.raises(NetworkError, match="mode: unknown 'min'"):
        build("pool", mode="min", pool_size=2)
    with pytest.raises(NetworkError, match="padding: unknown"):
        build("pool", pool_size=2, padding="causal")
    with pytest.raises(ConfigError, match="pool_size: required option not set"):
        build("pool")


# --- conv ---


@pytest.mark.parametrize("stride", [1, 2])
def test_conv1d_equals_torch_per_sequence(stride):
    x = make_input()
    layer = build("conv", n_out=4, filter_size=[3], strides=[stride], activation="relu")
    y = layer(x)
    expected = []
    for s in seqs(x):
        # same: one frame of zeros on the left (the window is centred for stride 1; (3-2)//2=0 for stride 2)
        left = 1 if stride == 1 else 0
        out_len = -(-len(s) // stride)
        right = max((out_len - 1) * stride + 3 - left - len(s), 0)
        padded = F.pad(s.T[None], (left, right))
        expected.append(torch.relu(F.conv1d(padded, layer.conv.weight, layer.conv.bias, stride))[0].T)
    check_against(y, expected)
    assert layer.out_spec.dim == 4


def test_conv1d_valid_lengths():
    y = build("conv", n_out=2, filter_size=[3], padding="valid", dilation_rate=[2])(make_input([7, 5]))
    assert y.time_dim.seq_lens.tolist() == [3, 1]  # len - (3 - 1) * 2


def test_conv2d_over_time_and_feature():
    x = make_input([6, 3], feat=8)
    layer = build("conv", feat=8, n_out=5, filter_size=[3, 3], strides=[2, 2], input_channels=2)
    y = layer(x)
    assert layer.out_spec.dim == 2 * 5  # features 4 (8 / 2 channels) -> ceil(4 / 2) = 2, times n_out
    assert y.raw.shape[-1] == layer.out_spec.dim
    for b, s in enumerate(seqs(x)):
        img = s.view(len(s), 4, 2).permute(2, 0, 1)[None]  # [1, C, T, F]
        out_len = -(-len(s) // 2)
        right_t = max((out_len - 1) * 2 + 3 - 0 - len(s), 0)
        img = F.pad(img, (0, 1, 0, right_t))  # feature: TF SAME total 1 -> left 0, right 1
        ref = F.conv2d(img, layer.conv.weight, layer.conv.bias, stride=2)[0].permute(1, 2, 0).flatten(1)
        torch.testing.assert_close(y.raw[b, :out_len], ref)


def test_conv2d_channels_must_divide_features():
    with pytest.raises(NetworkError, match="input_channels 3 does not divide the input features 8"):
        build("conv", feat=8, n_out=2, filter_size=[3, 3], input_channels=3)


# --- window / stack ---


def test_stack_concatenates_n_frames_with_stride_n():
    x = make_input([5, 2], feat=2)
    y = build("stack", feat=2, n=2)(x)
    expected = []
    for s in seqs(x):
        padded = torch.cat([s, torch.zeros(len(s) % 2, 2)])  # the last frame is zero-filled past the end
        expected.append(padded.reshape(-1, 4))
    check_against(y, expected)
    assert y.time_dim.seq_lens.tolist() == [3, 1]


def test_window_centred_with_zeros_outside():
    x = make_input([3], feat=1)
    y = build("window", feat=1, window_size=3)(x)
    s = x.raw[0, :, 0]
    expected = torch.tensor([[0, s[0], s[1]], [s[0], s[1], s[2]], [s[1], s[2], 0]])
    check_against(y, [expected])


def test_layers_in_a_network_chain_their_lengths():
    net = Network(
        {
            "conv": {"class": "conv", "n_out": 6, "filter_size": [3], "activation": "relu"},
            "pool": {"class": "pool", "mode": "max", "pool_size": 2, "from": "conv"},
            "stack": {"class": "stack", "n": 2, "from": "pool"},
            "output": {"class": "linear", "n_out": 2, "from": "stack"},
        },
        {"data": DataSpec(3)},
    )
    out = net({"data": make_input()})["output"]
    assert out.time_dim.seq_lens.tolist() == [2, 1, 1]  # ceil(ceil(len / 2) / 2)
    assert net.specs["stack"].dim == 12
