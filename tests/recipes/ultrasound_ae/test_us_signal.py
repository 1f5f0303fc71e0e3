"""Signal chain of the ultrasound-ae recipe, step by step against direct scipy/numpy computations."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal

from medtrain.recipes.ultrasound_ae import signal as us

FS = 5e7


@pytest.fixture()
def rf() -> np.ndarray:
    """Random int16-range RF data ``[C=2, pulses=7, samples=400]`` as float32."""
    rng = np.random.default_rng(0)
    return (rng.standard_normal((2, 7, 400)) * 3000).astype(np.float32)


def _per_pulse(func, x: np.ndarray) -> np.ndarray:
    """Reference: apply a 1-D function to every pulse in a Python loop."""
    flat = x.reshape(-1, x.shape[-1])
    rows = [np.asarray(func(row)) for row in flat]
    return np.stack(rows).reshape(*x.shape[:-1], -1)


# ----------------------------------------------------------------------------------------------------- band-pass


def test_bandpass_matches_per_pulse_sosfiltfilt(rf: np.ndarray) -> None:
    sos = scipy.signal.butter(5, [8e6, 12e6], btype="bandpass", fs=FS, output="sos")
    expected = _per_pulse(lambda row: scipy.signal.sosfiltfilt(sos, row.astype(np.float64)), rf)
    got = us.bandpass(rf, fs=FS, low_hz=8e6, high_hz=12e6, order=5)
    assert got.dtype == np.float32 and got.shape == rf.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-3)


def test_bandpass_response_stop_and_pass() -> None:
    t = np.arange(4000) / FS
    tones = np.stack([np.sin(2 * np.pi * 2e6 * t), np.sin(2 * np.pi * 10e6 * t)])
    out = us.bandpass(tones, fs=FS, low_hz=8e6, high_hz=12e6)
    middle = slice(1000, 3000)  # away from the edge transients

    def rms(v: np.ndarray) -> float:
        return float(np.sqrt(np.mean(np.square(v[middle], dtype=np.float64))))

    stop_db = 20 * np.log10(rms(out[0]) / rms(tones[0]))
    pass_db = 20 * np.log10(rms(out[1]) / rms(tones[1]))
    assert stop_db < -40
    assert abs(pass_db) < 1


@pytest.mark.parametrize(("low", "high"), [(12e6, 8e6), (0.0, 8e6), (8e6, 8e6), (8e6, 25e6), (-1.0, 5e6)])
def test_bandpass_invalid_band(low: float, high: float) -> None:
    x = np.zeros((2, 100), np.float32)
    with pytest.raises(ValueError, match="low_hz"):
        us.bandpass(x, fs=FS, low_hz=low, high_hz=high)
    with pytest.raises(ValueError, match="low_hz"):
        us.SignalChain(low_hz=low, high_hz=high)


BAND = {"fs": FS, "low_hz": 8e6, "high_hz": 12e6, "order": 5}


def test_settle_samples_bounds_the_kernel() -> None:
    settle = us.settle_samples(**BAND)
    sos = scipy.signal.butter(5, [8e6, 12e6], btype="bandpass", fs=FS, output="sos")
    impulse = np.zeros(2001)
    impulse[1000] = 1.0
    kernel = np.abs(scipy.signal.sosfiltfilt(sos, impulse))  # the zero-phase kernel, centred on sample 1000
    assert kernel[1000 + settle :].max() <= 1e-7 * kernel.max() < kernel[1000 + settle - 1]
    assert 34 <= settle < 1000
    assert us.settle_samples(fs=FS, low_hz=9e6, high_hz=11e6, order=5) > settle  # narrower band rings longer


def test_bandpass_gain_is_butterworth_magnitude_squared() -> None:
    gain = us.bandpass_gain(1000, **BAND)
    assert gain.shape == (501,) and gain.dtype == np.float32
    bins = {0: 0.0, 200: 1.0, 160: 0.5, 240: 0.5}  # bin k is at k·50 kHz: DC, 10 MHz, both -3 dB edges (8, 12 MHz)
    for k, expected in bins.items():
        assert abs(gain[k] - expected) < 1e-3, k


def test_bandpass_fft_equals_sosfiltfilt_away_from_the_ends(rf: np.ndarray) -> None:
    x = np.concatenate([rf, rf[..., ::-1]], axis=-1)  # 800 samples
    settle = us.settle_samples(**BAND)
    sos = scipy.signal.butter(5, [8e6, 12e6], btype="bandpass", fs=FS, output="sos")
    expected = _per_pulse(lambda row: scipy.signal.sosfiltfilt(sos, row.astype(np.float64)), x)
    got = us.bandpass_fft(x, **BAND)
    assert got.dtype == np.float32 and got.shape == x.shape
    inner = slice(settle, x.shape[-1] - settle)
    np.testing.assert_allclose(got[..., inner], expected[..., inner], rtol=0, atol=1e-5 * np.abs(expected).max())
    assert np.abs(got[..., :5] - expected[..., :5]).max() > 1e-3 * np.abs(expected).max()  # the ends differ


@pytest.mark.parametrize("samples", [500, 300, 120, 10])
def test_bandpass_clipped_equals_full_record_filter(samples: int) -> None:
    x = np.random.default_rng(samples).integers(-3000, 3000, size=(2, 3, 700), dtype=np.int16)
    sos = scipy.signal.butter(5, [8e6, 12e6], btype="bandpass", fs=FS, output="sos")
    expected = _per_pulse(lambda row: scipy.signal.sosfiltfilt(sos, row.astype(np.float64)), x)[..., :samples]
    got = us.bandpass_clipped(x, samples=samples, **BAND)
    assert got.dtype == np.float32 and got.shape == (2, 3, samples)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_chain_without_bandpass_ignores_band() -> None:
    us.SignalChain(bandpass=False, low_hz=12e6, high_hz=8e6)


# ---------------------------------------------------------------------------------------------------------- TGC


def test_tgc_hand_example() -> None:
    x = np.ones((2, 3, 5), np.float32)
    x[1] = 2.0
    got = us.time_gain_compensation(x, coefficient=0.4)
    gain = np.array([1.0, 10**0.1, 10**0.2, 10**0.3, 10**0.4])
    np.testing.assert_allclose(got[0, 0], gain, rtol=1e-6)
    np.testing.assert_allclose(got[1, 2], 2 * gain, rtol=1e-6)
    assert got.dtype == np.float32
    np.testing.assert_allclose(us.time_gain_compensation(x, coefficient=0.3)[0, 0, -1], 10**0.3, rtol=1e-6)
    np.testing.assert_array_equal(us.time_gain_compensation(x, coefficient=0.0), x)
    # the first 3 samples of a 5-sample record get that record's gain
    np.testing.assert_allclose(us.time_gain_compensation(x[..., :3], coefficient=0.4, record_samples=5)[0, 0], gain[:3])
    with pytest.raises(ValueError, match="record_samples"):
        us.time_gain_compensation(x, coefficient=0.4, record_samples=4)


# ------------------------------------------------------------------------------------------------- clip, envelope


def test_clip_depth(rf: np.ndarray) -> None:
    clipped = us.clip_depth(rf, samples=130)
    assert clipped.shape == (2, 7, 130) and np.shares_memory(clipped, rf)
    np.testing.assert_array_equal(clipped, rf[:, :, :130])
    assert us.clip_depth(rf, samples=1300).shape == rf.shape
    with pytest.raises(ValueError):
        us.clip_depth(rf, samples=0)


def test_envelope_matches_hilbert_and_recovers_amplitude(rf: np.ndarray) -> None:
    np.testing.assert_allclose(
        us.envelope(rf), _per_pulse(lambda row: np.abs(scipy.signal.hilbert(row)), rf), rtol=1e-4, atol=1e-2
    )
    n = np.arange(2000)
    t = n / FS
    amplitude = 1.0 + 0.5 * np.sin(2 * np.pi * 0.2e6 * t)  # slow modulation (200 kHz) of a 10 MHz carrier
    carrier = amplitude * np.cos(2 * np.pi * 10e6 * t)
    env = us.envelope(carrier[None, :])[0]
    assert env.dtype == np.float32
    np.testing.assert_allclose(env[200:1800], amplitude[200:1800], atol=0.02)


# ----------------------------------------------------------------------------------------------- log compression


def test_log_compress_hand_example() -> None:
    x = np.array([[10.0, 1.0, 0.1, 0.01, 0.0, -1.0]])  # max |x| = 10
    # dB re max: 0, -20, -40, -60, floor, -20 (magnitude) -> with DR 40: 1, 0.5, 0, 0, 0, 0.5
    got = us.log_compress(x, dynamic_range_db=40.0)
    np.testing.assert_allclose(got, [[1.0, 0.5, 0.0, 0.0, 0.0, 0.5]], atol=1e-6)
    assert got.dtype == np.float32
    np.testing.assert_allclose(us.log_compress(x, dynamic_range_db=40.0, reference=1.0)[0, :3], [1.0, 1.0, 0.5])
    per_channel = us.log_compress(np.array([[[1.0, 0.1]], [[100.0, 10.0]]]), dynamic_range_db=40.0, reference=None)
    np.testing.assert_allclose(per_channel.ravel(), [0.0, 0.0, 1.0, 0.5], atol=1e-6)  # one max over the array
    np.testing.assert_array_equal(us.log_compress(np.zeros((2, 3))), np.zeros((2, 3)))


# ---------------------------------------------------------------------------------------------------- decimation


@pytest.mark.parametrize(("factor", "samples"), [(1, 400), (3, 400), (10, 400), (10, 1300), (7, 1001), (10, 5)])
def test_decimate_matches_scipy_per_pulse(rf: np.ndarray, factor: int, samples: int) -> None:
    rf = np.resize(rf, (2, 7, samples))
    got = us.decimate(rf, factor=factor)
    assert got.dtype == np.float32
    assert got.shape == (2, 7, -(-samples // factor))
    if factor == 1:
        np.testing.assert_array_equal(got, rf)
        return
    expected = _per_pulse(
        lambda row: scipy.signal.decimate(row.astype(np.float64), factor, ftype="fir", zero_phase=True), rf
    )
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6 * np.abs(expected).max())


def test_decimation_filter_is_scipy_decimate_filter() -> None:
    taps = us.decimation_filter(10)
    np.testing.assert_allclose(taps, scipy.signal.firwin(201, 0.1, window="hamming"))
    assert abs(taps.sum() - 1) < 1e-12 and not taps.flags.writeable


# ------------------------------------------------------------------------------------------------- normalisation


def test_channel_stats_streaming_equals_numpy() -> None:
    rng = np.random.default_rng(1)
    arrays = [
        (rng.standard_normal((3, p, 50)) * [[[1.0]], [[5.0]], [[0.1]]] + 1e4).astype(np.float32) for p in (4, 9, 1)
    ]
    arrays.append(np.zeros((3, 0, 50), np.float32))  # empty: skipped
    stats = us.channel_stats(iter(arrays))
    joined = np.concatenate(arrays, axis=1).astype(np.float64).reshape(3, -1)
    np.testing.assert_allclose(stats.min, joined.min(axis=1))
    np.testing.assert_allclose(stats.max, joined.max(axis=1))
    np.testing.assert_allclose(stats.mean, joined.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(stats.std, joined.std(axis=1), rtol=1e-9)
    assert us.ChannelStats.from_dict(stats.to_dict()) == stats
    with pytest.raises(ValueError):
        us.channel_stats([])
    with pytest.raises(ValueError):
        us.channel_stats([np.zeros((3, 2, 5)), np.zeros((2, 2, 5))])


def test_normalize_modes_by_hand() -> None:
    stats = us.ChannelStats(min=(0.0, 10.0), max=(4.0, 10.0), mean=(1.0, 10.0), std=(2.0, 0.0))
    x = np.array([[[0.0, 2.0, 4.0]], [[10.0, 11.0, 9.0]]], np.float32)  # [C=2, 1, 3]
    np.testing.assert_allclose(us.normalize(x, stats, mode="minmax"), [[[0.0, 0.5, 1.0]], [[0.0, 1.0, -1.0]]])
    np.testing.assert_allclose(us.normalize(x, stats, mode="zscore"), [[[-0.5, 0.5, 1.5]], [[0.0, 1.0, -1.0]]])
    combined = us.normalize(x, stats, mode="minmax+zscore")
    # channel 0 by hand: minmax -> [0, .5, 1]; mean' = .25, std' = .5 -> [-.5, .5, 1.5]
    np.testing.assert_allclose(combined, [[[-0.5, 0.5, 1.5]], [[0.0, 1.0, -1.0]]], atol=1e-6)
    np.testing.assert_array_equal(us.normalize(x, stats, mode="none"), x)
    assert us.normalize(x, stats, mode="zscore").dtype == np.float32
    with pytest.raises(ValueError):
        us.normalize(x[:1], stats, mode="zscore")


# ------------------------------------------------------------------------------------------------------- chain


@pytest.mark.parametrize("samples", [1996, 1300, 130, 97])
@pytest.mark.parametrize("log", [False, True])
def test_chain_shape_and_manual_steps(samples: int, log: bool) -> None:
    rng = np.random.default_rng(samples)
    x = rng.integers(-3000, 3000, size=(3, 5, samples), dtype=np.int16)
    chain = us.SignalChain(log_compression=log)
    got = chain.apply(x)
    assert got.dtype == np.float32
    assert got.shape == (3, 5, chain.output_depth(samples))
    assert chain.output_depth(samples) == -(-min(samples, 1300) // 10)

    y = us.bandpass(x.astype(np.float32), fs=FS, low_hz=8e6, high_hz=12e6, order=5)
    y = us.time_gain_compensation(y, coefficient=0.3)
    y = us.clip_depth(y, samples=1300)
    y = us.envelope(y)
    if log:
        y = np.stack([us.log_compress(channel, dynamic_range_db=60.0) for channel in y])
    y = us.decimate(y, factor=10)
    # apply() filters only the samples that reach the output (bandpass_clipped): same numbers to float32 rounding
    np.testing.assert_allclose(got, y, rtol=0, atol=1e-5 * np.abs(y).max())
    np.testing.assert_allclose(chain.apply(x[1]), us.SignalChain(log_compression=log).apply(x[1:2])[0], rtol=1e-6)


def test_chain_switches_and_output_depth() -> None:
    x = np.random.default_rng(3).standard_normal((4, 250)).astype(np.float32)
    bare = us.SignalChain(bandpass=False, tgc_coefficient=0.0, envelope=False, decimation=1, depth_samples=200)
    np.testing.assert_array_equal(bare.apply(x), x[:, :200])
    for depth, factor in [(1300, 7), (1, 10), (250, 3)]:
        chain = us.SignalChain(depth_samples=depth, decimation=factor)
        assert chain.apply(x).shape == (4, chain.output_depth(250))
    with pytest.raises(ValueError):
        us.SignalChain().apply(x[0])
    assert us.SignalChain(**us.SignalChain().to_dict()) == us.SignalChain()


@pytest.mark.parametrize(
    "chain",
    [us.SignalChain(), us.SignalChain(log_compression=True), us.SignalChain(log_compression=True, log_reference=5e3)],
)
def test_apply_chunked_equals_apply(chain: us.SignalChain) -> None:
    x = np.random.default_rng(4).integers(-3000, 3000, size=(3, 23, 600), dtype=np.int16)
    whole = chain.apply(x)
    np.testing.assert_allclose(us.apply_chunked(x, chain, chunk_pulses=5), whole, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(us.apply_chunked(x, chain, chunk_pulses=100), whole, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(us.apply_chunked(x[0], chain, chunk_pulses=4), chain.apply(x[0]), rtol=1e-6, atol=1e-7)
