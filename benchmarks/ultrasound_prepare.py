"""Ultrasound prepare throughput: ``medtrain prepare`` against a per-pulse scipy loop and against a plain read.

One synthetic experiment (:func:`~medtrain.recipes.ultrasound_ae.synthetic.generate_raw_dataset`, default
10,000 pulses x 3 channels x 1,996 int16 samples, the size of a real recording) is written to a temporary folder.
Then, in one process, each round times three arms, in the order read, prepare, loop in even rounds and the
reverse in odd rounds, to cancel slow drift:

- **read**: ``np.load`` of every channel file in full and ``.astype(np.float32)``: the floor, what it costs just to
  get the raw arrays into memory. The files were just written and read, so they come from the page cache: this
  measures memory copies and the int16 to float32 conversion, not a disk.
- **prepare**: :func:`~medtrain.recipes.ultrasound_ae.prepare.prepare_dataset` with the default
  ``UltrasoundData()`` into a new, empty output folder each round (never a cache hit): discovery and validation,
  reading, the vectorised signal chain (band-pass, TGC, depth clip, envelope, decimation; see
  ``SignalChain.apply``: FFT band-pass of only the samples that reach the clipped output, envelope by two real
  FFTs, decimation as a matrix product) in chunks of pulses, tokenisation, labels, and the atomic HDF5 write plus
  ``metadata.csv``.
- **loop**: the same chain written the straightforward way, one scipy call per pulse: for each channel, for each
  pulse, ``sosfiltfilt`` (the same Butterworth), the TGC multiply, the depth clip, ``np.abs(hilbert(...))`` and
  ``scipy.signal.decimate(..., ftype="fir", zero_phase=True)``, in float64; then tokens by a Python loop over the
  windows (``np.stack`` of the window's pulses) and a label per window from the joystick. It reads its pulses
  through a memory map but writes no file: it does less work than prepare. To bound the run time it processes
  only the first ``--loop-pulses`` pulses of every channel. Its cost is the same for every pulse, so its rate per
  raw sample measured on that subset stands for the whole experiment.

Rates are **raw samples per second**: raw int16 samples in (pulses x channels x samples) over wall-clock seconds,
so arms that process different numbers of pulses are comparable. Printed per round and as medians: the rate of
each arm, prepare/loop (the issue's goal is >= 20x) and prepare/read, plus CPU-time rates as a second opinion on
a busy machine. Every arm runs on one thread (scipy.signal and scipy.fft are single-threaded by default, and the
BLAS behind prepare's decimation is held to one thread with ``threadpoolctl``), so the thread count of the machine
does not enter. Once, the loop's M-mode output and tokens are checked against the vectorised chain's and against
the tokens prepare wrote (largest absolute difference at most 1e-5 of the maximum: the same numbers up to float32
rounding).

Usage: ``python benchmarks/ultrasound_prepare.py [--pulses 10000] [--loop-pulses 1000] [--rounds 3]``
(about 1-2 minutes on 2 cores with the defaults). No threshold is enforced: the script always exits 0.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy
import scipy.signal
from threadpoolctl import threadpool_limits

from medtrain.io.hdf5 import read_h5
from medtrain.recipes.ultrasound_ae.prepare import prepare_dataset, signal_chain
from medtrain.recipes.ultrasound_ae.raw import RawExperiment, discover_experiments
from medtrain.recipes.ultrasound_ae.schema import UltrasoundData
from medtrain.recipes.ultrasound_ae.synthetic import generate_raw_dataset
from medtrain.recipes.ultrasound_ae.tokens import token_starts

CHANNELS = 3
SAMPLES = 1996
SEED = 0
GOAL = 20.0
TOLERANCE = 1e-5  # absolute tolerance of the output check, as a fraction of the output's maximum
ARMS = ("read", "prepare", "loop")


class Timing(NamedTuple):
    """One timed run: raw samples processed, wall-clock seconds, CPU seconds of this process."""

    samples: int
    wall: float
    cpu: float

    @property
    def rate(self) -> float:
        return self.samples / self.wall

    @property
    def cpu_rate(self) -> float:
        return self.samples / max(self.cpu, 1e-9)


class LoopResult(NamedTuple):
    timing: Timing
    mmode: np.ndarray  # [C, pulses, depth]
    tokens: np.ndarray  # [N, C, depth, pulses_per_token]
    labels: np.ndarray  # [N]


def run_read(experiment: RawExperiment) -> Timing:
    """Every channel file read in full and converted to float32."""
    started, cpu_started = time.perf_counter(), time.process_time()
    arrays = [np.load(path, allow_pickle=False).astype(np.float32) for path in experiment.channel_files]
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return Timing(sum(array.size for array in arrays), wall, cpu)


def run_prepare(raw_root: Path, out_root: Path, data: UltrasoundData) -> Timing:
    """``prepare_dataset`` into ``out_root``, which must not exist yet (no cache hit)."""
    if out_root.exists():
        raise RuntimeError(f"{out_root} exists: prepare would find a cache hit")
    started, cpu_started = time.perf_counter(), time.process_time()
    rows = prepare_dataset(raw_root, out_root, data)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return Timing(sum(row.pulses * row.channels for row in rows) * SAMPLES, wall, cpu)


def run_loop(experiment: RawExperiment, data: UltrasoundData, pulses: int) -> LoopResult:
    """The chain, tokens and labels of the first ``pulses`` pulses, one scipy call per pulse and step."""
    signal, tokens_cfg = data.signal, data.tokens
    fs = signal.sampling_rate_hz or experiment.sampling_rate_hz
    started, cpu_started = time.perf_counter(), time.process_time()
    sos = scipy.signal.butter(signal.order, [signal.low_hz, signal.high_hz], btype="bandpass", fs=fs, output="sos")
    gain = 10.0 ** (signal.tgc_coefficient * np.arange(experiment.samples) / (experiment.samples - 1))
    joystick = np.load(experiment.joystick_file, allow_pickle=False)
    channels = []
    for path in experiment.channel_files:
        raw = np.load(path, mmap_mode="r", allow_pickle=False)
        rows = []
        for index in range(pulses):
            x = scipy.signal.sosfiltfilt(sos, raw[index].astype(np.float64))
            x = x * gain
            x = x[: signal.depth_samples]
            x = np.abs(scipy.signal.hilbert(x))
            x = scipy.signal.decimate(x, signal.decimation, ftype="fir", zero_phase=True)
            rows.append(x.astype(np.float32))
        channels.append(np.stack(rows))
    mmode = np.stack(channels)
    width, stride = tokens_cfg.pulses_per_token, tokens_cfg.stride
    tokens, labels = [], []
    for start in range(0, pulses - width + 1, stride):
        tokens.append(np.stack([mmode[:, start + k] for k in range(width)], axis=-1))
        x, y = (float(v) for v in joystick[start + width // 2, :2])
        if np.hypot(x, y) < tokens_cfg.dead_zone:
            labels.append(0)
        elif y >= 0:
            labels.append(1 if x >= 0 else 2)
        else:
            labels.append(3 if x < 0 else 4)
    token_array, label_array = np.stack(tokens), np.array(labels, dtype=np.int64)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    timing = Timing(pulses * experiment.channels * experiment.samples, wall, cpu)
    return LoopResult(timing, mmode, token_array, label_array)


def close(actual: np.ndarray, expected: np.ndarray) -> tuple[bool, float]:
    """Whether ``actual`` matches ``expected`` within ``TOLERANCE`` of its maximum; the largest relative error."""
    if actual.shape != expected.shape:
        return False, float("inf")
    scale = float(np.abs(expected).max()) or 1.0
    error = float(np.abs(actual.astype(np.float64) - expected).max()) / scale
    return error <= TOLERANCE, error


def verify(experiment: RawExperiment, data: UltrasoundData, loop: LoopResult, prepared: Path) -> None:
    """The loop against the vectorised chain on the same pulses and against the tokens and labels prepare wrote."""
    pulses = loop.mmode.shape[1]
    chain = signal_chain(data.signal, experiment.sampling_rate_hz)
    vectorised = chain.apply(experiment.read_pulses(0, pulses))
    count = len(token_starts(pulses, pulses_per_token=data.tokens.pulses_per_token, stride=data.tokens.stride))
    written = read_h5(prepared / experiment.session / f"{experiment.name}.h5", ["tokens", "labels"])
    mmode_ok, mmode_error = close(loop.mmode, vectorised)
    tokens_ok, tokens_error = close(loop.tokens, written["tokens"][:count])
    labels_ok = np.array_equal(loop.labels, written["labels"][:count])
    print(
        f"output check on the loop's {pulses} pulses x {experiment.channels} channels: M-mode vs the vectorised chain "
        f"max error {mmode_error:.1e} of max, {count} tokens vs prepare's file {tokens_error:.1e} of max, labels "
        f"{'equal' if labels_ok else 'DIFFER'} (tolerance {TOLERANCE:g} of max)"
    )
    print("outputs match" if mmode_ok and tokens_ok and labels_ok else "outputs DIFFER")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pulses", type=int, default=10000, help="pulses of the experiment (default 10000)")
    parser.add_argument(
        "--loop-pulses", type=int, default=1000, help="pulses per channel the per-pulse loop processes (default 1000)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds, each runs all three arms (default 3)")
    args = parser.parse_args(argv)
    width = UltrasoundData().tokens.pulses_per_token
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    if not width <= args.loop_pulses <= args.pulses:
        parser.error(f"need {width} <= --loop-pulses <= --pulses")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data = UltrasoundData()
    runs: dict[str, list[Timing]] = {arm: [] for arm in ARMS}
    with tempfile.TemporaryDirectory(prefix="medtrain-bench-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        generate_raw_dataset(
            root / "raw", sessions=1, experiments_per_session=1, pulses=args.pulses, samples=SAMPLES,
            channels=CHANNELS, seed=SEED,
        )  # fmt: skip
        print(f"generated {args.pulses} x {CHANNELS} x {SAMPLES} int16 in {time.perf_counter() - started:.1f} s")
        (experiment,) = discover_experiments(root / "raw")
        # Warm-up, not timed: imports, first calls, the page cache of the raw files.
        generate_raw_dataset(root / "warm-raw", sessions=1, experiments_per_session=1, pulses=64, seed=SEED)
        run_prepare(root / "warm-raw", root / "warm-out", data)
        run_read(experiment)
        run_loop(experiment, data, data.tokens.pulses_per_token)
        loop = None
        for index in range(args.rounds):
            for arm in ARMS if index % 2 == 0 else ARMS[::-1]:
                if arm == "read":
                    runs[arm].append(run_read(experiment))
                elif arm == "prepare":
                    out = root / f"out-{index}"
                    runs[arm].append(run_prepare(root / "raw", out, data))
                    if index > 0:  # the first round's output is kept for the output check
                        shutil.rmtree(out)
                else:
                    loop = run_loop(experiment, data, args.loop_pulses)
                    runs[arm].append(loop.timing)
        report(args, runs)
        assert loop is not None
        verify(experiment, data, loop, root / "out-0")
    return 0


def report(args: argparse.Namespace, runs: dict[str, list[Timing]]) -> None:
    """Per-round and median raw samples/s of the three arms and the ratios."""
    rates = {arm: [timing.rate for timing in timings] for arm, timings in runs.items()}
    vs_loop = [p / loop for p, loop in zip(rates["prepare"], rates["loop"], strict=True)]
    vs_read = [p / read for p, read in zip(rates["prepare"], rates["read"], strict=True)]
    median = {arm: statistics.median(values) for arm, values in rates.items()}
    print(
        f"ultrasound prepare: numpy {np.__version__}, scipy {scipy.__version__}, one thread per arm "
        f"({os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})"
    )
    print(
        f"workload: 1 experiment of {args.pulses} pulses x {CHANNELS} channels x {SAMPLES} samples "
        f"({args.pulses * CHANNELS * SAMPLES / 1e6:.1f} M raw samples); the loop runs on its first {args.loop_pulses} "
        f"pulses x {CHANNELS} channels and its rate is per raw sample of that subset; "
        f"{len(vs_loop)} rounds (read-prepare-loop, then reversed)"
    )
    print("rates in M raw samples/s (wall clock); the loop writes no file, so it does less work than prepare")
    print()
    print(f"{'round':>6}  {'read':>8}  {'prepare':>8}  {'loop':>8}  {'prep/loop':>9}  {'prep/read':>9}")
    for index in range(len(vs_loop)):
        row = "  ".join(f"{rates[arm][index] / 1e6:>8.2f}" for arm in ARMS)
        print(f"{index + 1:>6}  {row}  {vs_loop[index]:>9.2f}  {vs_read[index]:>9.4f}")
    row = "  ".join(f"{median[arm] / 1e6:>8.2f}" for arm in ARMS)
    ratio_loop, ratio_read = statistics.median(vs_loop), statistics.median(vs_read)
    print(f"{'median':>6}  {row}  {ratio_loop:>9.2f}  {ratio_read:>9.4f}")
    print()
    print(
        f"prepare/loop: {ratio_loop:.2f}x (median of per-round ratios, range {min(vs_loop):.2f}-{max(vs_loop):.2f}); "
        f"goal >= {GOAL:g}x {'met' if ratio_loop >= GOAL else 'NOT met'}"
    )
    print(
        f"prepare/read: {ratio_read:.4f} (reading the raw arrays alone is {1 / ratio_read:.0f}x faster than prepare; "
        f"range {min(vs_read):.4f}-{max(vs_read):.4f})"
    )
    seconds = {arm: statistics.median(timing.wall for timing in runs[arm]) for arm in ARMS}
    print(
        f"median seconds: read {seconds['read']:.2f}, prepare {seconds['prepare']:.2f}, "
        f"loop {seconds['loop']:.2f} ({args.loop_pulses} of {args.pulses} pulses; the whole experiment would take "
        f"about {seconds['loop'] * args.pulses / args.loop_pulses:.0f} s)"
    )
    cpu = {arm: statistics.median(timing.cpu_rate for timing in runs[arm]) for arm in ARMS}
    print(
        f"CPU-time rates (less sensitive to other load): read {cpu['read'] / 1e6:.2f}, "
        f"prepare {cpu['prepare'] / 1e6:.2f}, loop {cpu['loop'] / 1e6:.2f} M samples/s; "
        f"prepare/loop {cpu['prepare'] / cpu['loop']:.2f}x"
    )


if __name__ == "__main__":
    with threadpool_limits(limits=1):
        raise SystemExit(main())
