"""CTC prefix beam search with LM shallow fusion: NetworkLM carrying each prefix's LSTM state (one token per
new prefix) against rerunning the LM over every whole prefix (what a network that cannot run in pieces
gets), on the same synthetic utterances, alternately in one process. The LM is a randomly initialised 2x256
character LSTM (timing only); the acoustic log-probs alternate a random label and blank, so hypotheses grow
to ~frames/2 labels. Both must find the same hypotheses.

Usage: PYTHONPATH=. python benchmarks/lm_fusion.py [--frames 100 300] [--beam 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from seqtrain.datasets.base import DataSpec
from seqtrain.network import Network
from seqtrain.network_lm import NetworkLM
from seqtrain.search import ctc_prefix_beam_search

LABELS = [*"ABCDEFGHIJKLMNOPQRSTUVWXYZ' "]  # blank is the last class


def char_lm() -> Network:
    vocab = ["<s>", "</s>", "<unk>", *LABELS]
    spec = DataSpec(len(vocab), sparse=True, vocab=vocab)
    layers = {
        "emb": {"class": "linear", "n_out": 128},
        "lstm1": {"class": "rec", "unit": "lstm", "n_out": 256, "from": "emb"},
        "lstm2": {"class": "rec", "unit": "lstm", "n_out": 256, "from": "lstm1"},
        "output": {"class": "softmax", "from": "lstm2", "n_out": len(vocab)},
    }
    return Network(layers, {"data": spec, "classes": spec})


def utterance(frames: int, rng: np.random.Generator) -> np.ndarray:
    classes = len(LABELS) + 1
    logits = rng.normal(0.0, 1.0, (frames, classes))
    logits[0::2][np.arange(len(logits[0::2])), rng.integers(0, classes - 1, len(logits[0::2]))] += 6.0
    logits[1::2, -1] += 6.0
    return logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)


def decode(lm: NetworkLM, lp: np.ndarray, beam: int) -> tuple[float, tuple]:
    start = time.perf_counter()
    hyps = ctc_prefix_beam_search(
        lp,
        beam,
        len(LABELS),
        lm=lm,
        lm_weight=0.5,
        length_bonus=1.0,
        token_beam=beam,
        lm_end=lm.end_log_probs,
    )
    return time.perf_counter() - start, hyps[0].labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[100, 300])
    parser.add_argument("--beam", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    net = char_lm()
    runner = "seqtrain kernels" if net.layers["lstm1"].use_native() else "torch"
    print(f"LM: 2x256 char LSTM, rec units run by {runner}")
    for frames in args.frames:
        lp = utterance(frames, np.random.default_rng(frames))
        carried, rerun = [], []
        for _ in range(args.rounds):
            for incremental, times in ((True, carried), (False, rerun)):
                lm = NetworkLM(net, LABELS)  # a fresh cache per utterance, as task=search holds one per run
                lm.incremental = incremental
                seconds, best = decode(lm, lp, args.beam)
                times.append(seconds)
                if incremental:
                    reference = best
                elif best != reference:
                    raise SystemExit("the two LM paths found different best hypotheses")
        c, r = min(carried), min(rerun)
        print(
            f"frames {frames:4d} (best hypothesis {len(reference)} labels), beam {args.beam}: "
            f"carried state {c:6.2f} s, whole-prefix reruns {r:6.2f} s, x{r / c:.1f}"
        )


if __name__ == "__main__":
    main()
