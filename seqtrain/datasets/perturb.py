"""Waveform augmentation in the data loader: speed perturbation by resampling (Kaldi, ESPnet, Lhotse).

Speed factor f plays the audio f times faster: the waveform, read as sampled at `f * sample_rate`, is
resampled to `sample_rate`, so it gets about `N / f` samples and its pitch and formants move up by f
(Ko et al. 2015, "Audio augmentation for speech recognition"; sox `speed f` followed by `rate`).
The resampler is a windowed-sinc polyphase filter in numpy, as torchaudio's `functional.resample`
(Hann-squared window over `lowpass_filter_width` zero crossings, cutoff `rolloff` times the lower Nyquist).
"""

from __future__ import annotations

import functools
from fractions import Fraction

import numpy as np


def speed_ratio(factor: float) -> tuple[int, int]:
    """(orig, new): the factor as a ratio of small integers; `new / orig` samples come out per sample in."""
    if not factor > 0:
        raise ValueError(f"speed factor must be > 0, got {factor}")
    ratio = Fraction(factor).limit_denominator(1000)
    return ratio.numerator, ratio.denominator


def perturbed_num_samples(num_samples: int, factor: float) -> int:
    """Samples of a `num_samples` waveform after `speed_perturb(wave, factor)`: ceil(N / factor)."""
    orig, new = speed_ratio(factor)
    return -(-num_samples * new // orig)


@functools.lru_cache(maxsize=32)
def _sinc_kernel(
    orig: int, new: int, lowpass_filter_width: int, rolloff: float
) -> tuple[np.ndarray, int, int]:
    """[new, taps] weights by r, the input offset of the first tap, and the number of taps.

    Output sample i sits at input time t = i * orig / new, whose fraction t - floor(t) is r / new with
    r = i * orig % new; tap k reads input sample floor(t) + k.
    """
    cutoff = rolloff * min(1.0, new / orig)  # in cycles per input sample, relative to the input Nyquist
    half = int(np.ceil(lowpass_filter_width / cutoff))  # input samples on each side of the output time
    taps = np.arange(-half + 1, half + 1)
    frac = np.arange(new) / new
    dist = (frac[:, None] - taps[None, :]) * cutoff  # distance to each tap, in zero crossings
    window = np.cos(
        np.clip(dist, -lowpass_filter_width, lowpass_filter_width) * np.pi / lowpass_filter_width / 2
    )
    weights = cutoff * np.sinc(dist) * window**2
    return weights, int(taps[0]), len(taps)


def resample(
    wave: np.ndarray, orig: int, new: int, lowpass_filter_width: int = 6, rolloff: float = 0.99
) -> np.ndarray:
    """Resample a mono waveform by the ratio `new / orig` (band-limited); ceil(N * new / orig) samples."""
    if orig == new:
        return wave
    n_out = -(-len(wave) * new // orig)
    weights, first, num_taps = _sinc_kernel(orig, new, lowpass_filter_width, rolloff)
    pos = np.arange(n_out, dtype=np.int64) * orig  # output sample i is at input time pos / new
    base, frac = pos // new + first, pos % new
    pad = num_taps  # zeros around the signal, so every tap reads a valid index
    padded = np.pad(np.asarray(wave, dtype=np.float64), pad)
    out = np.zeros(n_out)
    for k in range(num_taps):  # a loop over the few taps keeps memory at one output-sized array
        out += padded[base + pad + k] * weights[frac, k]
    return out.astype(wave.dtype, copy=False)


def speed_perturb(wave: np.ndarray, factor: float) -> np.ndarray:
    """The waveform played `factor` times faster (fewer samples for factor > 1); factor 1 returns it as is."""
    orig, new = speed_ratio(factor)
    return resample(wave, orig, new)


def speed_factors(choices: list[float], num_seqs: int, seed: int) -> np.ndarray:
    """One factor per sequence, uniformly from `choices`, fixed by `seed` (the dataset's epoch seed)."""
    # A stream of its own (the second seed word), independent of the sequence ordering's RandomState(seed).
    rng = np.random.default_rng([seed % 2**32, 0x5BEED])
    return np.asarray(choices, dtype=np.float64)[rng.integers(len(choices), size=num_seqs)]
