"""Where our fp32 LSTM's forward+backward time goes, and the ratio to torch that it bounds.

Builds the kernel sources with SEQTRAIN_LOOP_TIMERS (csrc/loop_timers.h: wall time per phase of the fused CPU
time loops, summed over threads), then runs ours and torch.nn.LSTM forward+backward alternately in one process
as benchmarks/kernels.py does. Per call (medians over the rounds): our total; the loops' phases per thread
(their sum over threads / threads); the rest, outside the loops (the input projection, dx and weight-gradient
GEMMs through BLAS, copies, autograd); torch's total; and two ratios: achieved (torch / ours) and bound
(torch / ours less the loops' cell passes, packing and barrier waits: what ours would reach if everything
in the loops but the recurrent GEMM took no time).
Usage: python benchmarks/lstm_phases.py [--sizes a,c] [--reps 11]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from kernel_ab import SIZES
from kernels import mm_gflops, ours_lstm

from seqtrain import memory
from seqtrain.ops import build

GEMM_PHASES = ("fwd_gemm", "bwd_gemm")


def measure(module, size, reps: int) -> dict[str, float]:
    """Medians per call: 'ours', 'torch' and each loop phase (per thread), in seconds."""
    T, B, n_in, H, layers, bidirectional = size
    lstm = torch.nn.LSTM(n_in, H, num_layers=layers, bidirectional=bidirectional)
    x, lens = torch.randn(T, B, n_in, requires_grad=True), torch.full((B,), T)
    threads = torch.get_num_threads()
    samples: dict[str, list[float]] = {"ours": [], "torch": []}
    for rep in range(reps + 1):  # round 0 warms up
        module.lstm_loop_phases(reset=True)
        start = time.perf_counter()
        ours_lstm(lstm, x, lens).sum().backward()
        ours = time.perf_counter() - start
        phases = module.lstm_loop_phases(reset=True)
        start = time.perf_counter()
        lstm(x)[0].sum().backward()
        theirs = time.perf_counter() - start
        if rep:
            samples["ours"].append(ours)
            samples["torch"].append(theirs)
            for name, seconds in phases.items():
                samples.setdefault(name, []).append(seconds / threads)
    return {name: statistics.median(v) for name, v in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="a,c", help=f"comma-separated, of {', '.join(SIZES)}")
    parser.add_argument("--reps", type=int, default=11)
    args = parser.parse_args()
    torch.set_num_threads(2)
    memory.keep_freed_memory()
    module = build.loop_timers_module()
    if not module.lstm_loop_phases():
        raise SystemExit("benchmarks/lstm_phases.py: the build has no loop timers")
    build.native_module = lambda: module  # what seqtrain.ops calls for the kernels
    print(f"torch.mm 2048³: {mm_gflops(args.reps):.0f} GFLOP/s; ms per forward+backward call")
    for key in args.sizes.split(","):
        t = measure(module, SIZES[key], args.reps)
        phases = {name: t[name] for name in t if name not in ("ours", "torch")}
        loops = sum(phases.values())
        overhead = loops - sum(phases[name] for name in GEMM_PHASES)
        print(f"\n({key}) {SIZES[key]} (T, B, in, H, layers, bidirectional)")
        print("  loops: " + ", ".join(f"{name} {1e3 * s:.1f}" for name, s in phases.items()))
        print(
            f"  ours {1e3 * t['ours']:.1f} = loops {1e3 * loops:.1f} (GEMM {1e3 * (loops - overhead):.1f}, "
            f"the rest of them {1e3 * overhead:.1f}) + outside the loops {1e3 * (t['ours'] - loops):.1f}"
        )
        print(
            f"  torch {1e3 * t['torch']:.1f}; achieved × {t['torch'] / t['ours']:.2f}, "
            f"bound × {t['torch'] / (t['ours'] - overhead):.2f} (loops' non-GEMM phases at zero)"
        )


if __name__ == "__main__":
    main()
