"""Native kernels against what torch ships, measured alternately in one process (issue 5's sizes).

LSTM: seqtrain.ops.lstm (layers and directions stacked as the rec layer does) against torch.nn.LSTM (oneDNN's
RNN primitive on CPU) on full-length batches, so both compute the same function. CTC: seqtrain.ops.ctc_loss
from logits against F.log_softmax + F.ctc_loss. Forward alone and forward+backward; medians after a warm-up.
GFLOP/s counts the LSTM's GEMM work (forward 2·T·B·4H·(in+H) per layer and direction, backward twice that)
and is compared with a large torch.mm measured in the same run. malloc keeps freed memory, as in the app.
Usage: python benchmarks/kernels.py [--reps 7] [--quick] [--only lstm|ctc]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from seqtrain import memory, ops
from seqtrain.ops import build

# name: (T, B, input, hidden, layers, bidirectional)
LSTM_SIZES = {
    "(a) 40→512, 1 layer, T=200 B=32": (200, 32, 40, 512, 1, False),
    "(b) 4×BLSTM 512, in 40, T=200 B=16": (200, 16, 40, 512, 4, True),
    "(c) LM 512→1024, T=64 B=32": (64, 32, 512, 1024, 1, False),
}
LSTM_QUICK = {"quick 8→32 BLSTM×2": (20, 5, 8, 32, 2, True)}
CTC_SIZES = [(200, 32, 30, 20), (200, 32, 30, 50), (200, 32, 1000, 20), (200, 32, 1000, 50)]  # T, B, C, S
CTC_QUICK = [(30, 4, 10, 8)]
MM_SIZE = 2048


def median_times(fns: dict[str, Callable[[], object]], reps: int) -> dict[str, float]:
    """Median seconds of each fn, run alternately (one warm-up round first, not counted)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for rep in range(reps + 1):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if rep:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def mm_gflops(reps: int) -> float:
    a, b = torch.randn(MM_SIZE, MM_SIZE), torch.randn(MM_SIZE, MM_SIZE)
    seconds = median_times({"mm": lambda: torch.mm(a, b)}, reps)["mm"]
    return 2 * MM_SIZE**3 / seconds / 1e9


def lstm_flops(T, B, n_in, H, layers, bidirectional) -> float:
    """GEMM FLOPs of one forward pass."""
    dirs = 1 + bidirectional
    return sum(2 * T * B * 4 * H * ((n_in if layer == 0 else dirs * H) + H) * dirs for layer in range(layers))


def ours_lstm(module: torch.nn.LSTM, x: torch.Tensor, lens: torch.Tensor, bf16: bool = False) -> torch.Tensor:
    """As seqtrain's rec layers run it: a bidirectional layer's two directions as one lstm_group (concurrent,
    one thread each, on 2 threads)."""
    for layer in range(module.num_layers):
        calls = []
        for suffix, direction in [("", 1), ("_reverse", -1)][: 1 + module.bidirectional]:
            name = f"l{layer}{suffix}"
            w_ih, w_hh = getattr(module, f"weight_ih_{name}"), getattr(module, f"weight_hh_{name}")
            bias = getattr(module, f"bias_ih_{name}") + getattr(module, f"bias_hh_{name}")
            calls.append(ops.LstmCall(x, w_ih, w_hh, bias, direction))
        outs = [y for y, _ in ops.lstm_group(calls, lens, impl="native", bf16=bf16)]
        x = torch.cat(outs, dim=2) if len(outs) > 1 else outs[0]
    return x


def bench_lstm(size, reps: int, bf16: bool) -> dict[str, float]:
    """Medians of ours and torch's in fp32, and with bf16: ours with bf16 GEMMs, torch under bf16 autocast."""
    T, B, n_in, H, layers, bidirectional = size
    module = torch.nn.LSTM(n_in, H, num_layers=layers, bidirectional=bidirectional)
    x = torch.randn(T, B, n_in, requires_grad=True)
    lens = torch.full((B,), T)

    def forward(fn):
        def run():
            with torch.no_grad():
                fn()

        return run

    def forward_backward(fn):
        return lambda: fn().float().sum().backward()

    def autocast(fn):
        def run():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return fn()

        return run

    ours, theirs = (lambda: ours_lstm(module, x, lens)), (lambda: module(x)[0])
    fns = {
        "ours fwd": forward(ours),
        "torch fwd": forward(theirs),
        "ours fwd+bwd": forward_backward(ours),
        "torch fwd+bwd": forward_backward(theirs),
    }
    if bf16:
        ours16, theirs16 = (lambda: ours_lstm(module, x, lens, bf16=True)), autocast(theirs)
        fns |= {
            "ours bf16 fwd": forward(ours16),
            "torch bf16 fwd": forward(theirs16),
            "ours bf16 fwd+bwd": forward_backward(ours16),
            "torch bf16 fwd+bwd": forward_backward(theirs16),
        }
    return median_times(fns, reps)


