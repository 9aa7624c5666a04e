"""Data pipeline benchmark: loader throughput with 0, 1, 2 workers on tts-mini (FLAC → log-mel), and the
share of a BLSTM training step spent waiting for the next batch.

    PYTHONPATH=. python benchmarks/data_pipeline.py [--data ../shared/data] [--steps 30]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from seqtrain.config import AdamConfig, BatchingConfig
from seqtrain.data import BatchLoader
from seqtrain.datasets import build_dataset
from seqtrain.network import Network
from seqtrain.optim import build_optimizer


def dataset(root: Path, cache: str):
    return build_dataset(
        {
            "class": "librispeech",
            "root": str(root / "tts-mini"),
            "subsets": ["train-clean-mini"],
            "norm": "utterance",
            "cache_dir": cache,
            "seq_ordering": "random",
        },
        "dataset.train",
    )


def loader_throughput(ds, workers: int) -> tuple[float, float]:
    loader = BatchLoader(ds, BatchingConfig(batch_size=20000, max_seqs=32, num_workers=workers), train=True)
    list(loader.epoch(1))  # warm-up: worker start, caches
    start = time.perf_counter()
    seqs = frames = 0
    for batch in loader.epoch(2):
        seqs += batch.num_seqs
        frames += int(batch.seq_lens["data"].sum())
    seconds = time.perf_counter() - start
    return seqs / seconds, frames / seconds


def waiting_share(ds, workers: int, steps: int) -> tuple[float, float]:
    """Fraction of wall time the training loop waits for data, and the mean step time."""
    torch.manual_seed(0)
    # a 1-layer BLSTM 2x128; the step's loss is a stand-in (mean square of the outputs), the work is real
    layers = {
        "fw": {"class": "rec", "n_out": 128},
        "bw": {"class": "rec", "n_out": 128, "direction": -1},
        "output": {"class": "linear", "n_out": 32, "from": ["fw", "bw"], "is_output_layer": True},
    }
    net = Network(layers, ds.extern_data)
    opt = build_optimizer(AdamConfig(lr=1e-3), net.parameters())
    loader = BatchLoader(ds, BatchingConfig(batch_size=5000, max_seqs=32, num_workers=workers), train=True)
    waited = computed = 0.0
    done = 0
    for epoch in range(1, 100):
        it = iter(loader.epoch(epoch))
        while done < steps:
            t0 = time.perf_counter()
            batch = next(it, None)
            t1 = time.perf_counter()
            if batch is None:
                break
            data = batch.tensors(ds.extern_data, torch.device("cpu"))
            out = net(data)
            out["output"].raw.pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
            t2 = time.perf_counter()
            if done > 2:  # skip the warm-up steps
                waited += t1 - t0
                computed += t2 - t1
            done += 1
        if done >= steps:
            break
    return waited / max(waited + computed, 1e-9), (waited + computed) / max(done - 3, 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as cache:
        ds = dataset(args.data, cache)
        print(f"tts-mini train: {ds.num_seqs} utterances, log-mel 80, utterance norm")
        print("| workers | seqs/s | frames/s | data wait / step time | step (ms) |")
        print("|---|---|---|---|---|")
        for workers in (0, 1, 2):
            seqs, frames = loader_throughput(ds, workers)
            share, step = waiting_share(ds, workers, args.steps)
            print(f"| {workers} | {seqs:.0f} | {frames:.0f} | {share:.1%} | {step * 1000:.0f} |")


if __name__ == "__main__":
    main()
