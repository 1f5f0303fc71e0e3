"""Diffusion maths: cosine schedule against the closed form, v/x0/ε conversions, DDIM step against eq. 12 and
MONAI's step, exact recovery with a perfect model, batched classifier-free guidance equal to two passes, and
timestep conditioning through FiLM."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from medtrain.nn.diffusion import (
    CosineSchedule,
    ddim_step,
    ddim_timesteps,
    guided_v,
    guided_v_two_pass,
    sample_ddim,
)
from medtrain.nn.film import ConditionEmbedding, FiLM, TimestepEmbedding


def _f(tau: float, steps: int, s: float = 0.008) -> float:
    return math.cos(((tau / steps) + s) / (1 + s) * math.pi / 2) ** 2


def _alpha_bar(t: int, steps: int = 1000) -> float:
    """Closed form ᾱ for timestep index t (signal level after t + 1 noising steps); t = −1 is the clean signal."""
    return 1.0 if t < 0 else _f(t + 1, steps) / _f(0, steps)


@pytest.mark.parametrize(
    ("steps", "t"),
    [
        *[(1000, t) for t in (0, 1, 10, 250, 500, 750, 900, 990)],
        *[(100, t) for t in (0, 50, 98)],
        *[(10, t) for t in (0, 5)],
    ],
)
def test_alpha_bar_matches_closed_form(steps: int, t: int) -> None:
    schedule = CosineSchedule(num_steps=steps)
    assert float(schedule.alpha_bar[t]) == pytest.approx(_alpha_bar(t, steps), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("steps", [10, 1000])
def test_schedule_equals_monai_cosine(steps: int) -> None:
    from monai.networks.schedulers import NoiseSchedules  # slow import, only here

    betas, _, alpha_bar = NoiseSchedules["cosine"](num_train_timesteps=steps, s=0.008)
    schedule = CosineSchedule(num_steps=steps)
    torch.testing.assert_close(schedule.alpha_bar, alpha_bar.double(), rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(schedule.betas, betas.double(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("steps", [10, 100, 1000])
def test_schedule_monotone_and_betas_clipped(steps: int) -> None:
    schedule = CosineSchedule(num_steps=steps)
    ab = schedule.alpha_bar
    assert ab.shape == (steps,) and schedule.betas.shape == (steps,)
    assert (ab[1:] < ab[:-1]).all() and float(ab[-1]) > 0 and float(ab[0]) < 1
    assert (schedule.betas > 0).all() and (schedule.betas <= 0.999 + 1e-7).all()
    assert float(schedule.betas[-1]) == pytest.approx(0.999)  # f(T) = 0: the last beta is the clipped one
    torch.testing.assert_close(ab, torch.cumprod(1 - schedule.betas, 0), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(
    ("shape", "dtype"), [((4, 200), torch.float64), ((3, 2, 50), torch.float64), ((5, 1, 200), torch.float32)]
)
def test_conversions_round_trip(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    schedule = CosineSchedule()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(shape, generator=g, dtype=dtype)
    noise = torch.randn(shape, generator=g, dtype=dtype)
    t = torch.randint(0, 1000, (shape[0],), generator=g)
    x_t = schedule.q_sample(x0, t, noise)
    v = schedule.v_target(x0, t, noise)
    x0_hat, eps_hat = schedule.predict_x0_eps(x_t, t, v)
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(x0_hat, x0, rtol=tol, atol=tol)
    torch.testing.assert_close(eps_hat, noise, rtol=tol, atol=tol)
    # and each against the written-out formula
    ab = torch.tensor([_alpha_bar(int(i)) for i in t], dtype=dtype).view(-1, *([1] * (len(shape) - 1)))
    torch.testing.assert_close(x_t, ab.sqrt() * x0 + (1 - ab).sqrt() * noise, rtol=tol, atol=tol)
    torch.testing.assert_close(v, ab.sqrt() * noise - (1 - ab).sqrt() * x0, rtol=tol, atol=tol)


@pytest.mark.parametrize(
    ("train", "sampling", "expected"),
    [
        (1000, 50, list(range(980, -1, -20))),
        (1000, 1, [0]),
        (10, 10, list(range(9, -1, -1))),
        (1000, 3, [666, 333, 0]),
        (1000, 4, [750, 500, 250, 0]),
        (100, 7, [85, 71, 57, 42, 28, 14, 0]),
    ],
)
def test_ddim_timesteps(train: int, sampling: int, expected: list[int]) -> None:
    assert ddim_timesteps(train, sampling) == expected


@pytest.mark.parametrize(("train", "sampling"), [(1000, 0), (10, 11)])
def test_ddim_timesteps_refuses_bad_counts(train: int, sampling: int) -> None:
    with pytest.raises(ValueError, match="sampling steps"):
        ddim_timesteps(train, sampling)


@pytest.mark.parametrize(("t", "t_prev"), [(980, 960), (500, 480), (500, 100), (20, 0), (0, -1), (999, -1)])
def test_ddim_step_eta0_matches_closed_form(t: int, t_prev: int) -> None:
    schedule = CosineSchedule()
    g = torch.Generator().manual_seed(t)
    x_t = torch.randn(3, 1, 16, generator=g, dtype=torch.float64)
    v = torch.randn(3, 1, 16, generator=g, dtype=torch.float64)
    a, a_prev = _alpha_bar(t), _alpha_bar(t_prev)
    if t == 999:  # the clipped last step: use the stored value, the closed form no longer applies there
        a = float(schedule.alpha_bar[999])
    x0 = math.sqrt(a) * x_t - math.sqrt(1 - a) * v
    eps = math.sqrt(1 - a) * x_t + math.sqrt(a) * v
    expected = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps
    x_prev, x0_pred = ddim_step(schedule, x_t, t, t_prev, v, eta=0.0)
    torch.testing.assert_close(x0_pred, x0, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(x_prev, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("t", "eta"), [(980, 0.0), (500, 0.0), (20, 0.0), (0, 0.0), (500, 0.7), (980, 1.0)])
def test_ddim_step_matches_monai(t: int, eta: float) -> None:
    """Where MONAI's implied previous step (t − T//steps) is the same as ours, both steps agree, noise included."""
    from monai.networks.schedulers import DDIMScheduler

    monai = DDIMScheduler(1000, schedule="cosine", prediction_type="v_prediction", clip_sample=False)
    monai.set_timesteps(50)
    schedule = CosineSchedule()
    x_t = torch.randn(2, 1, 32, generator=torch.Generator().manual_seed(1))
    v = torch.randn(2, 1, 32, generator=torch.Generator().manual_seed(2))
    expected, expected_x0 = monai.step(v, t, x_t, eta=eta, generator=torch.Generator().manual_seed(3))
    got, got_x0 = ddim_step(schedule, x_t, t, t - 20 if t > 0 else -1, v, eta, torch.Generator().manual_seed(3))
    torch.testing.assert_close(got_x0, expected_x0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_ddim_step_refuses_bad_order() -> None:
    with pytest.raises(ValueError, match="t_prev"):
        ddim_step(CosineSchedule(), torch.zeros(1, 4), 10, 10, torch.zeros(1, 4))


@pytest.mark.parametrize(("steps", "eta"), [(50, 0.0), (10, 0.0), (50, 0.5), (20, 1.0)])
def test_perfect_model_recovers_x0(steps: int, eta: float) -> None:
    schedule = CosineSchedule()
    g = torch.Generator().manual_seed(0)
    x0 = torch.sin(torch.linspace(0, 6, 64, dtype=torch.float64)).expand(3, 1, 64) * torch.tensor([1.0, 0.5, -2.0])[
        :, None, None
    ].to(torch.float64)

    def perfect(x: Tensor, t: Tensor, cond: Tensor | None, drop_mask: Tensor) -> Tensor:
        ab = torch.tensor([float(schedule.alpha_bar[int(i)]) for i in t], dtype=x.dtype)[:, None, None]
        eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
        return ab.sqrt() * eps - (1 - ab).sqrt() * x0

    out = sample_ddim(perfect, x0.shape, schedule, steps=steps, eta=eta, generator=g, dtype=torch.float64)
    torch.testing.assert_close(out, x0, rtol=1e-7, atol=1e-7)


class ToyDenoiser(nn.Module):
    """conv → FiLM(timestep + static condition) → SiLU → conv; a stand-in for the recipe's network."""

    def __init__(self, channels: int = 8, num_static: int = 4, emb: int = 16) -> None:
        super().__init__()
        self.t_emb = TimestepEmbedding(16, emb)
        self.c_emb = ConditionEmbedding(num_static, emb, cfg_dropout=0.2)
        self.inp = nn.Conv1d(1, channels, 3, padding=1)
        self.film = FiLM(emb, channels)
        self.out = nn.Conv1d(channels, 1, 3, padding=1)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None, drop_mask: Tensor) -> Tensor:
        assert cond is not None
        c = self.t_emb(t) + self.c_emb(cond, drop_mask)
        return self.out(nn.functional.silu(self.film(self.inp(x), c)))


