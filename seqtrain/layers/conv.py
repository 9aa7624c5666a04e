"""Layers over time windows: `pool`, `conv` (1-D over time, or 2-D over time x feature), `window`, `stack`.

Output lengths follow RETURNN's ConvLayer.calc_out_dim, per sequence: padding `same` gives
ceil(len / stride), `valid` gives ceil((len - (size - 1) * dilation) / stride) (at least 0). Windows start
at frame 0 of each sequence; `same` pads (size - stride) // 2 frames on the left when the window is longer
than the stride (centred windows for stride 1, as TF's SAME) and none otherwise, and the rest on the right.
Padded frames are masked before every window op (0, or -inf for max pooling), so they never leak in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from seqtrain.config import opt
from seqtrain.datasets.base import DataSpec
from seqtrain.layers.base import LAYERS, Layer, LayerOptions, activation_fn
from seqtrain.tensor import Dim, Tensor

PADDINGS = ("same", "valid")


def out_lens(seq_lens: torch.Tensor, size: int, stride: int, padding: str, dilation: int = 1) -> torch.Tensor:
    """Lengths after a window op over time (RETURNN ConvLayer.calc_out_dim)."""
    if padding == "same":
        return -(-seq_lens // stride)
    span = (size - 1) * dilation + 1
    return (-(-(seq_lens - span + 1) // stride)).clamp_min(0)


def time_padding(
    max_len: int, size: int, stride: int, padding: str, dilation: int = 1
) -> tuple[int, int, int]:
    """(left, right, output frames) for the padded batch of `max_len` frames."""
    span = (size - 1) * dilation + 1
    out = int(out_lens(torch.tensor(max_len), size, stride, padding, dilation))
    left = max(span - stride, 0) // 2 if padding == "same" else 0
    right = max((out - 1) * stride + span - left - max_len, 0) if out > 0 else 0
    return left, right, out


def masked(x: Tensor, fill: float) -> torch.Tensor:
    """[B, T, F] with padded frames set to `fill`."""
    return x.raw.masked_fill(~x.mask()[:, :, None], fill)


def new_time(x: Tensor, lens: torch.Tensor, name: str) -> Dim:
    return x.time_dim.with_seq_lens(lens, name=f"{name}:time")


def check_window(layer: Layer, spec: DataSpec, size: int, stride: int, padding: str) -> None:
    layer.dense_input(spec, layer)
    if not spec.time:
        raise layer.error("needs an input with a time axis")
    if size < 1 or stride < 1:
        raise layer.error(f"window size and stride must be >= 1, got {size} and {stride}")
    if padding not in PADDINGS:
        raise layer.error(f"padding: unknown {padding!r}; known: {', '.join(PADDINGS)}")


# --- pool ---


@dataclass
class PoolOptions(LayerOptions):
    mode: str = opt("max", "max or avg")
    pool_size: int = opt(help="frames per window")
    strides: int | None = opt(None, "frames between windows (default: pool_size, the time reduction)")
    padding: str = opt("same", "same: ceil(len / strides) output frames; valid: only full windows")


@LAYERS.register("pool", PoolOptions)
class PoolLayer(Layer):
    """Max or average over windows of frames; avg counts only real frames (a sequence's last window)."""

    def __init__(self, name: str, opts: PoolOptions, inputs: list[DataSpec]):
        super().__init__(name, opts, inputs)
        self.stride = opts.strides or opts.pool_size
        check_window(self, inputs[0], opts.pool_size, self.stride, opts.padding)
        if opts.mode not in ("max", "avg"):
            raise self.error(f"mode: unknown {opts.mode!r}; known: max, avg")
        self.out_spec = DataSpec(inputs[0].dim, time=True)

    def forward(self, x: Tensor) -> Tensor:
        size, stride, padding = self.opts.pool_size, self.stride, self.opts.padding
        left, right, _ = time_padding(x.raw.shape[1], size, stride, padding)
        if self.opts.mode == "max":
            raw = F.pad(masked(x, float("-inf")).transpose(1, 2), (left, right), value=float("-inf"))
            y = F.max_pool1d(raw, size, stride)
        else:
            values = F.pad(masked(x, 0.0).transpose(1, 2), (left, right))
            counts = F.pad(x.mask()[:, None, :].to(values.dtype), (left, right))
            y = F.avg_pool1d(values, size, stride) / F.avg_pool1d(counts, size, stride).clamp_min(1e-8)
        time = new_time(x, out_lens(x.time_dim.seq_lens, size, stride, padding), self.name)
        return Tensor(y.transpose(1, 2), (x.batch_dim, time, x.dims[-1])).zero_padding()


# --- conv ---


@dataclass
class ConvOptions(LayerOptions):
    n_out: int = opt(help="output channels (filters)", ge=1)
    filter_size: list[int] = opt(help="[time] for 1-D, [time, feature] for 2-D convolution")
    strides: list[int] | None = opt(None, "per axis of filter_size (default: 1)")
    dilation_rate: list[int] | None = opt(None, "per axis of filter_size (default: 1)")
    padding: str = opt("same", "same or valid (time as described in layers/conv.py; feature as TF)")
    activation: str | None = opt(None, "relu, tanh, ... (none: linear)")
    with_bias: bool = opt(True, "add a bias")
    input_channels: int = opt(1, "2-D: the input's feature dim is [feature, channels], channels last", ge=1)


@LAYERS.register("conv", ConvOptions)
class ConvLayer(Layer):
    """1-D: features are the input channels, output [B, T', n_out]. 2-D: the input's features are split into
    [F, input_channels]; the output [B, T', F', n_out] is merged to features F' * n_out (channels last, as
    RETURNN's merge_dims), so a following 2-D conv takes `input_channels: n_out`."""

    def __init__(self, name: str, opts: ConvOptions, inputs: list[DataSpec]):
        super().__init__(name, opts, inputs)
        self.ndim = len(opts.filter_size)
        if self.ndim not in (1, 2):
            raise self.error(f"filter_size: give [time] or [time, feature], got {opts.filter_size}")
        self.strides = list(opts.strides or [1] * self.ndim)
        self.dilation = list(opts.dilation_rate or [1] * self.ndim)
        if len(self.strides) != self.ndim or len(self.dilation) != self.ndim:
            raise self.error("strides and dilation_rate need one entry per filter_size axis")
        check_window(self, inputs[0], opts.filter_size[0], self.strides[0], opts.padding)
        self.activation = activation_fn(opts.activation, name)
        self.in_feat = self._split_features(inputs[0].dim)
        conv = nn.Conv1d if self.ndim == 1 else nn.Conv2d
        in_ch = inputs[0].dim if self.ndim == 1 else opts.input_channels
        self.conv = conv(
            in_ch,
            opts.n_out,
            opts.filter_size,
            stride=self.strides,
            dilation=self.dilation,
            bias=opts.with_bias,
        )
        self.out_spec = DataSpec(opts.n_out * self._out_feat(), time=True)

    def _split_features(self, dim: int) -> int:
        channels = self.opts.input_channels
        if self.ndim == 1:
            return 1
        if channels < 1 or dim % channels:
            raise self.error(f"input_channels {channels} does not divide the input features {dim}")
        return dim // channels

    def _out_feat(self) -> int:
        if self.ndim == 1:
            return 1
        size, stride, dil = self.opts.filter_size[1], self.strides[1], self.dilation[1]
        return int(out_lens(torch.tensor(self.in_feat), size, stride, self.opts.padding, dil))

    def _feature_padding(self) -> tuple[int, int]:
        """TF's SAME on the static feature axis: total = (out - 1) * stride + span - in, left = total // 2."""
        if self.opts.padding == "valid":
            return 0, 0
        span = (self.opts.filter_size[1] - 1) * self.dilation[1] + 1
        total = max((self._out_feat() - 1) * self.strides[1] + span - self.in_feat, 0)
        return total // 2, total - total // 2

    def forward(self, x: Tensor) -> Tensor:
        size, stride, dil = self.opts.filter_size[0], self.strides[0], self.dilation[0]
        left, right, _ = time_padding(x.raw.shape[1], size, stride, self.opts.padding, dil)
        raw = masked(x, 0.0)
        if self.ndim == 1:
            y = self.conv(F.pad(raw.transpose(1, 2), (left, right)))  # [B, n_out, T']
            y = y.transpose(1, 2)
        else:
            b, t, _ = raw.shape
            raw = raw.view(b, t, self.in_feat, self.opts.input_channels).permute(0, 3, 1, 2)  # [B, C, T, F]
            y = self.conv(F.pad(raw, (*self._feature_padding(), left, right)))  # [B, n_out, T', F']
            y = y.permute(0, 2, 3, 1).flatten(2)  # [B, T', F' * n_out]
        if self.activation is not None:
            y = self.activation(y)
        time = new_time(x, out_lens(x.time_dim.seq_lens, size, stride, self.opts.padding, dil), self.name)
        return Tensor(y, (x.batch_dim, time, Dim(f"{self.name}:feature", y.shape[-1]))).zero_padding()


# --- window / stack ---


def window_frames(x: Tensor, size: int, left: int, stride: int) -> torch.Tensor:
    """[B, T', size * F]: for output frame t the input frames t * stride - left + [0, size), zeros outside the
    sequence, concatenated on the feature axis (oldest first)."""
    raw = masked(x, 0.0)
    t_out = -(-raw.shape[1] // stride)
    right = max((t_out - 1) * stride - left + size - raw.shape[1], 0)
    padded = F.pad(raw, (0, 0, left, right))
    windows = padded.unfold(1, size, stride)[:, :t_out]  # [B, T', F, size]
    return windows.transpose(2, 3).flatten(2)


@dataclass
class WindowOptions(LayerOptions):
    window_size: int = opt(help="frames per window")
    window_left: int | None = opt(None, "frames before the centre frame (default: (window_size - 1) // 2)")
    stride: int = opt(1, "frames between windows; output lengths ceil(len / stride)")


@LAYERS.register("window", WindowOptions)
class WindowLayer(Layer):
    """Each output frame holds `window_size` input frames around it, concatenated on the feature axis
    (RETURNN's window layer followed by merge_dims of window and feature)."""

    def __init__(self, name: str, opts: WindowOptions, inputs: list[DataSpec]):
        super().__init__(name, opts, inputs)
        check_window(self, inputs[0], opts.window_size, opts.stride, "same")
        self.left = (opts.window_size - 1) // 2 if opts.window_left is None else opts.window_left
        if not 0 <= self.left < opts.window_size:
            raise self.error(f"window_left must lie in [0, window_size), got {self.left}")
        self.out_spec = DataSpec(inputs[0].dim * opts.window_size, time=True)

    def forward(self, x: Tensor) -> Tensor:
        y = window_frames(x, self.opts.window_size, self.left, self.opts.stride)
        time = new_time(x, out_lens(x.time_dim.seq_lens, 1, self.opts.stride, "same"), self.name)
        return Tensor(y, (x.batch_dim, time, Dim(f"{self.name}:feature", y.shape[-1]))).zero_padding()


@dataclass
class StackOptions(LayerOptions):
    n: int = opt(help="frames stacked into one: frames [t * n, t * n + n) become output frame t")


@LAYERS.register("stack", StackOptions)
class StackLayer(Layer):
    """Frame stacking (time reduction by n, features times n); output lengths ceil(len / n), the last frame of
    a sequence zero-filled where it runs past the end."""

    def __init__(self, name: str, opts: StackOptions, inputs: list[DataSpec]):
        super().__init__(name, opts, inputs)
        check_window(self, inputs[0], opts.n, opts.n, "same")
        self.out_spec = DataSpec(inputs[0].dim * opts.n, time=True)

    def forward(self, x: Tensor) -> Tensor:
        y = window_frames(x, self.opts.n, 0, self.opts.n)
        time = new_time(x, out_lens(x.time_dim.seq_lens, self.opts.n, self.opts.n, "same"), self.name)
        return Tensor(y, (x.batch_dim, time, Dim(f"{self.name}:feature", y.shape[-1]))).zero_padding()
