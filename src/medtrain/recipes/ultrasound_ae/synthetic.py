"""Synthetic M-mode recordings in the raw ultrasound-ae layout, for the demo and the tests.

Each experiment simulates a single-element probe firing ``pulse_rate_hz`` times a second into layered soft tissue
(think forearm muscle) while the subject moves a joystick; every pulse records ``samples`` RF samples at ``fs``.

Physics, per experiment (all vectorised over ``[pulses, samples]``; the only Python loops run over channels and
reflectors):

* **Depth.** Sample n lies at depth ``n · c / (2 fs)`` with c = 1540 m/s (15.4 µm per sample at 50 MHz).
* **Pulse.** A 10 MHz Gaussian-modulated sinusoid with 50 % fractional bandwidth (``scipy.signal.gausspulse``),
  cut at -60 dB; the received RF is the reflectivity convolved with it along depth (``fftconvolve``).
* **Tissue.** 5–12 static specular layers (fascia) with reflection coefficients ±0.1–0.4, and speckle: a
  sub-resolution scatterer at every sample with Gaussian amplitude (so the RF envelope is Rayleigh distributed)
  whose standard deviation, 0.005–0.02, changes from one layer to the next. The speckle decorrelates slightly
  (5 %) from pulse to pulse.
* **Motion.** One strong interface (a muscle band: a top and a bottom reflector of opposite sign) moves with the
  joystick: its depth is ``base + a·x + b·y`` (base 36–40 %, a 8–10 %, b 3–4 % of the record; the transducer
  is mounted the same way in every session, so the signs are fixed and the four quadrants sit at the same four
  depths everywhere, which is what lets a probe trained on some sessions read the joystick in others), its
  brightness ``3 (1 + 0.4 x)`` grows with x and its thickness
  ``0.45 mm (1 + 0.6 y)`` with y, so the joystick position, and with it the class (rest or one of four quadrants),
  can be read from a few pulses. The surrounding tissue is dragged along by a displacement that decays as a
  Gaussian (σ = 25 % of the record) of the distance to the interface: speckle and layers move with it, the less
  the farther they are. Static layers are kept out of the interface band.
* **Attenuation.** 0.5 dB/cm/MHz for the round trip, evaluated at the 10 MHz centre frequency (no time-gain
  compensation, as in raw data).
* **Channels.** Every channel sees the same scene with its own depth offset (±8 samples) and gain (0.9–1.1), fixed
  by the probe: the same in every session.
* **Subject and sessions.** One dataset is one subject: the interface (base, slopes), the layers and the
  echogenicity are drawn once per ``seed``. Each session re-places the probe: the scene sits up to
  ``PLACEMENT_SHIFT`` (1.5 %) of the record deeper or shallower, coupling scales the interface by 0.85–1.15, each
  layer's contrast by 0.8–1.2, and new scatterers come into view (a new speckle realisation). Experiments of a
  session share the placement and differ in the joystick trace, decorrelation and noise.
* **Electronics.** White noise at 1 % of the peak RF; the result is scaled so that the peak uses 60 % of the
  int16 range, then rounded.
* **Joystick.** ``[pulses, 2]`` float32 (x, y) in [-1, 1]: dwell periods of about 1.5 s alternate between rest
  (target (0, 0)) and the quadrants (|x|, |y| between 0.45 and 0.9), visiting all four quadrants in every run of
  eight dwells, smoothed by a 0.15 s Gaussian, with a low-pass tremor (standard deviation 0.03) on top. With the
  defaults (600 pulses at 50 Hz) every experiment has all five states.

The subject is seeded by ``seed``, a session's placement by ``(seed, session)`` and every experiment by
``(seed, session, experiment)``, so the data are reproducible and do not depend on how many sessions are generated.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import fftconvolve, gausspulse

from medtrain.io.atomic import atomic_write_bytes, atomic_write_json

SPEED_OF_SOUND_M_S = 1540.0
PULSE_CENTER_HZ = 10e6
PULSE_BANDWIDTH = 0.5
ATTENUATION_DB_PER_CM_MHZ = 0.5
INT16_PEAK_FRACTION = 0.6
NOISE_FRACTION = 0.01
DWELL_S = 1.5
_QUADRANTS = np.array([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]])
PLACEMENT_SHIFT = 0.015  # the probe sits up to this fraction of the record deeper or shallower from session to session
_ANATOMY_STREAM, _PLACEMENT_STREAM = 1_000_001, 1_000_002  # seed-sequence words apart from any experiment index


def generate_raw_dataset(
    root: Path,
    *,
    sessions: int = 3,
    experiments_per_session: int = 2,
    pulses: int = 600,
    samples: int = 1996,
    channels: int = 3,
    fs: float = 5e7,
    pulse_rate_hz: float = 50.0,
    seed: int = 0,
) -> list[Path]:
    """Write ``root/session_SS/experiment_EE/`` folders (channels, ``joystick.npy``, ``meta.json``); return them.

    Files are written atomically; files of the same names are replaced and other files under ``root`` are left
    alone, so generate into an empty folder for a clean dataset. Raises ``ValueError`` for counts below 1, fewer
    than 64 samples, a non-positive ``pulse_rate_hz``, or ``fs`` below 25 MHz (2.5 samples per pulse period).
    """
    if min(sessions, experiments_per_session, pulses, channels) < 1 or samples < 64:
        raise ValueError("sessions, experiments_per_session, pulses and channels must be >= 1 and samples >= 64")
    if fs < 2.5 * PULSE_CENTER_HZ or pulse_rate_hz <= 0:
        raise ValueError(f"fs must be at least {2.5 * PULSE_CENTER_HZ:g} Hz and pulse_rate_hz positive")
    folders = []
    anatomy = _anatomy(np.random.default_rng([seed, _ANATOMY_STREAM]), samples, channels, fs)
    for session in range(sessions):
        placement = _placement(np.random.default_rng([seed, session, _PLACEMENT_STREAM]), anatomy, samples)
        for experiment in range(experiments_per_session):
            rng = np.random.default_rng([seed, session, experiment])
            joystick = _joystick_trace(rng, pulses, pulse_rate_hz)
            rf = _render(rng, joystick, anatomy, placement, fs)
            folder = Path(root) / f"session_{session:02d}" / f"experiment_{experiment:02d}"
            for channel in range(channels):
                _save_npy(folder / f"channel_{channel}.npy", rf[channel])
            _save_npy(folder / "joystick.npy", joystick)
            atomic_write_json(folder / "meta.json", {"sampling_rate_hz": fs, "pulse_rate_hz": pulse_rate_hz})
            folders.append(folder)
    return folders


def _save_npy(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as ``.npy`` atomically (no pickle)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())


def _joystick_trace(rng: np.random.Generator, pulses: int, pulse_rate_hz: float) -> np.ndarray:
    """Smooth float32 ``[pulses, 2]`` trace in [-1, 1] dwelling alternately at rest and in the quadrants."""
    dwells = max(1, round(pulses / (DWELL_S * pulse_rate_hz)))
    quadrants = np.concatenate([rng.permutation(_QUADRANTS) for _ in range(dwells // 8 + 1)])
    targets = np.zeros((dwells, 2))
    targets[1::2] = quadrants[: dwells // 2] * rng.uniform(0.45, 0.9, (dwells // 2, 2))
    ends = np.cumsum(rng.uniform(0.6, 1.4, dwells))
    dwell_of_pulse = np.searchsorted(ends / ends[-1] * pulses, np.arange(pulses), side="right")
    trace = gaussian_filter1d(targets[dwell_of_pulse], sigma=0.15 * pulse_rate_hz, axis=0, mode="nearest")
    tremor_sigma = 0.05 * pulse_rate_hz
    tremor = gaussian_filter1d(rng.standard_normal((pulses, 2)), sigma=tremor_sigma, axis=0, mode="nearest")
    trace += 0.03 * tremor * math.sqrt(2 * math.sqrt(math.pi) * tremor_sigma)  # unit-variance tremor × 0.03
    return np.clip(trace, -1.0, 1.0).astype(np.float32)


def _anatomy(rng: np.random.Generator, samples: int, channels: int, fs: float) -> dict[str, np.ndarray | float]:
    """The subject's tissue (in samples, at the reference probe placement): the moving interface, static layers and
    the echogenicity of the speckle between them; and the probe's channels (depth offset and gain of each)."""
    metres_per_sample = SPEED_OF_SOUND_M_S / (2 * fs)
    base = rng.uniform(0.36, 0.40) * samples
    slopes = np.array([rng.uniform(0.08, 0.1), rng.uniform(0.03, 0.04)]) * samples
    keep_out = (base - 0.03 * samples, base + 0.75e-3 / metres_per_sample + 0.03 * samples)
    layers, amplitudes = _layers(rng, samples, keep_out)
    levels = rng.uniform(0.005, 0.02, layers.size + 1)
    offsets, gains = rng.uniform(-8.0, 8.0, channels), rng.uniform(0.9, 1.1, channels)
    return {"samples": samples, "base": base, "slopes": slopes, "layers": layers, "amplitudes": amplitudes,
            "levels": levels, "offsets": offsets, "gains": gains}  # fmt: skip


