"""Feed-forward layers: linear, softmax, copy, dropout, activation, combine, reduce, constant."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from seqtrain.config import opt
from seqtrain.datasets.base import DataSpec
from seqtrain.layers.base import LAYERS, Layer, LayerOptions, activation_fn
from seqtrain.tensor import Dim, Tensor


@dataclass
class LinearOptions(LayerOptions):
    n_out: int = opt(help="output feature size", ge=1)
    activation: str | None = opt(None, "relu, tanh, sigmoid, gelu, silu, softmax, log_softmax, ...")
    with_bias: bool = opt(True, "add a bias")
    reuse_params: str | None = opt(None, "share the weight matrix with this linear layer (tied embeddings)")


@LAYERS.register("linear", LinearOptions)
class LinearLayer(Layer):
    """x·W + b with an optional activation; a sparse input is an embedding lookup (one-hot times W)."""

    frame_local = True

    def __init__(self, name: str, opts: LinearOptions, inputs: list[DataSpec]):
        super().__init__(name, opts, inputs)
        self.activation = activation_fn(opts.activation, name)
        self.sparse_input = inputs[0].sparse
        if self.sparse_input:
            self.embedding = nn.Embedding(inputs[0].dim, opts.n_out)
            self.bias = nn.Parameter(torch.zeros(opts.n_out)) if opts.with_bias else None
        else:
            self.linear = nn.Linear(inputs[0].dim, opts.n_out, bias=opts.with_bias)
        self.out_spec = DataSpec(opts.n_out, time=inputs[0].time)

    @property
    def weight(self) -> nn.Parameter:
        """[n_out, n_in] for a dense input; an embedding's [vocab, n_out] for a sparse one."""
        return self.embedding.weight if self.sparse_input else self.linear.weight

    def tie_weight(self, other: Layer) -> None:
        """Use `other`'s weight matrix (an embedding tied to the softmax: both are [vocab, dim])."""
        if not isinstance(other, LinearLayer):
            raise self.error(f"reuse_params: {other.name!r} is not a linear/softmax layer")
        if other.weight.shape != self.weight.shape:
            raise self.error(
                f"reuse_params: weight shape {tuple(self.weight.shape)} differs from "
                f"{other.name}'s {tuple(other.weight.shape)}"
            )
        if self.sparse_input:
            self.embedding.weight = other.weight
        else:
            self.linear.weight = other.weight

    def project(self, x: Tensor) -> torch.Tensor:
        if not self.sparse_input:
            return self.linear(x.raw)
        y = self.embedding(x.raw)
        return y + self.bias if self.bias is not None else y

    def forward(self, x: Tensor) -> Tensor:
        y = self.project(x)
        out = Tensor(
            y if self.activation is None else self.activation(y),
            (*x.dims_without_feature(), Dim(f"{self.name}:feature", self.opts.n_out)),
        )
        if self.opts.activation in (None, "softmax", "log_softmax"):
            out.logits = y  # losses use the pre-softmax values
        return out


@dataclass
class SoftmaxOptions(LinearOptions):
    activation: str | None = opt("softmax", "softmax (output probabilities); losses use the logits")


@LAYERS.register("softmax", SoftmaxOptions)
class SoftmaxLayer(LinearLayer):
    """A linear layer with softmax activation: outputs probabilities, keeps the logits for losses."""


@LAYERS.register("copy", LayerOptions)
class CopyLayer(Layer):
    """Its sources, concatenated on the feature dim."""

    frame_local = True

    def forward(self, x: Tensor) -> Tensor:
        return x


@LAYERS.register("dropout", LayerOptions)
class DropoutLayer(CopyLayer):
    """Only its `dropout` option: drops input features in training."""


@dataclass
class ActivationOptions(LayerOptions):
    activation: str = opt(help="relu, tanh, sigmoid, gelu, silu, softmax, log_softmax, ...")


@LAYERS.register("activation", ActivationOptions)
class ActivationLayer(Layer):
    frame_local = True

    def __init__(self, name: str, opts: ActivationOptions, inputs: list[DataSpec]):
        super().__init__(name, opts, inputs)
        self.dense_input(inputs[0], self)
        self.fn = activation_fn(opts.activation, name)

    def forward(self, x: Tensor) -> Tensor:
        return x.copy(raw=self.fn(x.raw), logits=None)


@dataclass
class CombineOptions(LayerOptions):
    kind: str = opt(help="add, sub, mul (elementwise over equally shaped sources)")


@LAYERS.register("combine", CombineOptions)
class CombineLayer(Layer):
    concat_sources = False
    frame_local = True
    KINDS = {"add": torch.add, "sub": torch.sub, "mul": torch.mul}

    def __init__(self, name: str, opts: CombineOptions, inputs: list[DataSpec]):
        super().__init__(name, opts, inputs)
        if opts.kind not in self.KINDS:
            raise self.error(f"kind: unknown {opts.kind!r}; known: {', '.join(self.KINDS)}")
        if len({(s.dim, s.time, s.sparse) for s in inputs}) > 1:
            sizes = ", ".join(f"{s.dim}{'' if s.time else ' (no time)'}" for s in inputs)
            raise self.error(f"sources must have equal shapes, got feature sizes {sizes}")
        self.fn = self.KINDS[opts.kind]

    def forward(self, *xs: Tensor) -> Tensor:
        out = xs[0].raw
        for x in xs[1:]:
            out = self.fn(out, x.raw)
        return xs[0].copy(raw=out, logits=None)


@dataclass
class ReduceOptions(LayerOptions):
    mode: str = opt(help="sum, mean, max, min")
    axis: str = opt("time", "time (real frames only) or feature")


@LAYERS.register("reduce", ReduceOptions)
class ReduceLayer(Layer):
    def __init__(self, name: str, opts: ReduceOptions, inputs: list[DataSpec]):
        super().__init__(name, opts, inputs)
        self.dense_input(inputs[0], self)
        if opts.mode not in ("sum", "mean", "max", "min"):
            raise self.error(f"mode: unknown {opts.mode!r}; known: sum, mean, max, min")
        if opts.axis not in ("time", "feature"):
            raise self.error(f"axis: unknown {opts.axis!r}; known: time, feature")
        if opts.axis == "time" and not inputs[0].time:
            raise self.error("axis: time, but the input has no time axis")
        time = inputs[0].time and opts.axis != "time"
        self.out_spec = DataSpec(1 if opts.axis == "feature" else inputs[0].dim, time=time)

    def forward(self, x: Tensor) -> Tensor:
        dim = x.time_dim if self.opts.axis == "time" else x.feature_dim
        out = x.reduce(dim, self.opts.mode)
        if self.opts.axis == "feature":  # keep a feature dim of size 1
            out = Tensor(out.raw.unsqueeze(-1), (*out.dims, Dim(f"{self.name}:feature", 1)))
        return out


@dataclass
class ConstantOptions(LayerOptions):
    value: float = opt(0.0, "the constant")


@LAYERS.register("constant", ConstantOptions)
class ConstantLayer(Layer):
    """A constant per sequence ([batch, 1]); it reads no source."""

    def __init__(self, name: str, opts: ConstantOptions, inputs: list[DataSpec]):
        super().__init__(name, opts, inputs)
        self.out_spec = DataSpec(1, time=False)

    def forward(self, x: Tensor) -> Tensor:
        raw = torch.full((x.raw.shape[0], 1), self.opts.value, device=x.raw.device)
        return Tensor(raw, (x.batch_dim, Dim(f"{self.name}:feature", 1)))
