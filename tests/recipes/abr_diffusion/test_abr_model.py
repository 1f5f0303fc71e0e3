"""The abr-diffusion U-Net: level lengths, output shapes (default and odd lengths), timestep conditioning through FiLM,
batched classifier-free guidance equal to two passes, dropped rows ignoring their (NaN) static values, DDIM
sampling through ``predict_v``, and a few optimizer steps reducing the combined multi-task loss."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from medtrain.nn.diffusion import CosineSchedule, guided_v, guided_v_two_pass, sample_ddim
from medtrain.nn.film import FiLM
from medtrain.nn.losses import focal_loss, masked_gaussian_nll
from medtrain.recipes.abr_diffusion.model import LOG_VAR_BOUND, ABROutput, ABRUNet, level_lengths

TINY: dict[str, Any] = {"base_channels": 16, "channel_mult": (1, 2), "d_state": 16, "embed_dim": 32, "num_heads": 2}
FOUR_LEVELS: dict[str, Any] = {"base_channels": 8, "channel_mult": (1, 2, 2, 4), "d_state": 8, "embed_dim": 16}


pytestmark = pytest.mark.usefixtures("seeded_one_thread")


def _perturb_films(model: ABRUNet, scale: float = 0.3) -> None:
    """Give every (zero-initialised) FiLM non-zero weights, as training would."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, FiLM):
                module.proj.weight.normal_(0.0, scale)
                module.proj.bias.normal_(0.0, scale)


def _assert_shapes(out: ABROutput, batch: int, length: int, classes: int) -> None:
    assert out.v.shape == (batch, 1, length)
    assert out.peak_logit.shape == (batch,) and out.threshold.shape == (batch,)
    assert out.peak_mean.shape == (batch, 2) and out.peak_log_var.shape == (batch, 2)
    assert out.class_logits.shape == (batch, classes)


@pytest.mark.parametrize(
    ("length", "levels", "expected"),
    [
        (200, 4, (200, 100, 50, 25)),
        (37, 3, (37, 19, 10)),
        (201, 4, (201, 101, 51, 26)),
        (1, 3, (1, 1, 1)),
        (5, 1, (5,)),
    ],
)
def test_level_lengths(length: int, levels: int, expected: tuple[int, ...]) -> None:
    assert level_lengths(length, levels) == expected


def test_default_config_shapes_at_200() -> None:
    model = ABRUNet()
    assert model.levels == 4
    batch = 2
    out = model(torch.randn(batch, 1, 200), torch.tensor([0, 999]), torch.randn(batch, 4))
    _assert_shapes(out, batch, 200, 5)
    assert (out.peak_log_var.abs() < LOG_VAR_BOUND).all()