def _placement(
    rng: np.random.Generator, anatomy: dict[str, np.ndarray | float], samples: int
) -> dict[str, np.ndarray | float]:
    """One session's probe placement: scene shift, coupling, layer contrast and speckle (new scatterers in view)."""
    count = len(anatomy["layers"])
    return {
        "shift": rng.uniform(-PLACEMENT_SHIFT, PLACEMENT_SHIFT) * samples,
        "coupling": rng.uniform(0.85, 1.15),
        "contrast": rng.uniform(0.8, 1.2, count),
        "speckle": rng.standard_normal(samples, dtype=np.float32),
    }


def _render(
    rng: np.random.Generator,
    joystick: np.ndarray,
    anatomy: dict[str, np.ndarray | float],
    placement: dict[str, np.ndarray | float],
    fs: float,
) -> np.ndarray:
    """Simulate the RF of every channel for the joystick trace: int16 ``[channels, pulses, samples]``."""
    pulses = joystick.shape[0]
    samples = int(anatomy["samples"])
    offsets, gains = np.asarray(anatomy["offsets"]), np.asarray(anatomy["gains"])
    channels = offsets.size
    x, y = joystick[:, 0], joystick[:, 1]
    metres_per_sample = SPEED_OF_SOUND_M_S / (2 * fs)
    depth = np.arange(samples, dtype=np.float32)

    # The moving interface and the displacement field it drags along (in samples).
    base = float(anatomy["base"]) + float(placement["shift"])
    slopes = np.asarray(anatomy["slopes"])
    shift = (slopes[0] * x + slopes[1] * y).astype(np.float32)
    thickness = 0.45e-3 * (1 + 0.6 * y) / metres_per_sample
    brightness = 3.0 * float(placement["coupling"]) * (1 + 0.4 * x)

    def drag(static_depth: np.ndarray) -> np.ndarray:
        return np.exp(-0.5 * ((static_depth - base) / (0.25 * samples)) ** 2).astype(np.float32)

    # Static tissue: layers outside the interface band, and speckle whose echogenicity changes at each layer.
    layers = np.asarray(anatomy["layers"]) + float(placement["shift"])
    amplitudes = np.asarray(anatomy["amplitudes"]) * np.asarray(placement["contrast"])
    levels = np.asarray(anatomy["levels"], dtype=np.float32)
    echogenicity = levels[np.searchsorted(layers, depth)]
    speckle = np.append(np.asarray(placement["speckle"], dtype=np.float32) * echogenicity, np.float32(0))
    decorrelation = 0.05 * rng.standard_normal((pulses, samples), dtype=np.float32)

    depth_cm = depth * metres_per_sample * 100
    attenuation = 10 ** (-ATTENUATION_DB_PER_CM_MHZ * PULSE_CENTER_HZ / 1e6 * depth_cm / 20)
    pulse = _pulse(fs)
    rf = np.empty((channels, pulses, samples), dtype=np.float32)
    for channel in range(channels):
        at_rest = depth - np.float32(offsets[channel])  # where the tissue seen at each sample sits at rest
        source = np.clip(at_rest[None, :] - shift[:, None] * drag(at_rest)[None, :], 0, samples - 1)
        index = source.astype(np.intp)
        fraction = source - index
        reflectivity = speckle[:-1][index] * (1 - fraction) + speckle[1:][index] * fraction
        reflectivity += decorrelation * echogenicity[index]
        for layer, amplitude in zip(layers, amplitudes, strict=True):
            _add_reflector(reflectivity, layer + offsets[channel] + shift * drag(layer), amplitude)
        top = base + offsets[channel] + shift
        _add_reflector(reflectivity, top, brightness)
        _add_reflector(reflectivity, top + thickness, -0.7 * brightness)
        rf[channel] = gains[channel] * fftconvolve(reflectivity * attenuation, pulse[None, :], mode="same", axes=-1)
    rf += NOISE_FRACTION * np.abs(rf).max() * rng.standard_normal(rf.shape, dtype=np.float32)
    scale = INT16_PEAK_FRACTION * np.iinfo(np.int16).max / np.abs(rf).max()
    return np.clip(np.rint(rf * scale), -32768, 32767).astype(np.int16)


