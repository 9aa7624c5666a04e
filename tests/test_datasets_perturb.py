import numpy as np
import pytest

from seqtrain.datasets.perturb import (
    perturbed_num_samples,
    resample,
    speed_factors,
    speed_perturb,
    speed_ratio,
)

SR = 16000


def sine(hz: float, n: int, speed: float = 1.0) -> np.ndarray:
    return np.sin(2 * np.pi * hz * speed * np.arange(n) / SR)


def test_speed_ratio():
    assert speed_ratio(1.1) == (11, 10) and speed_ratio(0.9) == (9, 10) and speed_ratio(1.0) == (1, 1)
    with pytest.raises(ValueError, match="> 0"):
        speed_ratio(0.0)


def test_speed_changes_the_number_of_samples():
    wave = np.zeros(16000, dtype=np.float32)
    # ceil(16000 / 1.1) = ceil(14545.45), ceil(16000 / 0.9) = ceil(17777.8)
    assert len(speed_perturb(wave, 1.1)) == 14546 and len(speed_perturb(wave, 0.9)) == 17778
    assert speed_perturb(wave, 1.0) is wave
    for n in (1, 7, 400, 4768, 12345):
        for f in (0.8, 0.9, 0.95, 1.05, 1.1, 1.2):
            assert (
                len(speed_perturb(np.ones(n), f)) == perturbed_num_samples(n, f) == int(np.ceil(n / f - 1e-9))
            )


@pytest.mark.parametrize("speed", [0.9, 1.1, 1.15])
@pytest.mark.parametrize("hz", [100.0, 440.0, 3000.0])
def test_a_sine_comes_out_at_speed_times_its_frequency(speed, hz):
    out = speed_perturb(sine(hz, SR).astype(np.float32), speed)
    assert out.dtype == np.float32
    inner = slice(100, -100)  # the filter sees the zero padding near the ends
    np.testing.assert_allclose(out[inner], sine(hz, len(out), speed)[inner], atol=3e-3)
    # and the spectrum peaks there (a check independent of the phase)
    spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    assert np.argmax(spectrum) * SR / len(out) == pytest.approx(hz * speed, abs=SR / len(out))


def test_resample_keeps_dc_and_removes_what_would_alias():
    out = resample(np.ones(3000), 11, 10)
    np.testing.assert_allclose(out[50:-50], 1.0, atol=1e-3)
    # 4 kHz resampled 2:1 to 8 kHz would fold onto the new Nyquist: the low-pass filter removes it
    assert np.abs(resample(sine(6000.0, 4000), 2, 1)[50:-50]).max() < 0.01


def test_speed_factors_are_fixed_by_the_seed():
    a = speed_factors([0.9, 1.0, 1.1], 3000, seed=5)
    assert np.array_equal(a, speed_factors([0.9, 1.0, 1.1], 3000, seed=5))
    assert not np.array_equal(a, speed_factors([0.9, 1.0, 1.1], 3000, seed=6))
    values, counts = np.unique(a, return_counts=True)
    assert values.tolist() == [0.9, 1.0, 1.1] and counts.min() > 900  # about uniform
    assert speed_factors([1.0], 4, seed=-3).tolist() == [1.0] * 4
