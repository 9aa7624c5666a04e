"""The `rec` layer: an LSTM or GRU over time, in either direction, exact on padded batches.

Parameters use torch.nn.LSTM's gate layout (i, f, g, o) with one bias, so `nativelstm` (our kernel) and
`standardlstm` (torch's) share the same state_dict: a checkpoint trained with one loads into the other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from seqtrain.config import opt
from seqtrain.datasets.base import DataSpec
from seqtrain.layers.base import LAYERS, Layer, LayerOptions
from seqtrain.tensor import Dim, Tensor

UNITS = ("lstm", "nativelstm", "standardlstm", "gru")
CHAIN_PIECES = 8  # pieces of the time axis in a pipelined stack of LSTM layers (RecLayer.forward_chain)


@dataclass
class RecOptions(LayerOptions):
    n_out: int = opt(help="hidden size", ge=1)
    unit: str = opt("lstm", "lstm (ours if built, else torch's), nativelstm, standardlstm, gru")
    direction: int = opt(1, "1: forward in time, -1: backward (each sequence from its own last frame)")


def _reverse_rows(x: torch.Tensor, seq_lens: torch.Tensor) -> torch.Tensor:
    """[batch, time, ...] reversed within each length, as a copy of whole frames (index_select over the
    frames of the storage's layout: several times faster than an elementwise gather); keeps x's layout,
    batch- or time-major."""
    batch, steps = x.shape[:2]
    t = torch.arange(steps, device=x.device)[None, :]
    lens = seq_lens[:, None].to(x.device)
    src = torch.where(t < lens, lens - 1 - t, t)  # [batch, time]: the source frame of each frame
    b = torch.arange(batch, device=x.device)[:, None]
    time_major = x.transpose(0, 1)
    if not x.is_contiguous() and time_major.is_contiguous():
        rows = (src * batch + b).t().reshape(-1)
        flat = time_major.reshape(steps * batch, -1).index_select(0, rows)
        return flat.view(time_major.shape).transpose(0, 1)
    rows = (b * steps + src).reshape(-1)
    return x.contiguous().reshape(batch * steps, -1).index_select(0, rows).view(x.shape)


class _ReversePadded(torch.autograd.Function):
    """The reversal is its own inverse, so its gradient is the same reversal (not a scatter_add)."""

    @staticmethod
    def forward(ctx, x, seq_lens):
        ctx.save_for_backward(seq_lens)
        return _reverse_rows(x, seq_lens)

    @staticmethod
    def backward(ctx, grad):
        (seq_lens,) = ctx.saved_tensors
        return _reverse_rows(grad, seq_lens), None


def reverse_padded(x: torch.Tensor, seq_lens: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence of [batch, time, ...] within its length; padding stays in place."""
    return _ReversePadded.apply(x, seq_lens)


def _once_each(xs: list[torch.Tensor], fn) -> list[torch.Tensor]:
    """[fn(x) for x in xs], computed once per distinct tensor (layers of a group may share their input)."""
    done: dict[int, torch.Tensor] = {}
    for x in xs:
        if id(x) not in done:
            done[id(x)] = fn(x)
    return [done[id(x)] for x in xs]


@LAYERS.register("rec", RecOptions)
class RecLayer(Layer):
    def __init__(self, name: str, opts: RecOptions, inputs: list[DataSpec]):
        super().__init__(name, opts, inputs)
        self.dense_input(inputs[0], self)
        if opts.unit not in UNITS:
            raise self.error(f"unit: unknown {opts.unit!r}; known: {', '.join(UNITS)}")
        if opts.direction not in (1, -1):
            raise self.error(f"direction: must be 1 or -1, got {opts.direction}")
        if not inputs[0].time:
            raise self.error("needs an input with a time axis")
        gates = 3 if opts.unit == "gru" else 4
        hidden, n_in = opts.n_out, inputs[0].dim
        self.weight_ih = nn.Parameter(torch.empty(gates * hidden, n_in))
        self.weight_hh = nn.Parameter(torch.empty(gates * hidden, hidden))
        self.bias = nn.Parameter(torch.zeros(gates * hidden))
        if opts.unit == "gru":  # GRU's candidate gate needs its recurrent bias inside r * (W_hn h + b_hn)
            self.bias_hh = nn.Parameter(torch.zeros(gates * hidden))
        self.reset_parameters()
        self.out_spec = DataSpec(hidden, time=True)

    def extra_repr(self) -> str:
        opts = self.opts
        return f"{self.weight_ih.shape[1]} -> {opts.n_out}, unit={opts.unit}, direction={opts.direction}"

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.opts.n_out)  # as torch.nn.LSTM
        for p in (self.weight_ih, self.weight_hh):
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        return self._output(x, self._unit_call(x, lambda raw, bf16: self.run_unit(raw, x.time_dim, bf16)))

    @staticmethod
    def forward_group(layers: list[RecLayer], xs: list[Tensor]) -> list[Tensor]:
        """Layers reading the same sources (a BLSTM layer's two directions), all at once: our kernel runs them
        as one ops.lstm_group (concurrently, one thread each, where there are no more threads than layers);
        torch's units each on its own. The outputs are the same either way."""
        if not all(layer.use_native() for layer in layers):
            return [layer(x) for layer, x in zip(layers, xs)]
        seq_lens = xs[0].time_dim.seq_lens
        ys = RecLayer._unit_call(
            xs, lambda raws, bf16: [y for y, _ in RecLayer.run_native(layers, raws, seq_lens, bf16)]
        )
        return [layer._output(x, y) for layer, x, y in zip(layers, xs, ys)]

    @staticmethod
    def chain_pipelines(layers: list[RecLayer], x: Tensor) -> bool:
        """Whether forward_chain pays for these layers and input: our kernel for all, the pieces run
        concurrently, and sequences long enough for CHAIN_PIECES pieces of at least 2 frames."""
        from seqtrain import ops

        native = all(layer.use_native() for layer in layers)
        return native and x.raw.shape[1] >= 2 * CHAIN_PIECES and ops.group_runs_concurrently(2, x.raw)

    @staticmethod
    def forward_chain(layers: list[RecLayer], x: Tensor, training: bool) -> list[Tensor]:
        """Stacked forward LSTM layers (each reads only the one before; x is the first's input), pipelined
        over time: the sequences go in up to CHAIN_PIECES pieces, and layer j runs piece c while layer j + 1
        runs piece c - 1, as one ops.lstm_group (each call on its own thread), every piece continuing from
        the state its layer's previous piece left. The dropout of each layer on its input is drawn for the
        whole sequence, as the network would draw it. For layers and inputs where chain_pipelines holds."""
        size = -(-x.raw.shape[1] // CHAIN_PIECES)
        count = -(-x.raw.shape[1] // size)  # at most CHAIN_PIECES, none of them empty
        time = x.time_dim
        # The dropout of layers 2.. on their inputs: the masks the network would draw on the layers' outputs,
        # in its order, with their dtype and time-major layout (dropout draws in memory order).
        dtype = torch.float64 if x.raw.dtype == torch.float64 else torch.float32
        batch, steps = x.raw.shape[:2]
        masks = [None] + [
            nn.functional.dropout(
                x.raw.new_ones(steps, batch, layer.weight_ih.shape[1], dtype=dtype), p
            ).transpose(0, 1)
            if training and (p := layer.opts.dropout)
            else None
            for layer in layers[1:]
        ]

        def unit(raw: torch.Tensor, bf16: bool) -> list[torch.Tensor]:
            pieces = [[None] * count for _ in layers]
            states = [[None] * count for _ in layers]
            lens = [(time.seq_lens.cpu() - c * size).clamp(0, size) for c in range(count)]
            for stage in range(count + len(layers) - 1):
                todo = [(j, stage - j) for j in range(len(layers)) if 0 <= stage - j < count]
                inputs = []
                for j, c in todo:
                    piece = raw[:, c * size : (c + 1) * size] if j == 0 else pieces[j - 1][c]
                    if masks[j] is not None:
                        piece = piece * masks[j][:, c * size : (c + 1) * size]
                    inputs.append(piece)
                results = RecLayer.run_native(
                    [layers[j] for j, _ in todo],
                    inputs,
                    [lens[c] for _, c in todo],
                    bf16,
                    [states[j][c - 1] if c > 0 else None for j, c in todo],
                )
                for (j, c), (y, state) in zip(todo, results):
                    pieces[j][c], states[j][c] = y, state
            return [torch.cat(p, dim=1) for p in pieces]

        ys = RecLayer._unit_call(x, unit)
        return [layer._output(x, y) for layer, y in zip(layers, ys)]

    @staticmethod
    def run_native(
        layers: list[RecLayer],
        xs: list[torch.Tensor],
        seq_lens: torch.Tensor | list[torch.Tensor],
        bf16: bool,
        states: list[tuple[torch.Tensor, torch.Tensor] | None] | None = None,
    ) -> list[tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]]:
        """Our kernel for each layer's x [batch, time, in] (from its state, zeros if None; lengths shared or
        one per layer), as one ops.lstm_group: per layer y [batch, time, hidden] and the final (h, c). bf16:
        the GEMMs in bf16 where the kernel can (ops.lstm_bf16_available)."""
        from seqtrain import ops

        lens = seq_lens if isinstance(seq_lens, list) else [seq_lens] * len(layers)
        calls = [
            ops.LstmCall(
                x,
                layer.weight_ih,
                layer.weight_hh,
                layer.bias,
                layer.opts.direction,
                *(state or (None, None)),
                n.cpu(),
            )
            for layer, x, state, n in zip(
                layers,
                _once_each(xs, lambda x: x.transpose(0, 1).contiguous()),
                states or [None] * len(layers),
                lens,
            )
        ]
        bf16 = bf16 and all(ops.lstm_bf16_available(c.x, c.weight_hh.shape[1]) for c in calls)
        return [(y.transpose(0, 1), final) for y, final in ops.lstm_group(calls, lens[0].cpu(), bf16=bf16)]

    @property
    def runs_in_pieces(self) -> bool:
        return self.opts.direction == 1  # a backward layer needs each sequence's end first

    def forward_piece(self, inputs: list[Tensor], state: tuple[torch.Tensor, ...] | None):
        """Continues each sequence from `state` ((h, c) for an LSTM, (h,) for a GRU, each [batch, hidden];
        zeros if None) over the piece x; the state after it is the one at each sequence's last real frame."""
        if not self.runs_in_pieces:
            raise self.error("direction -1 cannot run on pieces of sequences (it starts at their ends)")
        (x,) = inputs
        lens = x.time_dim.seq_lens
        y, final = self._unit_call(x, lambda raw, bf16: self.run_unit_from(raw, lens, state, bf16))
        return self._output(x, y), final

    @staticmethod
    def _unit_call(x: Tensor | list[Tensor], unit):
        """unit(raw float input(s), bf16) outside autocast. Under bf16 autocast our kernel runs its GEMMs
        in bf16 (AMX) with the state in float32, where the CPU allows it; otherwise the recurrence runs in
        float32 (torch's CPU LSTM fails under bf16 autocast on CPUs without AVX-512 bf16). The layers around
        it compute in the autocast dtype either way."""
        xs = x if isinstance(x, list) else [x]
        device = xs[0].raw.device.type
        bf16 = torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == torch.bfloat16
        raws = _once_each([x.raw for x in xs], lambda r: r if r.dtype == torch.float64 else r.float())
        with torch.autocast(device, enabled=False):
            return unit(raws if isinstance(x, list) else raws[0], bf16)

    def _output(self, x: Tensor, y: torch.Tensor) -> Tensor:
        return Tensor(y, (x.batch_dim, x.time_dim, Dim(f"{self.name}:feature", self.opts.n_out)))

    def run_unit(self, x: torch.Tensor, time: Dim, bf16: bool = False) -> torch.Tensor:
        """[batch, time, in] -> [batch, time, hidden] in the layer's direction, zero on padded frames. Our
        kernel runs each sequence backwards from its own last frame and writes the zeros itself; torch's units
        run forward over the sequences reversed in place. bf16: the kernel's GEMMs in bf16, where it can
        (ops.lstm_bf16_available)."""
        direction, seq_lens = self.opts.direction, time.seq_lens
        if self.use_native():
            return RecLayer.run_native([self], [x], seq_lens, bf16)[0][0]
        if direction == -1:
            y = reverse_padded(self.run_torch_unit(reverse_padded(x, seq_lens)), seq_lens)
        else:
            y = self.run_torch_unit(x)
        # torch's LSTM/GRU outputs are finite (tanh-bounded): a product with the mask zeroes the padded
        # frames, ~3x faster than masked_fill
        return y * time.mask(y.shape[1])[..., None].to(y.dtype)

    def run_torch_unit(self, x: torch.Tensor) -> torch.Tensor:
        """torch's LSTM/GRU forward in time. Frames past a sequence's end are computed but never feed a real
        frame, so they are only zeroed afterwards."""
        return self.torch_unit(x, self.zero_state(x))[0]

    def zero_state(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        zeros = x.new_zeros(x.shape[0], self.opts.n_out)
        return (zeros,) if self.opts.unit == "gru" else (zeros, zeros)

    def run_unit_from(
        self, x: torch.Tensor, seq_lens: torch.Tensor, state: tuple[torch.Tensor, ...] | None, bf16: bool
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """[batch, time, in] forward in time from `state`: (y zero on padded frames, the final state)."""
        if state is None:
            state = self.zero_state(x)
        if self.use_native():
            return RecLayer.run_native([self], [x], seq_lens, bf16, [state])[0]
        # torch's units, one frame at a time (pieces are short in decoding): a sequence past its end keeps its
        # state, as the kernel does
        lens = seq_lens.to(x.device)[:, None]
        ys = []
        for t in range(x.shape[1]):
            y, new = self.torch_unit(x[:, t : t + 1], state)
            valid = t < lens
            state = tuple(torch.where(valid, n, s) for n, s in zip(new, state))
            ys.append(y[:, 0] * valid.to(y.dtype))
        y = torch.stack(ys, 1) if ys else x.new_zeros(x.shape[0], 0, self.opts.n_out)
        return y, state

    def torch_unit(self, x: torch.Tensor, state: tuple[torch.Tensor, ...]):
        """torch's LSTM/GRU over x [batch, time, in] from state; returns y and the state after x."""
        hx = tuple(s[None] for s in state)
        if self.opts.unit == "gru":
            weights = [self.weight_ih, self.weight_hh, self.bias, self.bias_hh]
            y, h = torch.gru(x, hx[0], weights, True, 1, 0.0, self.training, False, True)
            return y, (h[0],)
        weights = [self.weight_ih, self.weight_hh, self.bias, torch.zeros_like(self.bias)]
        y, h, c = torch.lstm(x, hx, weights, True, 1, 0.0, self.training, False, True)
        return y, (h[0], c[0])

    def use_native(self) -> bool:
        """Whether seqtrain.ops.lstm runs this layer: nativelstm always; lstm when the kernels are built
        (else torch's LSTM); never standardlstm or gru."""
        from seqtrain import ops

        if self.opts.unit == "nativelstm":
            return True
        return self.opts.unit == "lstm" and ops.native_available()
