"""`python -m seqtrain.ops build`: compile the native kernels now now, not on first use, and print where."""

from __future__ import annotations

import argparse
import sys
import time

from seqtrain.ops import build


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seqtrain.ops", description=__doc__)
    parser.add_argument("command", choices=["build"], help="build: compile (or find cached) native kernels")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the compiler's output")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        module = build.build(verbose=args.verbose)
    except Exception as exc:
        print(f"seqtrain.ops: build failed: {exc}", file=sys.stderr)
        return 1
    kind = "CPU+CUDA" if module.with_cuda else "CPU"
    print(f"seqtrain.ops: {kind} kernels ready in {time.perf_counter() - start:.1f}s")
    print(build.build_directory())
    return 0


if __name__ == "__main__":
    sys.exit(main())
