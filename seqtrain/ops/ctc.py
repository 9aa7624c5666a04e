"""CTC loss from unnormalised logits: native kernel (loss and gradient in one forward/backward pass pair) or
the pure-PyTorch reference. Semantics of torch.nn.functional.ctc_loss, except that impossible alignments never
give NaN: their loss is inf (0 with zero_infinity), their gradient zero, and a warning names them."""

from __future__ import annotations

import warnings

import torch
from torch.autograd.function import once_differentiable

from seqtrain.ops import build, reference

REDUCTIONS = ("none", "sum", "mean")


class _NativeCtc(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, input_lengths, target_lengths, blank, poison):
        loss, log_probs, alpha = build.native_module().ctc_forward(
            logits, targets, input_lengths, target_lengths, blank, poison
        )
        ctx.save_for_backward(log_probs, alpha, loss, targets, input_lengths, target_lengths)
        ctx.blank, ctx.poison = blank, poison
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss):
        log_probs, alpha, loss, targets, input_lengths, target_lengths = ctx.saved_tensors
        grad = build.native_module().ctc_backward(
            grad_loss, log_probs, alpha, loss, targets, input_lengths, target_lengths, ctx.blank, ctx.poison
        )
        return grad, None, None, None, None, None


def ctc_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    input_lengths,
    target_lengths,
    *,
    blank: int = 0,
    reduction: str = "mean",
    zero_infinity: bool = False,
    impl: str = "auto",
) -> torch.Tensor:
    """CTC loss of logits [T, B, C] (the op applies log_softmax itself) and padded targets [B, S].

    reduction: 'none' gives [B]; 'sum'; 'mean' divides each loss by its target length, then averages over the
    batch (as torch).
    """
    input_lengths, target_lengths = _lengths(input_lengths), _lengths(target_lengths)
    _check_args(logits, targets, input_lengths, target_lengths, blank, reduction)
    if build.resolve_impl(impl, logits) == "native":
        losses = _NativeCtc.apply(
            logits, targets, input_lengths, target_lengths, blank, build.poison_outputs()
        )
    else:
        losses = reference.ctc_loss_reference(logits, targets, input_lengths, target_lengths, blank)
    impossible = torch.isinf(losses)
    if impossible.any():
        _warn_impossible(impossible, zero_infinity)
        if zero_infinity:
            losses = torch.where(impossible, torch.zeros_like(losses), losses)
    return _reduce(losses, target_lengths, reduction)


def ctc_feasible(targets: torch.Tensor, input_lengths, target_lengths) -> torch.Tensor:
    """[B] bool: whether any alignment exists, i.e. T >= S + (number of repeated neighbouring labels)."""
    target_lengths = _lengths(target_lengths)
    targets = targets.cpu()
    repeats = (targets[:, 1:] == targets[:, :-1]) & (
        torch.arange(1, targets.shape[1])[None, :] < target_lengths[:, None]
    )
    return _lengths(input_lengths) >= target_lengths + repeats.sum(1)


def _lengths(lengths) -> torch.Tensor:
    return torch.as_tensor(lengths).to(device="cpu", dtype=torch.int64)


def _reduce(losses: torch.Tensor, target_lengths: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    return (losses / target_lengths.to(losses.device).clamp_min(1).to(losses.dtype)).mean()


def _warn_impossible(impossible: torch.Tensor, zero_infinity: bool) -> None:
    seqs = impossible.nonzero().flatten().tolist()
    action = "set to 0 (zero_infinity)" if zero_infinity else "inf, gradient 0"
    warnings.warn(
        f"seqtrain.ops.ctc_loss: no alignment for batch entries {seqs} (input shorter than the target plus "
        f"its repeats); their loss is {action}",
        RuntimeWarning,
        stacklevel=3,
    )


def _check_args(logits, targets, input_lengths, target_lengths, blank, reduction) -> None:
    where = "seqtrain.ops.ctc_loss"
    if reduction not in REDUCTIONS:
        raise ValueError(f"{where}: unknown reduction {reduction!r}; known: {', '.join(REDUCTIONS)}")
    if logits.dim() != 3 or targets.dim() != 2 or targets.shape[0] != logits.shape[1]:
        raise ValueError(
            f"{where}: need logits [T, B, C] and targets [B, S], "
            f"got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    max_time, batch, classes = logits.shape
    if input_lengths.shape != (batch,) or target_lengths.shape != (batch,):
        raise ValueError(f"{where}: input_lengths and target_lengths must have B={batch} entries")
    if not 0 <= blank < classes:
        raise ValueError(f"{where}: blank={blank} is not a class index of C={classes}")
    if batch and (input_lengths.min() < 0 or input_lengths.max() > max_time):
        raise ValueError(
            f"{where}: input_lengths must lie in [0, T={max_time}], got {input_lengths.tolist()}"
        )
    if batch and (target_lengths.min() < 0 or target_lengths.max() > targets.shape[1]):
        raise ValueError(f"{where}: target_lengths must lie in [0, S={targets.shape[1]}]")
    used = (
        torch.arange(targets.shape[1], device=targets.device)[None, :]
        < target_lengths.to(targets.device)[:, None]
    )
    bad = used & ((targets < 0) | (targets >= classes) | (targets == blank))
    if bad.any():
        raise ValueError(f"{where}: targets must be labels in [0, {classes}) other than blank={blank}")
