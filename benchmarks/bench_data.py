"""Data loading: LibriSpeech-layout FLAC → log-mel batches, and the fbank against reference implementations.

1. Throughput of `iterate_batches` over fsdd-mini's train subset (500 utterances) with num_workers 0 and 2:
   sequences/s and feature frames/s, epochs measured alternately (lengths are read once, before timing).
2. `log_mel_fbank` against a naive per-frame numpy loop (rfft per frame, dense filterbank product) and
   against torch.stft + a dense mel matmul, on 15 s of audio, measured alternately.
Usage: python benchmarks/bench_data.py [--reps 3] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from seqtrain.config import BatchingConfig
from seqtrain.data import iterate_batches
from seqtrain.datasets import build_dataset
from seqtrain.datasets.features import FbankSettings, _hann, log_mel_fbank, mel_filterbank

S = FbankSettings()


def naive_fbank(wave: np.ndarray) -> np.ndarray:
    fb, window = mel_filterbank(S), _hann(S.window)
    out = []
    for t in range(1 + (len(wave) - S.window) // S.step):
        spec = np.fft.rfft(wave[t * S.step : t * S.step + S.window] * window, n=S.fft_size)
        out.append(np.log(np.maximum((spec.real**2 + spec.imag**2) @ fb, S.log_floor)))
    return np.asarray(out, dtype=np.float32)


def torch_fbank(wave: np.ndarray) -> np.ndarray:
    # center=False with n_fft > window centres the window in the frame: pad so frames start where ours do.
    x = torch.nn.functional.pad(torch.from_numpy(wave), ((S.fft_size - S.window) // 2, 0))
    spec = torch.stft(
        x, S.fft_size, S.step, S.window, torch.hann_window(S.window), center=False, return_complex=True
    )
    power = spec.abs().square().T.double()
    mel = power @ torch.from_numpy(mel_filterbank(S))
    return torch.log(mel.clamp_min(S.log_floor)).float()[: 1 + (len(wave) - S.window) // S.step].numpy()


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def bench_fbank(reps: int) -> None:
    wave = (np.random.RandomState(0).randn(15 * 16000) * 0.1).astype(np.float32)
    assert np.abs(log_mel_fbank(wave, S) - naive_fbank(wave)).max() < 1e-3
    assert np.abs(log_mel_fbank(wave, S) - torch_fbank(wave)).max() < 1e-3
    times = {"ours": [], "naive loop": [], "torch.stft": []}
    for _ in range(reps):
        times["ours"].append(timed(log_mel_fbank, wave, S))
        times["naive loop"].append(timed(naive_fbank, wave))
        times["torch.stft"].append(timed(torch_fbank, wave))
    ours = statistics.median(times["ours"])
    print("\nfbank of 15 s audio (1498 frames x 80 bins), median of", reps)
    print(f"{'impl':<12} {'ms':>8} {'x realtime':>11} {'ours faster by':>15}")
    for name, ts in times.items():
        t = statistics.median(ts)
        print(f"{name:<12} {t * 1e3:8.2f} {15 / t:11.0f} {t / ours:14.2f}x")


def bench_loading(data: Path, reps: int) -> None:
    with tempfile.TemporaryDirectory() as cache:
        ds = build_dataset(
            {
                "class": "librispeech",
                "root": str(data / "fsdd-mini"),
                "subsets": ["train-clean-mini"],
                "norm": "utterance",
                "cache_dir": cache,
            },
            "bench",
        )
        frames = sum(ds.seq_len(i)["data"] for i in range(ds.num_seqs))  # reads the headers once
        times: dict[int, list[float]] = {0: [], 2: []}
        for rep in range(reps):
            for workers in times:
                cfg = BatchingConfig(batch_size=5000, max_seqs=32, num_workers=workers)
                start = time.perf_counter()
                n = sum(b.num_seqs for b in iterate_batches(ds, cfg, rep + 1, train=True))
                times[workers].append(time.perf_counter() - start)
                assert n == ds.num_seqs
    print(f"\nfsdd-mini train: {ds.num_seqs} utterances, {frames} frames: FLAC → normalized fbank batches")
    print(f"{'num_workers':<12} {'s/epoch':>8} {'seqs/s':>8} {'frames/s':>10}")
    for workers, ts in times.items():
        t = statistics.median(ts)
        print(f"{workers:<12} {t:8.3f} {ds.num_seqs / t:8.0f} {frames / t:10.0f}")
    print(f"speed-up with 2 workers: {statistics.median(times[0]) / statistics.median(times[2]):.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data"
    )
    args = parser.parse_args()
    bench_fbank(args.reps)
    if (args.data / "fsdd-mini").is_dir():
        bench_loading(args.data, args.reps)
    else:
        print(f"\n{args.data / 'fsdd-mini'} not found: loading benchmark skipped")


if __name__ == "__main__":
    main()
