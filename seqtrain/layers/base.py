"""The layer registry and the base class every layer derives from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any  # noqa: UP035  (OmegaConf needs typing generics)

import torch
from torch import nn

from seqtrain.config import opt
from seqtrain.datasets.base import DataSpec
from seqtrain.errors import NetworkError
from seqtrain.registry import Registry
from seqtrain.tensor import Tensor

LAYERS = Registry("layer class")


@dataclass
class LayerOptions:
    """Options every layer has (RETURNN's names); each layer's schema extends this."""

    dropout: float = opt(0.0, "dropout on the layer's input, in training only", ge=0, lt=1)
    loss: str | None = opt(None, "loss on this layer's output: ce, mse, ctc")
    target: str = opt("classes", "data key the loss compares against")
    loss_scale: float = opt(1.0, "factor of this loss in the total", ge=0)
    loss_opts: dict[str, Any] = opt(factory=dict, help="loss options, e.g. {label_smoothing: 0.1}")
    use_normalized_loss: bool = opt(False, "gradient of the per-frame mean instead of the frame sum")
    is_output_layer: bool = opt(False, "build and run this layer even if nothing reads it")
    L2: float | None = opt(None, "add L2 * (sum of this layer's squared weights) to the training loss", ge=0)


ACTIVATIONS = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "gelu": nn.functional.gelu,
    "silu": nn.functional.silu,
    "swish": nn.functional.silu,
    "elu": nn.functional.elu,
    "softmax": lambda x: torch.softmax(x, -1),
    "log_softmax": lambda x: torch.log_softmax(x, -1),
    "abs": torch.abs,
    "exp": torch.exp,
    "identity": lambda x: x,
}


def activation_fn(name: str | None, layer: str):
    if name is None:
        return None
    if name not in ACTIVATIONS:
        raise NetworkError(layer, f"activation: unknown {name!r}; known: {', '.join(sorted(ACTIVATIONS))}")
    return ACTIVATIONS[name]


class Layer(nn.Module):
    """A layer: built from its options and the specs of its inputs; `forward(*inputs) -> Tensor`.

    `out_spec` tells the layers reading from this one what they get (feature size, sparse, time axis).
    Layers with `concat_sources` (the default) get their sources concatenated on the feature dim.
    """

    concat_sources = True
    # Each output frame depends only on the same frame of the inputs, so the layer runs as well on a piece of
    # each sequence (step by step in decoding). `rec` layers instead carry their state from piece to piece.
    frame_local = False

    def __init__(self, name: str, opts: LayerOptions, inputs: list[DataSpec]):
        super().__init__()
        self.name = name
        self.opts = opts
        self.out_spec: DataSpec = inputs[0] if inputs else DataSpec(1, time=False)

    def error(self, message: str) -> NetworkError:
        return NetworkError(self.name, f"(class {self.registered_name}) {message}")

    def forward(self, *inputs: Tensor) -> Tensor:
        raise NotImplementedError

    @property
    def runs_in_pieces(self) -> bool:
        """Whether forward_piece works: frame-local layers, and layers that carry a state over time."""
        return self.frame_local

    def forward_piece(self, inputs: list[Tensor], state: Any) -> tuple[Tensor, Any]:
        """The output on the next piece of each sequence, continuing from `state` (what this returned for the
        previous piece; None at the start), and the state after the piece. Frame-local layers carry none."""
        if not self.frame_local:
            raise self.error("cannot run on pieces of sequences: its output frames depend on other frames")
        return self(*inputs), None

    @staticmethod
    def dense_input(spec: DataSpec, layer: Layer) -> None:
        if spec.sparse:
            raise layer.error("needs a dense input, but its source is sparse (class indices)")