def bench_ctc(size, reps: int) -> dict[str, float]:
    T, B, C, S = size
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(T, B, C, generator=gen, requires_grad=True)
    targets = torch.randint(1, C, (B, S), generator=gen)
    input_lengths, target_lengths = torch.full((B,), T), torch.full((B,), S)

    def ours():
        return ops.ctc_loss(logits, targets, input_lengths, target_lengths, impl="native")

    def theirs():
        return F.ctc_loss(logits.log_softmax(-1), targets, input_lengths, target_lengths)

    def forward(fn):
        def run():
            with torch.no_grad():
                fn()

        return run

    return median_times(
        {
            "ours fwd": forward(ours),
            "torch fwd": forward(theirs),
            "ours fwd+bwd": lambda: ours().backward(),
            "torch fwd+bwd": lambda: theirs().backward(),
        },
        reps,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the script runs")
    parser.add_argument("--only", choices=["lstm", "ctc"])
    args = parser.parse_args()
    torch.set_num_threads(2)
    memory.keep_freed_memory()  # as the app does (engine.keep_freed_memory); helps ours and torch alike
    if build.resolve_impl("native", torch.zeros(1)) != "native":
        raise SystemExit(
            "benchmarks/kernels.py: the native kernels are not built; see `python -m seqtrain.ops build`"
        )
    together = "side by side" if ops.group_runs_concurrently(2, torch.zeros(1)) else "one after the other"
    print(
        f"seqtrain native kernels ({build.variant()}) vs torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; ours runs a BLSTM's two directions {together}"
    )
    if args.only != "ctc":
        peak = mm_gflops(args.reps)
        sizes = LSTM_QUICK if args.quick else LSTM_SIZES
        bf16 = ops.lstm_bf16_available(torch.zeros(1), min(size[3] for size in sizes.values()))
        print(f"\nLSTM, fp32 (torch.mm {MM_SIZE}³: {peak:.0f} GFLOP/s)")
        print(
            f"{'size':<36} | {'fwd ms ours/torch':>18} {'×':>5} | {'fwd+bwd ms ours/torch':>22} {'×':>5} | "
            f"{'GFLOP/s ours/torch (of mm)':>28}"
        )
        results = {name: bench_lstm(size, args.reps, bf16) for name, size in sizes.items()}
        for name, size in sizes.items():
            t = results[name]
            flops = 3 * lstm_flops(*size)
            ours_gf, torch_gf = flops / t["ours fwd+bwd"] / 1e9, flops / t["torch fwd+bwd"] / 1e9
            print(
                f"{name:<36} | {1e3 * t['ours fwd']:8.1f} {1e3 * t['torch fwd']:8.1f}  "
                f"{t['torch fwd'] / t['ours fwd']:5.2f} | {1e3 * t['ours fwd+bwd']:10.1f} "
                f"{1e3 * t['torch fwd+bwd']:10.1f}  {t['torch fwd+bwd'] / t['ours fwd+bwd']:5.2f} | "
                f"{ours_gf:6.0f} ({ours_gf / peak:.2f}) {torch_gf:6.0f} ({torch_gf / peak:.2f})"
            )
        if not bf16:
            print("\nLSTM bf16: not available here (needs a CPU with AMX and the avx512-amx build)")
        else:
            print(
                "\nLSTM, ours with bf16 GEMMs (AMX) vs torch fp32 and under bf16 autocast (× = theirs / ours)"
            )
            print(
                f"{'size':<36} | {'fwd ms ours':>11} {'× fp32':>7} {'× bf16':>7} | "
                f"{'fwd+bwd ms ours':>15} {'× fp32':>7} {'× bf16':>7}"
            )
            for name, t in results.items():
                f, fb = t["ours bf16 fwd"], t["ours bf16 fwd+bwd"]
                print(
                    f"{name:<36} | {1e3 * f:11.1f} {t['torch fwd'] / f:7.2f} "
                    f"{t['torch bf16 fwd'] / f:7.2f} | "
                    f"{1e3 * fb:15.1f} {t['torch fwd+bwd'] / fb:7.2f} {t['torch bf16 fwd+bwd'] / fb:7.2f}"
                )

    if args.only != "lstm":
        print("\nCTC from logits: ours vs F.log_softmax + F.ctc_loss")
        print(
            f"{'T':>4} {'B':>3} {'C':>5} {'S':>3} | {'fwd ms ours/torch':>18} {'×':>5} | "
            f"{'fwd+bwd ms ours/torch':>22} {'×':>5}"
        )
        for size in CTC_QUICK if args.quick else CTC_SIZES:
            t = bench_ctc(size, args.reps)
            print(
                f"{size[0]:>4} {size[1]:>3} {size[2]:>5} {size[3]:>3} | {1e3 * t['ours fwd']:8.2f} "
                f"{1e3 * t['torch fwd']:8.2f}  {t['torch fwd'] / t['ours fwd']:5.2f} | "
                f"{1e3 * t['ours fwd+bwd']:10.2f} {1e3 * t['torch fwd+bwd']:10.2f}  "
                f"{t['torch fwd+bwd'] / t['ours fwd+bwd']:5.2f}"
            )


if __name__ == "__main__":
    main()
