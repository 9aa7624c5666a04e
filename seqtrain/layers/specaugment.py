"""The `specaugment` layer: time and frequency masking in training (Park et al. 2019, "SpecAugment"); identity
in eval. Time warping is left out (RETURNN's setups mostly leave it out too).

Per sequence, the number of time masks is drawn uniformly from [min_time_masks, max_time_masks], each of
a width uniform in [1, max_time_mask_width] (at most the sequence's length) at a uniform position within
the sequence's real frames; frequency masks likewise over the feature axis. Masked values are set to 0,
the mean of normalised features. Randomness comes from torch's global generator, which checkpoints save.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from seqtrain.config import opt
from seqtrain.datasets.base import DataSpec
from seqtrain.layers.base import LAYERS, Layer, LayerOptions
from seqtrain.tensor import Tensor


@dataclass
class SpecAugmentOptions(LayerOptions):
    max_time_masks: int = opt(2, "time masks per sequence, at most", ge=0)
    min_time_masks: int = opt(1, "time masks per sequence, at least", ge=0)
    max_time_mask_width: int = opt(20, "frames per time mask, at most", ge=0)
    max_freq_masks: int = opt(2, "frequency masks per sequence, at most", ge=0)
    min_freq_masks: int = opt(1, "frequency masks per sequence, at least", ge=0)
    max_freq_mask_width: int = opt(10, "feature bins per frequency mask, at most", ge=0)


def random_masks(lens: torch.Tensor, size: int, min_num: int, max_num: int, max_width: int) -> torch.Tensor:
    """[B, size] bool, True where masked: per sequence a random number of random-width spans inside its
    length `lens[b]`."""
    batch, device = lens.shape[0], lens.device
    if max_num <= 0 or max_width <= 0 or size == 0:
        return torch.zeros(batch, size, dtype=torch.bool, device=device)
    num = torch.randint(min_num, max_num + 1, (batch, 1), device=device)
    width = torch.randint(1, max_width + 1, (batch, max_num), device=device)
    width = torch.minimum(width, lens[:, None])
    start = (torch.rand(batch, max_num, device=device) * (lens[:, None] - width + 1)).long()
    pos = torch.arange(size, device=device)[None, None, :]
    spans = (pos >= start[..., None]) & (pos < (start + width)[..., None])  # [B, M, size]
    used = torch.arange(max_num, device=device)[None, :] < num  # [B, M]
    return (spans & used[..., None]).any(1)


@LAYERS.register("specaugment", SpecAugmentOptions)
class SpecAugmentLayer(Layer):
    def __init__(self, name: str, opts: SpecAugmentOptions, inputs: list[DataSpec]):
        super().__init__(name, opts, inputs)
        self.dense_input(inputs[0], self)
        if not inputs[0].time:
            raise self.error("needs an input with a time axis (features [batch, time, feature])")
        for kind in ("time", "freq"):
            low, high = getattr(opts, f"min_{kind}_masks"), getattr(opts, f"max_{kind}_masks")
            if not 0 <= low <= high and high > 0:
                raise self.error(f"need 0 <= min_{kind}_masks <= max_{kind}_masks, got {low} and {high}")
        self.out_spec = DataSpec(inputs[0].dim, time=True)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return x
        opts = self.opts
        batch, frames, feats = x.raw.shape
        lens = x.time_dim.seq_lens.to(x.raw.device)
        time = random_masks(lens, frames, opts.min_time_masks, opts.max_time_masks, opts.max_time_mask_width)
        freq = random_masks(
            torch.full_like(lens, feats),
            feats,
            opts.min_freq_masks,
            opts.max_freq_masks,
            opts.max_freq_mask_width,
        )
        mask = time[:, :, None] | freq[:, None, :]
        return x.copy(raw=x.raw.masked_fill(mask, 0.0), logits=None)