def _layers(rng: np.random.Generator, samples: int, keep_out: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """5–12 sorted layer depths in [4 %, 96 %] of the record outside ``keep_out``, and their reflection coefficients."""
    count = int(rng.integers(5, 13))
    low, high = 0.04 * samples, 0.96 * samples
    above, below = max(keep_out[0] - low, 0.0), max(high - keep_out[1], 0.0)
    draw = rng.uniform(0.0, above + below, count)
    depths = np.sort(np.where(draw < above, low + draw, keep_out[1] + draw - above))
    return depths, rng.uniform(0.1, 0.4, count) * rng.choice([-1.0, 1.0], count)


def _add_reflector(reflectivity: np.ndarray, depth: np.ndarray, amplitude: float | np.ndarray) -> None:
    """Add a point reflector at fractional ``depth[p]`` (samples) to each pulse p, split linearly between neighbours."""
    pulses, samples = reflectivity.shape
    index = np.floor(depth).astype(np.intp)
    fraction = depth - index
    amplitude = np.broadcast_to(amplitude, depth.shape)
    inside = (index >= 0) & (index < samples - 1)
    rows, index, fraction, amplitude = np.arange(pulses)[inside], index[inside], fraction[inside], amplitude[inside]
    reflectivity[rows, index] += amplitude * (1 - fraction)
    reflectivity[rows, index + 1] += amplitude * fraction


def _pulse(fs: float) -> np.ndarray:
    """The transmit pulse sampled at ``fs``: 10 MHz, 50 % bandwidth, cut where its envelope falls below -60 dB."""
    half = math.ceil(gausspulse("cutoff", fc=PULSE_CENTER_HZ, bw=PULSE_BANDWIDTH, tpr=-60) * fs)
    return gausspulse(np.arange(-half, half + 1) / fs, fc=PULSE_CENTER_HZ, bw=PULSE_BANDWIDTH).astype(np.float32)