def _trained_looking_toy(seed: int = 0) -> ToyDenoiser:
    torch.manual_seed(seed)
    model = ToyDenoiser()
    with torch.no_grad():  # FiLM starts as the identity; give it weights so conditions matter
        nn.init.normal_(model.film.proj.weight, std=0.5)
        nn.init.normal_(model.c_emb.null, std=1.0)
    return model.eval()


def test_timestep_conditioning_changes_film_block_output() -> None:
    torch.manual_seed(0)
    fresh = ToyDenoiser().eval()
    x = torch.randn(2, 1, 32)
    cond = torch.randn(2, 4)
    keep = torch.zeros(2, dtype=torch.bool)
    early, late = torch.full((2,), 10), torch.full((2,), 900)
    with torch.no_grad():
        # zero-initialised FiLM: the identity, so the timestep cannot matter yet
        torch.testing.assert_close(fresh(x, early, cond, keep), fresh(x, late, cond, keep))
        model = _trained_looking_toy()
        diff = (model(x, early, cond, keep) - model(x, late, cond, keep)).abs().max()
    assert diff > 1e-3


@pytest.mark.parametrize("guidance_scale", [0.0, 1.0, 2.5, 7.0])
def test_batched_cfg_equals_two_passes(guidance_scale: float) -> None:
    model = _trained_looking_toy()
    calls: list[int] = []

    def model_fn(x: Tensor, t: Tensor, cond: Tensor | None, drop_mask: Tensor) -> Tensor:
        calls.append(x.shape[0])
        return model(x, t, cond, drop_mask)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 1, 40, generator=g)
    t = torch.randint(0, 1000, (5,), generator=g)
    cond = torch.randn(5, 4, generator=g)
    with torch.no_grad():
        batched = guided_v(model_fn, x, t, cond, guidance_scale)
        batched_calls, calls[:] = list(calls), []
        separate = guided_v_two_pass(model_fn, x, t, cond, guidance_scale)
        v_c = model(x, t, cond, torch.zeros(5, dtype=torch.bool))
        v_u = model(x, t, cond, torch.ones(5, dtype=torch.bool))
    assert (v_c - v_u).abs().max() > 1e-3  # the condition matters, so the comparison means something
    torch.testing.assert_close(batched, separate, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batched, v_u + guidance_scale * (v_c - v_u), rtol=1e-5, atol=1e-5)
    assert batched_calls == ([10] if guidance_scale not in (0.0, 1.0) else [5])
    assert calls == [5, 5]


