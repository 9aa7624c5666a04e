"""Builds of the kernel sources against each other, alternately in one process: for kernel work on a
machine whose speed drifts (this VM's by ±20% over minutes), where two separate runs compare the drift.

Each directory (a copy of csrc/ with a change) is built under its own extension-module name: CPython keeps
one extension module per name, so a second build loaded under the first's name silently is the first again.
Builds are cached by their sources next to seqtrain's own (ab-* in its cache directory; delete at will).
LSTM sizes as benchmarks/kernels.py (a, b, c) plus `t`, one layer of benchmarks/train_throughput.py's BLSTM.
Prints each build's median ms and the median of its per-round time ratios to the first build (< 1: faster).
Usage: python benchmarks/kernel_ab.py csrc /tmp/csrc_changed [--sizes a,c,t] [--reps 15] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from kernels import LSTM_SIZES, ours_lstm

from seqtrain import memory
from seqtrain.ops import build

SIZES = {name[1]: size for name, size in LSTM_SIZES.items()}  # "(a) ..." -> "a"
SIZES["t"] = (200, 25, 512, 256, 1, True)


def load_builds(dirs: list[str]) -> dict[str, object]:
    """Each directory's build (cached by its sources), keyed by the directory as given."""
    modules = {}
    for i, d in enumerate(dirs):
        src = Path(d).resolve()
        if not (src / "ops.h").is_file():
            raise SystemExit(f"benchmarks/kernel_ab.py: {d} holds no kernel sources (ops.h)")
        directory = build.build_directory().parent / f"ab-{build.variant()}-{build.digest_sources(src)}"
        modules[d] = build.compile_sources(src, f"seqtrain_ops_ab{i}", directory)
    if len({id(m) for m in modules.values()}) != len(modules):
        raise SystemExit("benchmarks/kernel_ab.py: two directories loaded as one module")
    return modules


def compare(modules: dict[str, object], size, reps: int) -> None:
    T, B, n_in, H, layers, bidirectional = size
    lstm = torch.nn.LSTM(n_in, H, num_layers=layers, bidirectional=bidirectional)
    x, lens = torch.randn(T, B, n_in, requires_grad=True), torch.full((B,), T)

    def forward():
        with torch.no_grad():
            return ours_lstm(lstm, x, lens)

    def forward_backward():
        ours_lstm(lstm, x, lens).sum().backward()

    outputs = {}
    for name, module in modules.items():
        build.native_module = lambda module=module: module  # what seqtrain.ops calls for the kernels
        outputs[name] = forward()
    first = next(iter(modules))
    diff = max(float((out - outputs[first]).abs().max()) for out in outputs.values())
    print(
        f"T={T} B={B} in={n_in} H={H} layers={layers} bidirectional={bidirectional}: "
        f"largest output difference to the first build {diff:.1e}"
    )
    for label, fn in (("fwd", forward), ("fwd+bwd", forward_backward)):
        times = {name: [] for name in modules}
        for rep in range(reps + 1):  # round 0 warms up; who goes first alternates
            for name in list(modules) if rep % 2 else list(modules)[::-1]:
                build.native_module = lambda name=name: modules[name]
                start = time.perf_counter()
                fn()
                if rep:
                    times[name].append(time.perf_counter() - start)
        for name, t in times.items():
            ratio = statistics.median(a / b for a, b in zip(t, times[first]))
            print(f"  {label:<8} {name:<40} {1e3 * statistics.median(t):8.1f} ms  × {ratio:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dirs", nargs="+", help="kernel source directories; the first is the baseline")
    parser.add_argument("--sizes", default="a,b,c,t", help=f"comma-separated, of {', '.join(SIZES)}")
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if len(args.dirs) < 2:
        parser.error("give at least two directories")
    torch.set_num_threads(args.threads)
    memory.keep_freed_memory()
    modules = load_builds(args.dirs)
    for key in args.sizes.split(","):
        if key not in SIZES:
            parser.error(f"unknown size {key!r}; known: {', '.join(SIZES)}")
        compare(modules, SIZES[key], args.reps)


if __name__ == "__main__":
    main()
