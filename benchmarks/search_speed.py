"""CTC prefix beam search speed: seqtrain.search (every extension of every prefix in one [prefixes, labels]
array per frame) against search_reference (the same search label by label, a dict entry per prefix), on
the same synthetic utterances, alternately in one process; both must find the same hypotheses. Characters
(C=30) and a BPE-sized vocabulary (C=1000), no LM (an LM costs both the same).

Usage: PYTHONPATH=. python benchmarks/search_speed.py [--frames 300] [--beam 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from seqtrain.search import ctc_prefix_beam_search
from seqtrain.search_reference import prefix_beam_search


def utterance(frames: int, classes: int, rng: np.random.Generator) -> np.ndarray:
    """Log-probs that alternate a peaked random label and blank (the last class), as a trained CTC model's."""
    logits = rng.normal(0.0, 1.0, (frames, classes))
    logits[0::2][np.arange(len(logits[0::2])), rng.integers(0, classes - 1, len(logits[0::2]))] += 6.0
    logits[1::2, -1] += 6.0
    return logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--beam", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"CTC prefix beam search, beam {args.beam}, {args.frames} frames, median of {args.rounds}")
    print(f"{'classes':>8} | {'ours frames/s':>13} | {'reference frames/s':>18} | {'ratio':>6}")
    for classes in (30, 1000):
        lp = utterance(args.frames, classes, np.random.default_rng(classes))
        times: dict[str, list[float]] = {"ours": [], "reference": []}
        results = {}
        for _ in range(args.rounds):
            for name, search in (("ours", ctc_prefix_beam_search), ("reference", prefix_beam_search)):
                start = time.perf_counter()
                results[name] = search(lp, args.beam, classes - 1, length_bonus=0.5)
                times[name].append(time.perf_counter() - start)
        if [h.labels for h in results["ours"]] != [h.labels for h in results["reference"]]:
            raise SystemExit(f"C={classes}: the two searches found different hypotheses")
        ours, ref = (args.frames / statistics.median(times[k]) for k in ("ours", "reference"))
        print(f"{classes:>8} | {ours:>13.0f} | {ref:>18.0f} | {ours / ref:>5.1f}x")


if __name__ == "__main__":
    main()
