"""Dim and Tensor: a torch tensor that knows its dims, so padding is handled by the dims, not by hand.

Layout convention: dims are ordered (batch, [time], [feature]). A dynamic Dim (time) carries the
per-sequence lengths of the batch; a static Dim has an int size. A sparse Tensor holds class indices
and names its vocabulary in `sparse_dim` (it has no feature dim).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch


class Dim:
    """A named axis: static (`size`) or dynamic (`seq_lens`, one length per sequence in the batch)."""

    def __init__(self, name: str, size: int | None = None, seq_lens: torch.Tensor | None = None):
        if (size is None) == (seq_lens is None):
            raise ValueError(f"Dim {name!r}: give either a static size or seq_lens")
        self.name = name
        self.size = size
        self.seq_lens = seq_lens

    @property
    def is_dynamic(self) -> bool:
        return self.seq_lens is not None

    def mask(self, max_len: int | None = None) -> torch.Tensor:
        """[batch, time] bool, True on real frames."""
        if self.seq_lens is None:
            raise ValueError(f"Dim {self.name!r} is static; it has no mask")
        max_len = int(self.seq_lens.max()) if max_len is None else max_len
        steps = torch.arange(max_len, device=self.seq_lens.device)
        return steps[None, :] < self.seq_lens[:, None]

    def with_seq_lens(self, seq_lens: torch.Tensor, name: str | None = None) -> Dim:
        return Dim(name or self.name, seq_lens=seq_lens)

    def __repr__(self) -> str:
        return f"Dim({self.name!r}, {'dynamic' if self.is_dynamic else self.size})"


@dataclass
class Tensor:
    """`raw` with ordered `dims` (batch, [time], [feature]); `sparse_dim` set for class indices.

    `logits`, when set, are the pre-softmax values of a probability output; losses use them for stability.
    """

    raw: torch.Tensor
    dims: tuple[Dim, ...]
    sparse_dim: Dim | None = None
    logits: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.raw.dim() != len(self.dims):
            raise ValueError(f"raw has shape {tuple(self.raw.shape)} but dims are {self.dims}")

    @property
    def batch_dim(self) -> Dim:
        return self.dims[0]

    @property
    def time_dim(self) -> Dim | None:
        return next((d for d in self.dims[1:] if d.is_dynamic), None)

    @property
    def feature_dim(self) -> Dim | None:
        if self.sparse_dim is not None or len(self.dims) < 2 or self.dims[-1].is_dynamic:
            return None
        return self.dims[-1]

    @property
    def dim_size(self) -> int:
        """Feature size, or vocabulary size for sparse tensors."""
        if self.sparse_dim is not None:
            return self.sparse_dim.size
        return self.feature_dim.size if self.feature_dim is not None else 1

    def mask(self) -> torch.Tensor:
        """[batch, time] bool of real frames (all True for tensors without a time dim)."""
        time = self.time_dim
        if time is None:
            return torch.ones(self.raw.shape[0], 1, dtype=torch.bool, device=self.raw.device)
        return time.mask(self.raw.shape[1])

    def num_frames(self) -> torch.Tensor:
        time = self.time_dim
        return time.seq_lens.sum() if time is not None else torch.tensor(self.raw.shape[0])

    def zero_padding(self) -> Tensor:
        """The same tensor with padded frames set to 0, so they never leak into sums or later layers."""
        if self.time_dim is None:
            return self
        mask = self.mask()
        while mask.dim() < self.raw.dim():
            mask = mask.unsqueeze(-1)
        return self.copy(raw=self.raw.masked_fill(~mask, 0))

    def copy(self, **changes) -> Tensor:
        return replace(self, **changes)

    def with_feature(self, raw: torch.Tensor, feature_dim: Dim) -> Tensor:
        """New dense tensor with the same batch/time dims and a new feature dim."""
        return Tensor(raw, (*self.dims_without_feature(), feature_dim))

    def dims_without_feature(self) -> tuple[Dim, ...]:
        return self.dims if self.feature_dim is None else self.dims[:-1]

    def reduce(self, dim: Dim, mode: str) -> Tensor:
        """sum/mean/max/min over `dim`; over a dynamic dim only real frames count."""
        axis = self.dims.index(dim)
        raw = self.raw
        if dim.is_dynamic:
            mask = dim.mask(raw.shape[axis])
            while mask.dim() < raw.dim():
                mask = mask.unsqueeze(-1)
            fill = {"sum": 0.0, "mean": 0.0, "max": float("-inf"), "min": float("inf")}[mode]
            raw = raw.masked_fill(~mask, fill)
        if mode == "sum":
            out = raw.sum(axis)
        elif mode == "mean":
            count = dim.seq_lens.to(raw.dtype) if dim.is_dynamic else torch.tensor(float(dim.size))
            count = count.clamp(min=1)
            while count.dim() < raw.dim() - 1:
                count = count.unsqueeze(-1)
            out = raw.sum(axis) / count
        elif mode == "max":
            out = raw.amax(axis)
        elif mode == "min":
            out = raw.amin(axis)
        else:
            raise ValueError(f"unknown reduce mode {mode!r}")
        return Tensor(out, tuple(d for d in self.dims if d is not dim), self.sparse_dim)

    def transpose(self, order: Sequence[Dim]) -> torch.Tensor:
        """The raw tensor with its axes in the given dim order."""
        return self.raw.permute(*[self.dims.index(d) for d in order])
