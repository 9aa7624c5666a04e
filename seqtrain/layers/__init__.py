"""Layers, registered under RETURNN's class names; importing this package registers them all."""

from seqtrain.layers import basic, conv, ctc, rec, specaugment  # noqa: F401  (registers)
from seqtrain.layers.base import LAYERS, Layer, LayerOptions

__all__ = ["LAYERS", "Layer", "LayerOptions"]