@pytest.mark.parametrize(
    ("config", "length"),
    [(TINY, 200), (TINY, 37), (TINY, 1), (FOUR_LEVELS, 37), (FOUR_LEVELS, 201), (FOUR_LEVELS, 7)],
)
def test_shapes_for_odd_lengths(config: dict[str, Any], length: int) -> None:
    model = ABRUNet(signal_length=length, num_classes=3, **config)
    out = model(torch.randn(3, 1, length), torch.tensor([0, 10, 999]), torch.randn(3, 4))
    _assert_shapes(out, 3, length, 3)
    out.v.sum().backward()  # the graph is whole at every length
    v = model.predict_v(torch.randn(3, 1, length), torch.zeros(3, dtype=torch.long), None, None)
    assert v.shape == (3, 1, length)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((torch.randn(2, 1, 50), torch.zeros(2), torch.zeros(2, 4)), r"x_t \[B, 1, 64\]"),
        ((torch.randn(2, 2, 64), torch.zeros(2), torch.zeros(2, 4)), r"x_t \[B, 1, 64\]"),
        ((torch.randn(2, 1, 64), torch.zeros(3), torch.zeros(2, 4)), "timesteps"),
        ((torch.randn(2, 1, 64), torch.zeros(2), torch.zeros(2, 3)), "static"),
    ],
)
def test_rejects_bad_inputs(args: tuple[torch.Tensor, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ABRUNet(signal_length=64, **TINY)(*args)


def test_rejects_heads_that_do_not_divide_channels() -> None:
    with pytest.raises(ValueError, match="num_heads"):
        ABRUNet(**{**TINY, "num_heads": 3})


def test_timestep_conditioning_changes_the_output() -> None:
    model = ABRUNet(signal_length=64, **TINY).eval()
    _perturb_films(model)
    x = torch.randn(2, 1, 64).repeat(2, 1, 1)
    static = torch.randn(2, 4).repeat(2, 1)
    t = torch.tensor([0, 0, 500, 500])
    with torch.no_grad():
        out = model(x, t, static)
    for field in ("v", "threshold", "class_logits"):
        value = getattr(out, field)
        assert (value[:2] - value[2:]).abs().max() > 1e-3, field


def test_batched_guidance_equals_two_passes() -> None:
    model = ABRUNet(signal_length=64, **TINY).eval()  # default dropout 0.1 and cfg_dropout 0.1: eval turns them off
    _perturb_films(model)
    x, static = torch.randn(3, 1, 64), torch.randn(3, 4)
    t = torch.tensor([0, 400, 999])
    with torch.no_grad():
        batched = guided_v(model.predict_v, x, t, static, 3.0)
        two_pass = guided_v_two_pass(model.predict_v, x, t, static, 3.0)
        keep = torch.zeros(3, dtype=torch.bool)
        v_c, v_u = model.predict_v(x, t, static, keep), model.predict_v(x, t, static, ~keep)
    assert (v_c - v_u).abs().max() > 1e-3  # the condition matters, so the comparison is not vacuous
    torch.testing.assert_close(batched, two_pass, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(batched, v_u + 3.0 * (v_c - v_u), rtol=1e-4, atol=1e-5)


def test_dropped_rows_ignore_their_static_values() -> None:
    model = ABRUNet(signal_length=64, **TINY).eval()
    _perturb_films(model)
    x, t = torch.randn(4, 1, 64), torch.tensor([3, 30, 300, 900])
    static = torch.randn(4, 4)
    drop = torch.tensor([False, True, False, True])
    static[drop] = float("nan")
    with torch.no_grad():
        out = model(x, t, static, drop)
        unconditional = model(x, t, None)
        conditional = model(x[~drop], t[~drop], static[~drop])
    for field in ABROutput.__dataclass_fields__:
        value = getattr(out, field)
        assert torch.isfinite(value).all(), field
        torch.testing.assert_close(value[drop], getattr(unconditional, field)[drop], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(value[~drop], getattr(conditional, field), rtol=1e-4, atol=1e-5)
    model.train()
    out = model(x, t, static, drop)
    (out.v.square().mean() + out.threshold.sum() + out.class_logits.sum()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_ddim_sampling_with_predict_v() -> None:
    model = ABRUNet(signal_length=32, **TINY).eval()
    generator = torch.Generator().manual_seed(1)
    cond = torch.randn(2, 4)
    samples = sample_ddim(model.predict_v, (2, 1, 32), CosineSchedule(1000), 3, 2.0, cond, generator=generator)
    assert samples.shape == (2, 1, 32) and torch.isfinite(samples).all()


def _combined_loss(model: ABRUNet, batch: dict[str, torch.Tensor], schedule: CosineSchedule) -> torch.Tensor:
    """v-MSE on the noisy input plus the clinical heads on the clean one (t = 0)."""
    x0, static = batch["x0"], batch["static"]
    v = model.predict_v(schedule.q_sample(x0, batch["t"], batch["noise"]), batch["t"], static, None)
    out = model(x0, torch.zeros_like(batch["t"]), static)
    present = batch["present"]
    return (
        F.mse_loss(v, schedule.v_target(x0, batch["t"], batch["noise"]))
        + F.binary_cross_entropy_with_logits(out.peak_logit, present.float())
        + masked_gaussian_nll(out.peak_mean, out.peak_log_var, batch["peak"], present[:, None])
        + focal_loss(out.class_logits, batch["label"], class_weights=torch.tensor([0.5, 1.0, 2.0, 2.0, 2.0]))
        + F.huber_loss(out.threshold, batch["threshold"])
    )


def test_a_few_optimizer_steps_reduce_the_combined_loss() -> None:
    batch_size, length = 8, 48
    model = ABRUNet(signal_length=length, dropout=0.0, cfg_dropout=0.0, **TINY)
    schedule = CosineSchedule(1000)
    present = torch.tensor([True, True, False, True, False, True, True, True])
    peak = torch.randn(batch_size, 2)
    peak[~present] = float("nan")
    batch = {
        "x0": torch.sin(torch.linspace(0, 6, length)).expand(batch_size, 1, length) * torch.rand(batch_size, 1, 1),
        "static": torch.randn(batch_size, 4),
        "t": torch.randint(0, 1000, (batch_size,)),
        "noise": torch.randn(batch_size, 1, length),
        "present": present,
        "peak": peak,
        "label": torch.tensor([0, 0, 1, 0, 3, 2, 4, 0]),
        "threshold": torch.randn(batch_size),
    }
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(15):
        loss = _combined_loss(model, batch, schedule)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.6 * losses[0], losses
