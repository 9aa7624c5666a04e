"""Pure-PyTorch references of the native kernels: the same functions, written plainly; gradients by autograd.

Used where the kernels cannot be built, and by the tests as a second opinion next to torch's own ops.
"""

from __future__ import annotations

import torch

# Stands in for log(0) in the CTC recursion: finite, so autograd never meets -inf - -inf (NaN), yet
# exp(_LOG_ZERO - x) is exactly 0 for any reachable x.
_LOG_ZERO = -1e30


def lstm_reference(x, weight_ih, weight_hh, bias, seq_lens, direction, h0, c0, bf16=False):
    """A loop over frames with masking: padded frames carry the state and output zero (see ops.lstm).
    bf16: the matrix products' operands rounded to bf16, everything else float32, as the native kernel."""
    r = (lambda t: t.bfloat16().to(t.dtype)) if bf16 else (lambda t: t)
    xw = torch.nn.functional.linear(r(x), r(weight_ih), bias)
    w_hh_t = r(weight_hh).t()
    valid = (torch.arange(x.shape[0])[:, None] < seq_lens[None, :]).to(x.device).unsqueeze(-1)
    h, c, ys = h0, c0, [None] * x.shape[0]
    frames = range(x.shape[0]) if direction > 0 else reversed(range(x.shape[0]))
    for t in frames:
        a_i, a_f, a_g, a_o = (xw[t] + r(h) @ w_hh_t).chunk(4, dim=1)
        c_new = torch.sigmoid(a_f) * c + torch.sigmoid(a_i) * torch.tanh(a_g)
        h_new = torch.sigmoid(a_o) * torch.tanh(c_new)
        c, h = torch.where(valid[t], c_new, c), torch.where(valid[t], h_new, h)
        ys[t] = torch.where(valid[t], h_new, torch.zeros_like(h_new))
    return torch.stack(ys), (h, c)


def ctc_loss_reference(logits, targets, input_lengths, target_lengths, blank):
    """Per-sequence CTC loss [B] (inf where no alignment exists): the alpha recursion of Graves et al. (2006)
    in log space over the blank-extended labels, vectorised over the batch; gradients come from autograd."""
    log_probs = logits.log_softmax(-1)
    in_lens, tgt_lens = input_lengths.to(logits.device), target_lengths.to(logits.device)
    targets = targets.to(logits.device).long()
    padding = torch.arange(targets.shape[1], device=logits.device)[None, :] >= tgt_lens[:, None]
    labels, can_skip = _extended_labels(targets.masked_fill(padding, blank), blank)
    emit = log_probs.gather(2, labels.unsqueeze(0).expand(log_probs.shape[0], -1, -1))  # [T, B, L]
    alpha = torch.full_like(emit[0], _LOG_ZERO)
    alpha[:, :2] = emit[0, :, :2]
    for t in range(1, emit.shape[0]):
        step = (
            torch.logsumexp(torch.stack([alpha, _shift(alpha, 1), _shift(alpha, 2, can_skip)]), 0) + emit[t]
        )
        alpha = torch.where((t < in_lens)[:, None], step, alpha)  # finished sequences keep their last frame
    last = 2 * tgt_lens[:, None]
    ll = torch.logsumexp(torch.cat([alpha.gather(1, last), _before_last(alpha, last)], 1), 1)
    possible = (ll > _LOG_ZERO / 2) & (in_lens > 0)
    no_frames = torch.where(tgt_lens == 0, 0.0, float("inf")).to(ll)
    return torch.where(in_lens > 0, torch.where(possible, -ll, float("inf")), no_frames)


def _extended_labels(targets, blank):
    """l' = (blank, l_1, blank, ..., l_S, blank) [B, 2S+1], and where l'_s may be entered from l'_{s-2}."""
    batch, max_target = targets.shape
    labels = torch.full((batch, 2 * max_target + 1), blank, dtype=torch.long, device=targets.device)
    labels[:, 1::2] = targets
    can_skip = torch.zeros_like(labels, dtype=torch.bool)
    can_skip[:, 3::2] = targets[:, 1:] != targets[:, :-1]
    return labels, can_skip


def _shift(alpha, by, allowed=None):
    shifted = torch.cat([torch.full_like(alpha[:, :by], _LOG_ZERO), alpha[:, :-by]], 1)
    return shifted if allowed is None else torch.where(allowed, shifted, _LOG_ZERO)


def _before_last(alpha, last):
    """alpha at the last label (index last - 1), or log(0) for an empty target."""
    return torch.where(last > 0, alpha.gather(1, (last - 1).clamp_min(0)), _LOG_ZERO)
