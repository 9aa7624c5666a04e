"""The `ctc` loss (Graves et al. 2006): the sum over all alignments of the target labels with the output.

As RETURNN's CtcLoss: the output has one class more than the target vocabulary, and blank is the last
index (`n_out - 1` = the number of target classes), so target labels keep their indices. The loss is summed
over sequences and normalised by the number of target labels (RETURNN's loss_norm_factor is
1 / sum(target_seq_lens) for losses with a target), so `score_<layer>` is the loss per label and
`error_<layer>` (the greedy decoding's label edit distance, as RETURNN's CtcLoss.get_error) is the label
error rate.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from seqtrain.errors import NetworkError
from seqtrain.layers.loss import LossValue, register_loss
from seqtrain.tensor import Tensor

log = logging.getLogger(__name__)

IMPLS = ("auto", "native", "reference", "torch")


def blank_index(out: Tensor, opts: dict) -> int:
    """`blank` from loss_opts (negative counts from the end), default the last class (RETURNN)."""
    blank = int(opts.get("blank", -1))
    return blank + out.dim_size if blank < 0 else blank


def check_sizes(out: Tensor, target: Tensor, blank: int, layer: str) -> None:
    if target.sparse_dim is None or target.time_dim is None:
        raise NetworkError(layer, "loss ctc needs sparse targets with a time axis (label sequences)")
    if out.time_dim is None:
        raise NetworkError(layer, "loss ctc needs an output with a time axis")
    classes, n_out = target.sparse_dim.size, out.dim_size
    if n_out == classes + 1 and blank != classes:
        raise NetworkError(
            layer, f"loss_opts.blank: with n_out {n_out} = {classes} target classes + 1, blank is {classes}"
        )
    if n_out not in (classes, classes + 1) or not 0 <= blank < n_out:
        raise NetworkError(
            layer,
            f"n_out {n_out} does not fit {classes} target classes: give n_out {classes + 1} (blank last), "
            f"or n_out {classes} with loss_opts.blank = the blank label's index in the vocabulary",
        )


@register_loss("ctc", {"blank", "zero_infinity", "impl", "errors"})
def ctc(out: Tensor, target: Tensor, opts: dict, layer: str) -> LossValue:
    """loss_opts: blank (default -1: the last class), zero_infinity (default true: sequences without an
    alignment, i.e. too short for their labels, count 0, as RETURNN's TF ctc_loss with
    ignore_longer_outputs_than_inputs; a warning names them), impl (auto: seqtrain.ops when its native
    kernels built, else torch's F.ctc_loss; native, reference, torch), errors (default true: greedy label
    edit distance as the error)."""
    blank = blank_index(out, opts)
    check_sizes(out, target, blank, layer)
    impl = str(opts.get("impl", "auto"))
    if impl not in IMPLS:
        raise NetworkError(layer, f"loss_opts.impl: unknown {impl!r}; known: {', '.join(IMPLS)}")
    logits = _logits(out).float().transpose(0, 1)  # [T, B, C]; the kernels take float32/64, AMP gives bf16
    labels = target.raw.long()
    in_lens, tgt_lens = out.time_dim.seq_lens, target.time_dim.seq_lens
    zero_inf = bool(opts.get("zero_infinity", True))
    losses = _per_seq_losses(logits, labels, in_lens, tgt_lens, blank, zero_inf, impl, layer)
    errors = _greedy_errors(logits, in_lens, labels, tgt_lens, blank) if opts.get("errors", True) else None
    return LossValue(losses.sum(), tgt_lens.sum(), errors)


def _logits(out: Tensor) -> torch.Tensor:
    # log of the softmax output when there are no logits: log_softmax of it gives the same distribution
    return out.logits if out.logits is not None else torch.log(out.raw.clamp_min(1e-20))


def _per_seq_losses(logits, labels, in_lens, tgt_lens, blank, zero_inf, impl, layer) -> torch.Tensor:
    from seqtrain import ops

    if impl == "torch" or (impl == "auto" and not ops.native_available()):
        _warn_infeasible(labels, in_lens, tgt_lens, layer)
        return F.ctc_loss(
            torch.log_softmax(logits, -1),
            labels,
            in_lens.cpu(),
            tgt_lens.cpu(),
            blank=blank,
            reduction="none",
            zero_infinity=zero_inf,
        )
    return ops.ctc_loss(
        logits, labels, in_lens, tgt_lens, blank=blank, reduction="none", zero_infinity=zero_inf, impl=impl
    )


def _warn_infeasible(labels, in_lens, tgt_lens, layer: str) -> None:
    # seqtrain.ops warns itself; torch's F.ctc_loss silently gives inf (or 0 with zero_infinity)
    from seqtrain.ops import ctc_feasible

    bad = (~ctc_feasible(labels, in_lens, tgt_lens)).nonzero().flatten().tolist()
    if bad:
        log.warning(
            "%s: ctc: batch entries %s have fewer frames than labels (+ repeats); no alignment", layer, bad
        )


@torch.no_grad()
def _greedy_errors(logits, in_lens, labels, tgt_lens, blank) -> torch.Tensor:
    from seqtrain.search import greedy_labels
    from seqtrain.wer import batch_edit_distance

    hyp, hyp_lens = greedy_labels(logits.transpose(0, 1), in_lens, blank)
    return batch_edit_distance(hyp, hyp_lens, labels, tgt_lens.to(labels.device)).sum()
