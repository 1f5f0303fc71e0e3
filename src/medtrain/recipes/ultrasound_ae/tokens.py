"""Tokenisation of processed M-mode data: pulse windows → tokens, joystick → labels, tokens → sequences.

A token is ``pulses_per_token`` consecutive pulses taken every ``stride`` pulses: token ``i`` covers pulses
``[i * stride, i * stride + pulses_per_token)`` and is stored as ``[C, depth, pulses_per_token]``. Its label comes
from the joystick at the window centre. A sequence is ``tokens_per_sequence`` consecutive tokens of one experiment;
sequences never span two experiments, so they never span two splits.
"""

from __future__ import annotations

import numpy as np

#: label names, index = class id; "rest" is the dead zone around the joystick's centre
CLASS_NAMES: tuple[str, ...] = ("rest", "right-up", "left-up", "left-down", "right-down")


def token_starts(pulses: int, *, pulses_per_token: int, stride: int) -> np.ndarray:
    """First pulse of every complete window: ``0, stride, 2·stride, …`` while ``start + pulses_per_token ≤ pulses``."""
    if pulses_per_token < 1 or stride < 1:
        raise ValueError(f"pulses_per_token and stride must be ≥ 1, got {pulses_per_token} and {stride}")
    if pulses < pulses_per_token:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, pulses - pulses_per_token + 1, stride, dtype=np.int64)


def make_tokens(mmode: np.ndarray, starts: np.ndarray, pulses_per_token: int) -> np.ndarray:
    """Windows of ``mmode`` ``[C, pulses, depth]`` → tokens ``[N, C, depth, pulses_per_token]`` (one copy, no loop)."""
    if len(starts) == 0 or mmode.shape[1] < pulses_per_token:
        return np.zeros((0, mmode.shape[0], mmode.shape[2], pulses_per_token), dtype=mmode.dtype)
    windows = np.lib.stride_tricks.sliding_window_view(mmode, pulses_per_token, axis=1)  # [C, P-w+1, depth, w]
    return np.ascontiguousarray(windows[:, starts].transpose(1, 0, 2, 3))


def window_centres(starts: np.ndarray, pulses_per_token: int) -> np.ndarray:
    """Pulse index at the centre of each window: ``start + pulses_per_token // 2``."""
    return starts + pulses_per_token // 2


def joystick_classes(joystick: np.ndarray, *, dead_zone: float) -> np.ndarray:
    """Class id per row of ``joystick`` ``[N, 2+]`` (x, y, …): 0 ``rest`` when ``hypot(x, y) < dead_zone``, else the
    quadrant of (x, y): 1 right-up (x ≥ 0, y ≥ 0), 2 left-up (x < 0, y ≥ 0), 3 left-down (x < 0, y < 0),
    4 right-down (x ≥ 0, y < 0)."""
    x, y = joystick[:, 0], joystick[:, 1]
    quadrant = np.where(y >= 0, np.where(x >= 0, 1, 2), np.where(x < 0, 3, 4))
    return np.where(np.hypot(x, y) < dead_zone, 0, quadrant).astype(np.int64)


def sequence_starts(tokens: int, *, tokens_per_sequence: int) -> np.ndarray:
    """First token of every sequence of ``tokens_per_sequence`` consecutive tokens (stride 1) within one experiment."""
    if tokens < tokens_per_sequence:
        return np.zeros(0, dtype=np.int64)
    return np.arange(tokens - tokens_per_sequence + 1, dtype=np.int64)
