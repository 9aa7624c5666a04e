"""CTC loss forward+backward from logits: seqtrain.ops.ctc_loss against F.ctc_loss over log_softmax, measured
alternately in one process. Usage: python benchmarks/bench_ctc.py [--reps 5] [--quick]"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from seqtrain import ops
from seqtrain.ops import build

# (frames T, sequences B, classes C, max target S): ASR CTC after subsampling, chars/BPE.
SIZES = [(200, 16, 80, 60), (500, 32, 80, 150), (300, 32, 1000, 80), (500, 32, 10000, 100)]
QUICK = [(30, 4, 10, 8)]


def ours(logits, targets, input_lengths, target_lengths):
    return ops.ctc_loss(logits, targets, input_lengths, target_lengths)


def reference(logits, targets, input_lengths, target_lengths):
    return F.ctc_loss(logits.log_softmax(-1), targets, input_lengths, target_lengths)


def make_case(T, B, C, S):
    logits = torch.randn(T, B, C, requires_grad=True)
    targets = torch.randint(1, C, (B, S))
    input_lengths = torch.randint(int(0.7 * T), T + 1, (B,))
    target_lengths = torch.randint(int(0.7 * S), S + 1, (B,))
    input_lengths[0], target_lengths[0] = T, S
    return logits, targets, input_lengths, target_lengths


def bench(size, reps: int) -> dict[str, float]:
    case = make_case(*size)
    times = {"ours": [], "torch": []}
    for rep in range(reps + 1):  # first round warms up
        for name, fn in [("ours", ours), ("torch", reference)]:
            start = time.perf_counter()
            fn(*case).backward()
            if rep:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one tiny size, to check the script runs")
    args = parser.parse_args()
    torch.set_num_threads(2)
    impl = build.resolve_impl("auto", torch.zeros(1))
    threads = torch.get_num_threads()
    print(f"seqtrain.ops.ctc_loss implementation: {impl}; torch {torch.__version__}, {threads} threads")
    print(f"{'T':>4} {'B':>3} {'C':>6} {'S':>4} | {'ours ms':>8} {'torch ms':>8} | {'torch/ours':>10}")
    for size in QUICK if args.quick else SIZES:
        t = bench(size, args.reps)
        print(
            f"{size[0]:>4} {size[1]:>3} {size[2]:>6} {size[3]:>4} | "
            f"{1e3 * t['ours']:8.1f} {1e3 * t['torch']:8.1f} | {t['torch'] / t['ours']:10.2f}"
        )


if __name__ == "__main__":
    main()
