"""LSTM over a padded, time-major batch: native kernel (RETURNN NativeLstm2 design) or pure-PyTorch reference.

Layout, as torch.nn.LSTM (gate order i, f, g, o), so its parameters convert directly:
``weight_ih = lstm.weight_ih_l0`` [4H, in], ``weight_hh = lstm.weight_hh_l0`` [4H, H],
``bias = lstm.bias_ih_l0 + lstm.bias_hh_l0`` [4H] (for the reverse direction the ``*_reverse`` ones).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch.autograd.function import once_differentiable

from seqtrain.ops import build, reference


def lstm(
    x: torch.Tensor,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias: torch.Tensor,
    seq_lens: torch.Tensor,
    *,
    direction: int = 1,
    h0: torch.Tensor | None = None,
    c0: torch.Tensor | None = None,
    impl: str = "auto",
    bf16: bool = False,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """One LSTM layer over x [T, B, in] (time-major) with lengths seq_lens [B] (int64).

    direction=-1 runs each sequence backwards from its own last real frame. Returns y [T, B, H], zero on
    padded frames, and (h_n, c_n) [B, H], the state at each sequence's last processed real frame (h0/c0 where
    the length is 0). Differentiable w.r.t. x, the weights, bias, h0 and c0.

    bf16=True (native kernel on a CPU with AMX, see lstm_bf16_available): every matrix product takes bf16
    operands (x, the weights, h and the gate gradients rounded) and accumulates in float32; gates, cell state,
    outputs and gradients stay float32. The reference computes the same rounding (slowly); the native kernel
    raises where it cannot run it.
    """
    call = LstmCall(x, weight_ih, weight_hh, bias, direction, h0, c0)
    return lstm_group([call], seq_lens, impl=impl, bf16=bf16)[0]


class LstmCall(NamedTuple):
    """The arguments of one lstm() call in lstm_group."""

    x: torch.Tensor
    weight_ih: torch.Tensor
    weight_hh: torch.Tensor
    bias: torch.Tensor
    direction: int = 1
    h0: torch.Tensor | None = None
    c0: torch.Tensor | None = None
    seq_lens: torch.Tensor | None = None  # this call's lengths, if not the group's


def lstm_group(
    calls: Sequence[LstmCall], seq_lens: torch.Tensor, *, impl: str = "auto", bf16: bool = False
) -> list[tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]]:
    """lstm() of independent calls, e.g. the two directions of a BLSTM layer (lengths: seq_lens, or a call's
    own): the same results, but the native CPU kernel runs them concurrently, one thread each, where there
    are no more threads than calls (group_runs_concurrently), rather than splitting each loop over threads."""
    lens = [
        (seq_lens if c.seq_lens is None else c.seq_lens).to(device="cpu", dtype=torch.int64) for c in calls
    ]
    states = []
    for c, n in zip(calls, lens):
        _check_args(c.x, c.weight_ih, c.weight_hh, c.bias, n, c.direction)
        states.append(_initial_state(c.x, c.weight_hh, c.h0, c.c0))
    if calls and build.resolve_impl(impl, calls[0].x) == "reference":
        return [
            reference.lstm_reference(c.x, c.weight_ih, c.weight_hh, c.bias, n, c.direction, h0, c0, bf16)
            for c, n, (h0, c0) in zip(calls, lens, states)
        ]
    if bf16:
        for c in calls:
            _check_bf16(c.x, c.weight_hh)
    flat = [t for c, state in zip(calls, states) for t in (c.x, c.weight_ih, c.weight_hh, c.bias, *state)]
    directions = [c.direction for c in calls]
    out = _NativeLstm.apply(len(calls), lens, directions, bf16, build.poison_outputs(), *flat)
    return [(out[3 * i], (out[3 * i + 1], out[3 * i + 2])) for i in range(len(calls))]


def group_runs_concurrently(calls: int, x: torch.Tensor) -> bool:
    """Whether lstm_group runs `calls` calls like x concurrently (native CPU kernel, 1 < threads <= calls)."""
    if calls < 2 or x.device.type != "cpu" or not build.native_available():
        return False
    return bool(build.native_module().lstm_group_concurrent(calls, False))


class _NativeLstm(torch.autograd.Function):
    """The native kernel for one or more lstm() calls at once (lstm_forward_group / lstm_backward_group; flat
    inputs: x, weight_ih, weight_hh, bias, h0, c0 per call)."""

    @staticmethod
    def forward(ctx, n, seq_lens, directions, bf16, poison, *flat):
        args = [flat[k::6] for k in range(6)]  # xs, w_ihs, w_hhs, biases, h0s, c0s
        res = build.native_module().lstm_forward_group(*args, seq_lens, directions, bf16, poison)
        ys, hss, css, actss = (res[k::4] for k in range(4))
        ctx.save_for_backward(*args[0], *args[1], *args[2], *hss, *css, *actss)
        ctx.n, ctx.seq_lens, ctx.directions, ctx.bf16, ctx.poison = n, seq_lens, directions, bf16, poison
        out = []
        for y, hs, cs, d in zip(ys, hss, css, directions):
            last = hs.shape[0] - 1 if d > 0 else 0  # where lstm.cpp keeps the state after the last step
            out += [y, hs[last].clone(), cs[last].clone()]
        return tuple(out)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        n = ctx.n
        saved = ctx.saved_tensors
        xs, w_ihs, w_hhs, hss, css, actss = (saved[k * n : (k + 1) * n] for k in range(6))
        dys, dh_ns, dc_ns = (list(grads[k::3]) for k in range(3))
        need_dxs = [ctx.needs_input_grad[5 + 6 * i] for i in range(n)]  # no dx GEMM for a layer reading data
        res = build.native_module().lstm_backward_group(
            xs,
            w_ihs,
            w_hhs,
            ctx.seq_lens,
            hss,
            css,
            actss,
            dys,
            dh_ns,
            dc_ns,
            ctx.directions,
            ctx.bf16,
            need_dxs,
            ctx.poison,
        )
        return (None, None, None, None, None, *res)


def lstm_bf16_available(x: torch.Tensor, hidden: int) -> bool:
    """Whether lstm(..., bf16=True) runs for input like x and this hidden size."""
    if x.dtype != torch.float32 or x.device.type != "cpu" or hidden % 16 or not build.native_available():
        return False
    return bool(build.native_module().lstm_bf16_available())


def _initial_state(x, weight_hh, h0, c0) -> tuple[torch.Tensor, torch.Tensor]:
    zeros = x.new_zeros(x.shape[1], weight_hh.shape[1])
    return (zeros if h0 is None else h0), (zeros if c0 is None else c0)


def _check_bf16(x, weight_hh) -> None:
    hidden = weight_hh.shape[1]
    if not lstm_bf16_available(x, hidden):
        raise RuntimeError(
            "seqtrain.ops.lstm: bf16=True needs float32 on a CPU with AMX (the native build's avx512-amx "
            f"variant) and a hidden size that is a multiple of 16; here: {build.variant()}, "
            f"{x.dtype} on {x.device}, hidden {hidden}"
        )


def _check_args(x, weight_ih, weight_hh, bias, seq_lens, direction) -> None:
    if x.dim() != 3:
        raise ValueError(f"seqtrain.ops.lstm: x must be time-major [T, B, in], got shape {tuple(x.shape)}")
    hidden = weight_hh.shape[1]
    expected = {
        "weight_ih": (4 * hidden, x.shape[2]),
        "weight_hh": (4 * hidden, hidden),
        "bias": (4 * hidden,),
    }
    for name, tensor in zip(expected, (weight_ih, weight_hh, bias)):
        if tuple(tensor.shape) != expected[name]:
            raise ValueError(
                f"seqtrain.ops.lstm: {name} must be {expected[name]} (torch.nn.LSTM layout), "
                f"got {tuple(tensor.shape)}"
            )
    if direction not in (1, -1):
        raise ValueError(f"seqtrain.ops.lstm: direction must be 1 or -1, got {direction}")
    if seq_lens.shape != (x.shape[1],) or seq_lens.dtype.is_floating_point:
        raise ValueError(f"seqtrain.ops.lstm: seq_lens must be an integer tensor [B={x.shape[1]}]")
    if len(seq_lens) and not 0 <= int(seq_lens.min()) <= int(seq_lens.max()) <= x.shape[0]:
        raise ValueError(
            f"seqtrain.ops.lstm: seq_lens must lie in [0, T={x.shape[0]}], got {seq_lens.tolist()}"
        )
