import h5py
import numpy as np
import pytest
import soundfile as sf

from seqtrain.datasets.features import (
    FbankSettings,
    NormStats,
    apply_filterbank,
    hz_to_mel,
    log_mel_fbank,
    mel_filterbank,
    mel_to_hz,
    normalize_utterance,
    num_frames,
)
from seqtrain.errors import DataError
from tests.conftest import SHARED_DATA

S = FbankSettings()


def naive_fbank(wave, sr=16000, bins=80, win=400, hop=160, n_fft=512):
    """Per-frame loop, DFT by its definition, mel triangles from the HTK formula, all in float64."""
    mel = lambda f: 2595 * np.log10(1 + f / 700)
    inv = lambda m: 700 * (10 ** (m / 2595) - 1)
    edges = [inv(mel(sr / 2) * i / (bins + 1)) for i in range(bins + 2)]
    weights = np.zeros((n_fft // 2 + 1, bins))
    for k in range(n_fft // 2 + 1):
        f = k * sr / n_fft
        for b in range(bins):
            lo, mid, hi = edges[b], edges[b + 1], edges[b + 2]
            if lo < f <= mid:
                weights[k, b] = (f - lo) / (mid - lo)
            elif mid < f < hi:
                weights[k, b] = (hi - f) / (hi - mid)
    window = np.array([0.5 - 0.5 * np.cos(2 * np.pi * n / win) for n in range(win)])
    dft = np.exp(-2j * np.pi * np.outer(np.arange(n_fft // 2 + 1), np.arange(win)) / n_fft)
    out = []
    for t in range(1 + (len(wave) - win) // hop):
        spec = dft @ (wave[t * hop : t * hop + win] * window)
        out.append(np.log(np.maximum(np.abs(spec) ** 2 @ weights, 1e-10)))
    return np.array(out)


def test_mel_scale_by_hand():
    assert hz_to_mel(700) == pytest.approx(2595 * np.log10(2))
    assert mel_to_hz(hz_to_mel(1234.5)) == pytest.approx(1234.5)


def test_triangles_sum_to_one_between_first_and_last_centre():
    fb = mel_filterbank(S)
    assert fb.shape == (257, 80) and fb.max() <= 1
    freqs = np.arange(257) * 16000 / 512
    centres = mel_to_hz(np.linspace(0, hz_to_mel(8000), 82))[1:-1]
    inside = (freqs >= centres[0]) & (freqs <= centres[-1])
    assert np.allclose(fb[inside].sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    "settings",
    [
        S,
        FbankSettings(num_mel_bins=128),
        FbankSettings(num_mel_bins=40, n_fft=1024, fmin=100, fmax=7000),
        FbankSettings(sample_rate=8000, num_mel_bins=23, window_ms=20),
    ],
)
def test_banded_filterbank_equals_the_matmul(settings):
    power = np.random.RandomState(3).rand(30, settings.fft_size // 2 + 1) ** 4
    dense = power @ mel_filterbank(settings)
    assert np.allclose(apply_filterbank(power, settings), dense, rtol=1e-12, atol=1e-15)


def test_fbank_equals_naive_reference():
    wave = np.random.RandomState(0).randn(3000).astype(np.float32) * 0.1
    ours = log_mel_fbank(wave, S)
    ref = naive_fbank(wave.astype(np.float64))
    assert ours.shape == ref.shape == (num_frames(3000, S), 80) and ours.dtype == np.float32
    assert np.abs(ours - ref).max() < 1e-3


@pytest.mark.parametrize("n", [0, 1, 399, 400, 401, 559, 560, 16000])
def test_num_frames(n):
    assert log_mel_fbank(np.zeros(n, np.float32), S).shape == (num_frames(n, S), 80)
    assert num_frames(n, S) == (1 if n < 400 else 1 + (n - 400) // 160)


def test_matches_the_shared_hdf_features():
    """The shared HDF files were made with torch.stft(n_fft=512, win_length=400, center=False), which centres
    the 400-sample window in the 512-point frame: its frames start 56 samples later than ours."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    with h5py.File(SHARED_DATA / "hdf" / "fsdd_train.hdf") as f:
        lens, inputs = f["seqLengths"][:5, 0], f["inputs"][: f["seqLengths"][:5, 0].sum()]
    starts = np.concatenate([[0], np.cumsum(lens)])
    for i in range(5):
        path = SHARED_DATA / "fsdd-mini" / "train-clean-mini" / "9001" / "1" / f"9001-1-{i:04d}.flac"
        wave, _ = sf.read(path, dtype="float32")
        ours = log_mel_fbank(wave[56:], S)[: lens[i]]
        ref = inputs[starts[i] : starts[i + 1]]
        assert ours.shape == ref.shape
        assert np.abs(ours - ref).max() < 0.02 and np.abs(ours - ref).mean() < 1e-3


def test_utterance_normalization():
    feats = np.random.RandomState(1).randn(50, 4).astype(np.float32) * 3 + 7
    out = normalize_utterance(feats)
    assert np.allclose(out.mean(axis=0), 0, atol=1e-5) and np.allclose(out.std(axis=0), 1, atol=1e-3)


def test_global_stats(tmp_path):
    rng = np.random.RandomState(2)
    parts = [rng.randn(n, 3).astype(np.float32) * [1, 2, 3] + [0, 5, -5] for n in (10, 1, 30)]
    stats = NormStats.compute(iter(parts))
    joined = np.concatenate(parts).astype(np.float64)
    assert stats.num_frames == 41
    assert np.allclose(stats.mean, joined.mean(0), atol=1e-5) and np.allclose(
        stats.std, joined.std(0), atol=1e-4
    )
    stats.save(tmp_path / "s.npz")
    loaded = NormStats.load(tmp_path / "s.npz", 3)
    assert np.array_equal(loaded.mean, stats.mean) and np.allclose(loaded.apply(joined).mean(0), 0, atol=1e-5)
    with pytest.raises(DataError, match="s.npz: dim"):
        NormStats.load(tmp_path / "s.npz", 80)
    with pytest.raises(DataError, match="no frames"):
        NormStats.compute(iter([]))
