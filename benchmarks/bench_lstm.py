"""LSTM forward+backward: seqtrain.ops.lstm against torch.nn.LSTM, measured alternately in one process.

torch padded: nn.LSTM on the padded batch (oneDNN on CPU), which ignores the lengths, so its reverse direction
differs from ours; torch packed: nn.LSTM on a PackedSequence, the same function as ours.
Usage: python benchmarks/bench_lstm.py [--reps 3] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from seqtrain import ops
from seqtrain.ops import build

# (frames T, sequences B, input, units, bidirectional): ASR BLSTM layers (4×512 bidirectional, T≈200–500).
SIZES = [(200, 16, 512, 512, False), (200, 16, 512, 512, True), (500, 32, 512, 512, True)]
QUICK = [(50, 8, 128, 128, True)]
PACKED_MAX_FRAMES = 4000


def ours(module: torch.nn.LSTM, x, lens):
    outs = []
    for suffix, direction in [("", 1), ("_reverse", -1)][: 1 + module.bidirectional]:
        w_ih, w_hh = getattr(module, f"weight_ih_l0{suffix}"), getattr(module, f"weight_hh_l0{suffix}")
        bias = getattr(module, f"bias_ih_l0{suffix}") + getattr(module, f"bias_hh_l0{suffix}")
        outs.append(ops.lstm(x, w_ih, w_hh, bias, lens, direction=direction)[0])
    return torch.cat(outs, dim=2)


def torch_padded(module, x, lens):
    return module(x)[0]


def torch_packed(module, x, lens):
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lens, enforce_sorted=False)
    return torch.nn.utils.rnn.pad_packed_sequence(module(packed)[0], total_length=x.shape[0])[0]


def fwd_bwd(fn, module, x, lens) -> float:
    start = time.perf_counter()
    fn(module, x, lens).sum().backward()
    return time.perf_counter() - start


def bench(size, reps: int) -> dict[str, float]:
    T, B, n_in, H, bidirectional = size
    module = torch.nn.LSTM(n_in, H, bidirectional=bidirectional)
    x = torch.randn(T, B, n_in, requires_grad=True)
    lens = torch.randint(int(0.7 * T), T + 1, (B,))
    lens[0] = T
    fns = {"ours": ours, "torch padded": torch_padded, "torch packed": torch_packed}
    if T * B > PACKED_MAX_FRAMES:  # torch's packed path runs op by op per step: minutes at this size
        del fns["torch packed"]
    times = {name: [] for name in fns}
    for rep in range(reps + 1):  # first round warms up
        for name, fn in fns.items():
            elapsed = fwd_bwd(fn, module, x, lens)
            if rep:
                times[name].append(elapsed)
    medians = {name: statistics.median(t) for name, t in times.items()}
    medians.setdefault("torch packed", float("nan"))  # nan: not measured
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one tiny size, to check the script runs")
    args = parser.parse_args()
    torch.set_num_threads(2)
    impl = build.resolve_impl("auto", torch.zeros(1))
    threads = torch.get_num_threads()
    print(f"seqtrain.ops.lstm implementation: {impl}; torch {torch.__version__}, {threads} threads")
    print(
        f"{'T':>4} {'B':>3} {'in':>4} {'H':>4} {'dirs':>4} | {'ours s':>7} {'padded s':>8} {'packed s':>8} | "
        f"{'padded/ours':>11} {'packed/ours':>11}"
    )
    for size in QUICK if args.quick else SIZES:
        t = bench(size, args.reps)
        T, B, n_in, H, bi = size
        print(
            f"{T:>4} {B:>3} {n_in:>4} {H:>4} {1 + bi:>4} | {t['ours']:7.3f} {t['torch padded']:8.3f} "
            f"{t['torch packed']:8.3f} | {t['torch padded'] / t['ours']:11.2f} "
            f"{t['torch packed'] / t['ours']:11.2f}"
        )


if __name__ == "__main__":
    main()
