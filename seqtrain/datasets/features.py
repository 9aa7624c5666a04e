"""Audio features computed in the data loader: log-mel filterbank (vectorised numpy) and normalization.

The filterbank is the common textbook one, and the one our shared HDF files were made with: frames of
`window_ms` every `step_ms` (Kaldi's snip_edges framing: frame t starts at sample t*step), periodic Hann
window, power spectrum of an `n_fft`-point FFT, HTK-mel triangles (mel = 2595 log10(1 + f/700)) from
`fmin` to `fmax`, no area normalization, `log(max(mel, log_floor))`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from seqtrain.errors import DataError


@dataclass(frozen=True)
class FbankSettings:
    sample_rate: int = 16000
    num_mel_bins: int = 80
    window_ms: float = 25.0
    step_ms: float = 10.0
    n_fft: int | None = None  # default: the next power of two >= the window
    fmin: float = 0.0
    fmax: float | None = None  # default: sample_rate / 2
    log_floor: float = 1e-10

    @property
    def window(self) -> int:
        return int(round(self.sample_rate * self.window_ms / 1000))

    @property
    def step(self) -> int:
        return int(round(self.sample_rate * self.step_ms / 1000))

    @property
    def fft_size(self) -> int:
        return self.n_fft or 1 << (self.window - 1).bit_length()

    def key(self) -> str:
        """A short string naming these settings (for cache file names)."""
        return "_".join(f"{v}" for v in asdict(self).values())


def num_frames(num_samples: int, settings: FbankSettings) -> int:
    """Frames of a signal; shorter than one window it is zero-padded to one frame."""
    return 1 + max(num_samples - settings.window, 0) // settings.step


def hz_to_mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


@functools.lru_cache(maxsize=16)
def mel_filterbank(settings: FbankSettings) -> np.ndarray:
    """[n_fft // 2 + 1, num_mel_bins]: triangles on the HTK mel scale, peak 1, over the FFT bin centres."""
    fmax = settings.fmax if settings.fmax is not None else settings.sample_rate / 2
    edges = mel_to_hz(np.linspace(hz_to_mel(settings.fmin), hz_to_mel(fmax), settings.num_mel_bins + 2))
    freqs = np.linspace(0, settings.sample_rate / 2, settings.fft_size // 2 + 1)[:, None]
    lo, mid, hi = edges[:-2], edges[1:-1], edges[2:]
    rising = (freqs - lo) / (mid - lo)
    falling = (hi - freqs) / (hi - mid)
    return np.maximum(0.0, np.minimum(rising, falling))


@functools.lru_cache(maxsize=16)
def _hann(size: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(size) / size)  # periodic, float64


def frames(wave: np.ndarray, settings: FbankSettings) -> np.ndarray:
    """[T, window] strided view of the (zero-padded if short) signal."""
    win, step = settings.window, settings.step
    if len(wave) < win:
        wave = np.pad(wave, (0, win - len(wave)))
    return np.lib.stride_tricks.sliding_window_view(wave, win)[::step]


def log_mel_fbank(wave: np.ndarray, settings: FbankSettings) -> np.ndarray:
    """[T, num_mel_bins] float32 log-mel filterbank of a mono float waveform."""
    if wave.ndim != 1:
        raise ValueError(f"expected a mono waveform [N], got shape {wave.shape}")
    # float64: numpy's float64 FFT is faster than its float32 one.
    windowed = frames(np.asarray(wave, dtype=np.float32), settings) * _hann(settings.window)
    spec = np.fft.rfft(windowed, n=settings.fft_size, axis=-1)
    mel = apply_filterbank(spec.real**2 + spec.imag**2, settings)
    return np.log(np.maximum(mel, settings.log_floor)).astype(np.float32)


@dataclass(frozen=True)
class _Bands:
    """The filterbank as two weights per FFT bin: bin k adds w1[k] to band first[k], w2[k] to the next."""

    w1: np.ndarray
    w2: np.ndarray
    starts1: np.ndarray  # bins of band f (by first[]) are starts1[f]:starts1[f+1]
    starts2: np.ndarray
    empty1: np.ndarray  # bands with no such bins (reduceat would return a bin's value there)
    empty2: np.ndarray


@functools.lru_cache(maxsize=16)
def _bands(settings: FbankSettings) -> _Bands:
    fb = mel_filterbank(settings)
    if ((fb > 0).sum(axis=1) > 2).any():
        raise ValueError("mel filters overlap more than pairwise")
    nonzero = fb > 0
    first = np.where(nonzero.any(axis=1), nonzero.argmax(axis=1), -1)
    first = np.maximum.accumulate(np.where(first < 0, 0, first))  # bins outside all bands: weight 0
    k = np.arange(len(fb))
    w1 = fb[k, first]
    w2 = np.where(first + 1 < fb.shape[1], fb[k, np.minimum(first + 1, fb.shape[1] - 1)], 0.0)
    bands = np.arange(fb.shape[1])
    s1, e1 = np.searchsorted(first, bands, "left"), np.searchsorted(first, bands, "right")
    s2, e2 = np.searchsorted(first + 1, bands, "left"), np.searchsorted(first + 1, bands, "right")
    return _Bands(w1, w2, s1, s2, s1 == e1, s2 == e2)


def apply_filterbank(power: np.ndarray, settings: FbankSettings) -> np.ndarray:
    """`power @ mel_filterbank(settings)`, using that each bin feeds at most two neighbouring bands.

    No BLAS: in DataLoader workers a multi-threaded BLAS oversubscribes the cores (we measured tiny
    matmuls 300x slower on a busy 2-core machine), and this is faster than a single-threaded matmul too.
    """
    b = _bands(settings)
    pad = np.zeros((len(power), 1))  # reduceat indices may point one past the last bin
    part1 = np.add.reduceat(np.concatenate([power * b.w1, pad], axis=1), b.starts1, axis=1)
    part2 = np.add.reduceat(np.concatenate([power * b.w2, pad], axis=1), b.starts2, axis=1)
    part1[:, b.empty1] = 0.0
    part2[:, b.empty2] = 0.0
    return part1 + part2


def normalize_utterance(feats: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Zero mean and unit variance per feature over this utterance's frames."""
    mean = feats.mean(axis=0, keepdims=True)
    std = np.sqrt(feats.var(axis=0, keepdims=True) + eps)
    return ((feats - mean) / std).astype(np.float32)


@dataclass
class NormStats:
    """Per-feature mean and standard deviation over a corpus (global normalization)."""

    mean: np.ndarray
    std: np.ndarray
    num_frames: int

    @classmethod
    def compute(cls, feats: Iterable[np.ndarray], eps: float = 1e-5) -> NormStats:
        total = total_sq = None
        n = 0
        for x in feats:
            x = x.astype(np.float64)
            s, sq = x.sum(axis=0), (x * x).sum(axis=0)
            total, total_sq = (s, sq) if total is None else (total + s, total_sq + sq)
            n += len(x)
        if not n:
            raise DataError("normalization statistics: no frames to compute them from")
        mean = total / n
        var = np.maximum(total_sq / n - mean * mean, 0.0)
        return cls(mean.astype(np.float32), np.sqrt(var + eps).astype(np.float32), n)

    def apply(self, feats: np.ndarray) -> np.ndarray:
        return ((feats - self.mean) / self.std).astype(np.float32)

    def save(self, path: str | Path) -> None:
        import io

        from seqtrain.datasets.vocab import write_atomic

        buf = io.BytesIO()
        np.savez(buf, mean=self.mean, std=self.std, num_frames=np.int64(self.num_frames))
        write_atomic(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | Path, dim: int) -> NormStats:
        try:
            with np.load(path) as f:
                stats = cls(f["mean"].astype(np.float32), f["std"].astype(np.float32), int(f["num_frames"]))
        except (OSError, KeyError, ValueError) as exc:
            raise DataError(f"normalization statistics {path}: cannot read: {exc}") from None
        if stats.mean.shape != (dim,):
            raise DataError(
                f"normalization statistics {path}: dim {stats.mean.shape} but the features have {dim}"
            )
        return stats


def save_stats_by_key(path: str | Path, stats: dict[str, NormStats]) -> None:
    """Several NormStats in one .npz (per-speaker normalization): keys, and stacked means/stds/frames."""
    import io

    from seqtrain.datasets.vocab import write_atomic

    keys = sorted(stats)
    buf = io.BytesIO()
    np.savez(
        buf,
        keys=np.asarray(keys, dtype=str),
        mean=np.stack([stats[k].mean for k in keys]),
        std=np.stack([stats[k].std for k in keys]),
        num_frames=np.asarray([stats[k].num_frames for k in keys], dtype=np.int64),
    )
    write_atomic(path, buf.getvalue())


def load_stats_by_key(path: str | Path, dim: int) -> dict[str, NormStats]:
    try:
        with np.load(path) as f:
            keys, mean, std, frames = f["keys"], f["mean"], f["std"], f["num_frames"]
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"normalization statistics {path}: cannot read: {exc}") from None
    if mean.shape != (len(keys), dim):
        raise DataError(f"normalization statistics {path}: shape {mean.shape}, expected ({len(keys)}, {dim})")
    return {
        str(k): NormStats(m.astype(np.float32), s.astype(np.float32), int(n))
        for k, m, s, n in zip(keys, mean, std, frames)
    }