def test_sampling_batched_and_two_pass_agree() -> None:
    model = _trained_looking_toy()
    schedule = CosineSchedule()
    cond = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    x_T = torch.randn(3, 1, 32, generator=torch.Generator().manual_seed(2))
    common = {"steps": 10, "guidance_scale": 3.0, "cond": cond, "x_T": x_T}
    batched = sample_ddim(model, x_T.shape, schedule, batched_cfg=True, **common)
    separate = sample_ddim(model, x_T.shape, schedule, batched_cfg=False, **common)
    assert torch.isfinite(batched).all() and batched.shape == x_T.shape
    torch.testing.assert_close(batched, separate, rtol=1e-4, atol=1e-4)


def test_unconditional_guidance_without_cond_drops_every_row() -> None:
    seen: list[Tensor] = []

    def model_fn(x: Tensor, t: Tensor, cond: Tensor | None, drop_mask: Tensor) -> Tensor:
        assert cond is None
        seen.append(drop_mask)
        return torch.zeros_like(x)

    guided_v(model_fn, torch.zeros(3, 1, 4), torch.zeros(3, dtype=torch.long), None, 3.0)
    assert seen[0].tolist() == [True, True, True]


def test_sample_shape_checks() -> None:
    schedule = CosineSchedule(num_steps=10)
    with pytest.raises(ValueError, match="x_T"):
        sample_ddim(lambda x, t, c, m: x, (2, 1, 4), schedule, steps=2, x_T=torch.zeros(3, 1, 4))
    with pytest.raises(ValueError, match="cond"):
        sample_ddim(lambda x, t, c, m: x, (2, 1, 4), schedule, steps=2, cond=torch.zeros(3, 4))
