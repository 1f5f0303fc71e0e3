"""Conditioning parts: sinusoidal embedding against its formula, FiLM identity at init and its affine rule, the
null-condition contract of ConditionEmbedding."""

from __future__ import annotations

import math

import pytest
import torch

from medtrain.nn.film import ConditionEmbedding, FiLM, TimestepEmbedding, sinusoidal_embedding


# (t, dim, max_period) → expected row written from the rule [cos(t ω_j)…, sin(t ω_j)…], ω_j = P^(−j/half)
@pytest.mark.parametrize(
    ("t", "dim", "max_period", "expected"),
    [
        (0.0, 4, 10000.0, [1.0, 1.0, 0.0, 0.0]),
        (1.0, 4, 10000.0, [math.cos(1.0), math.cos(0.01), math.sin(1.0), math.sin(0.01)]),
        (3.0, 4, 100.0, [math.cos(3.0), math.cos(0.3), math.sin(3.0), math.sin(0.3)]),
        (2.0, 5, 10000.0, [math.cos(2.0), math.cos(0.02), math.sin(2.0), math.sin(0.02), 0.0]),
        (500.0, 2, 10000.0, [math.cos(500.0), math.sin(500.0)]),
        (7.0, 1, 10000.0, [0.0]),
    ],
)
def test_sinusoidal_embedding_formula(t: float, dim: int, max_period: float, expected: list[float]) -> None:
    emb = sinusoidal_embedding(torch.tensor([t], dtype=torch.float64), dim, max_period)
    torch.testing.assert_close(emb, torch.tensor([expected], dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_sinusoidal_embedding_integer_timesteps_and_shape() -> None:
    emb = sinusoidal_embedding(torch.tensor([0, 10, 999]), 64)
    assert emb.shape == (3, 64) and emb.dtype == torch.float32
    assert not torch.allclose(emb[1], emb[2])
    with pytest.raises(ValueError, match=r"\[B\]"):
        sinusoidal_embedding(torch.zeros(2, 1), 8)


def test_timestep_embedding_shapes() -> None:
    assert TimestepEmbedding(16, 32)(torch.tensor([1, 2])).shape == (2, 32)
    assert TimestepEmbedding(16, 32, out_dim=8)(torch.tensor([1, 2, 3])).shape == (3, 8)


@pytest.mark.parametrize("x_shape", [(2, 3), (2, 3, 7), (2, 3, 4, 5)])
def test_film_starts_as_identity(x_shape: tuple[int, ...]) -> None:
    film = FiLM(cond_dim=6, channels=3)
    x = torch.randn(x_shape)
    torch.testing.assert_close(film(x, torch.randn(2, 6)), x)


def test_film_applies_x_times_one_plus_scale_plus_shift() -> None:
    film = FiLM(cond_dim=2, channels=2)
    with torch.no_grad():
        # rows: scale_0, scale_1, shift_0, shift_1 as linear functions of silu(cond)
        film.proj.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [2.0, 0.0]]))
        film.proj.bias.copy_(torch.tensor([0.0, 0.5, 1.0, 0.0]))
    cond = torch.tensor([[1.0, -1.0]])
    s1, s2 = torch.nn.functional.silu(cond)[0].tolist()
    x = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    scale = torch.tensor([s1, s2 + 0.5])
    shift = torch.tensor([1.0, 2 * s1])
    expected = x * (1 + scale[None, :, None]) + shift[None, :, None]
    torch.testing.assert_close(film(x, cond), expected)


def test_film_refuses_wrong_channels() -> None:
    with pytest.raises(ValueError, match="3 channels"):
        FiLM(4, 3)(torch.randn(2, 5, 8), torch.randn(2, 4))


def _embedding(cfg_dropout: float = 0.0) -> ConditionEmbedding:
    torch.manual_seed(0)
    emb = ConditionEmbedding(num_static=4, dim=8, cfg_dropout=cfg_dropout)
    with torch.no_grad():
        emb.null.copy_(torch.arange(8.0))  # recognisable null vector
    return emb


@pytest.mark.parametrize(
    ("drop", "expect_null"),
    [([False, False, False], [False, False, False]), ([True, False, True], [True, False, True]), (None, [False] * 3)],
)
def test_condition_embedding_drop_mask(drop: list[bool] | None, expect_null: list[bool]) -> None:
    emb = _embedding().eval()
    static = torch.randn(3, 4)
    mask = None if drop is None else torch.tensor(drop)
    out = emb(static, mask)
    mlp = emb.mlp(static)
    for row, is_null in enumerate(expect_null):
        torch.testing.assert_close(out[row], emb.null.detach() if is_null else mlp[row])


def test_condition_embedding_ignores_static_of_dropped_rows() -> None:
    emb = _embedding().eval()
    static = torch.randn(2, 4)
    static[1] = float("nan")
    out = emb(static, torch.tensor([False, True]))
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in emb.parameters() if p.grad is not None)


@pytest.mark.parametrize(
    ("cfg_dropout", "training", "low", "high"),
    [(0.0, True, 0, 0), (0.3, False, 0, 0), (0.3, True, 0.25, 0.35), (0.9, True, 0.85, 0.95)],
)
def test_condition_embedding_training_dropout_rate(cfg_dropout: float, training: bool, low: float, high: float) -> None:
    emb = _embedding(cfg_dropout).train(training)
    static = torch.randn(4000, 4)
    out = emb(static, generator=torch.Generator().manual_seed(1))
    rate = (out == emb.null.detach()).all(dim=1).float().mean().item()
    assert low <= rate <= high


def test_condition_embedding_validates_inputs() -> None:
    emb = _embedding()
    with pytest.raises(ValueError, match="static"):
        emb(torch.randn(3, 5))
    with pytest.raises(ValueError, match="drop_mask"):
        emb(torch.randn(3, 4), torch.tensor([True]))
    with pytest.raises(ValueError, match="cfg_dropout"):
        ConditionEmbedding(4, 8, cfg_dropout=1.0)
