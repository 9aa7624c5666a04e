"""Losses on layer outputs, with RETURNN's semantics: the gradient uses the sum over real frames (or the
per-frame mean with `use_normalized_loss`), the reported value is per frame, and every classification
loss also counts frame errors (`fer`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from seqtrain.errors import NetworkError
from seqtrain.tensor import Tensor


@dataclass
class LossValue:
    """Sums over the real frames of one batch; `errors` counts misclassified frames (None: no error rate)."""

    loss_sum: torch.Tensor
    num_frames: torch.Tensor
    errors: torch.Tensor | None = None


LossFn = Callable[[Tensor, Tensor, dict, str], LossValue]
LOSSES: dict[str, LossFn] = {}
LOSS_OPTS: dict[str, set[str]] = {}


def register_loss(name: str, options: set[str]):
    def decorator(fn: LossFn) -> LossFn:
        LOSSES[name] = fn
        LOSS_OPTS[name] = options
        return fn

    return decorator


def check_loss(layer: str, name: str, loss_opts: dict) -> None:
    if name not in LOSSES:
        raise NetworkError(layer, f"loss: unknown {name!r}; known: {', '.join(sorted(LOSSES))}")
    unknown = set(loss_opts) - LOSS_OPTS[name]
    if unknown:
        known = ", ".join(sorted(LOSS_OPTS[name])) or "none"
        raise NetworkError(layer, f"loss_opts: unknown {sorted(unknown)} for loss {name}; known: {known}")


def aligned_mask(out: Tensor, target: Tensor, layer: str) -> torch.Tensor:
    """The frame mask shared by output and target; they must have the same lengths."""
    out_time, tgt_time = out.time_dim, target.time_dim
    if out_time is None or tgt_time is None:
        return torch.ones(out.raw.shape[0], 1, dtype=torch.bool, device=out.raw.device)
    if out_time is not tgt_time and not torch.equal(out_time.seq_lens, tgt_time.seq_lens):
        raise NetworkError(
            layer,
            f"output and target have different lengths "
            f"({out_time.seq_lens.tolist()} vs {tgt_time.seq_lens.tolist()}); "
            "a framewise loss needs aligned targets",
        )
    return out_time.mask(out.raw.shape[1])


def logits_of(out: Tensor) -> torch.Tensor:
    return out.logits if out.logits is not None else torch.log(out.raw.clamp_min(1e-20))


@register_loss("ce", {"label_smoothing", "perplexity"})
def cross_entropy(out: Tensor, target: Tensor, opts: dict, layer: str) -> LossValue:
    """Framewise cross entropy against sparse targets, with optional label smoothing."""
    if target.sparse_dim is None:
        raise NetworkError(layer, "loss ce needs sparse targets (class indices)")
    if target.sparse_dim.size != out.dim_size:
        raise NetworkError(
            layer, f"n_out {out.dim_size} does not match the target's {target.sparse_dim.size} classes"
        )
    mask = aligned_mask(out, target, layer)
    logits = logits_of(out)[mask]
    labels = target.raw[mask]
    losses = F.cross_entropy(
        logits.float(), labels, reduction="sum", label_smoothing=float(opts.get("label_smoothing", 0.0))
    )
    errors = (logits.argmax(-1) != labels).sum()
    return LossValue(losses, mask.sum(), errors)


@register_loss("mse", set())
def mean_squared_error(out: Tensor, target: Tensor, opts: dict, layer: str) -> LossValue:
    """Squared error summed over features, per real frame."""
    if target.sparse_dim is not None:
        target = target.copy(
            raw=F.one_hot(target.raw, target.sparse_dim.size).to(out.raw.dtype), sparse_dim=None
        )
    if target.raw.shape[-1] != out.raw.shape[-1]:
        raise NetworkError(
            layer, f"mse: output size {out.raw.shape[-1]} != target size {target.raw.shape[-1]}"
        )
    mask = aligned_mask(out, target, layer)
    diff = (out.raw - target.raw)[mask].float()
    return LossValue((diff * diff).sum(), mask.sum())
