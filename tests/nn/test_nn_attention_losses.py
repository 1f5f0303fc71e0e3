"""Attention blocks (transformer formula, permutation equivariance, row independence, soft-argmax pooling) and the
losses (focal loss against cross-entropy and hand values, masked Gaussian NLL ignoring absent peaks, ramp table)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from medtrain.nn.attention import AttentionPool1d, SelfAttention1d
from medtrain.nn.losses import focal_loss, masked_gaussian_nll, ramp_weight

pytestmark = pytest.mark.usefixtures("seeded_one_thread")


# ------------------------------------------------------------------------------------------------------- attention


@pytest.mark.parametrize(("channels", "heads", "length"), [(8, 2, 13), (16, 4, 1), (6, 1, 200)])
def test_self_attention_keeps_shape(channels: int, heads: int, length: int) -> None:
    block = SelfAttention1d(channels, num_heads=heads)
    assert block(torch.randn(3, channels, length)).shape == (3, channels, length)


def test_self_attention_matches_the_pre_norm_formula() -> None:
    channels, heads, length = 8, 2, 5
    block = SelfAttention1d(channels, num_heads=heads, mlp_ratio=2.0).eval()
    x = torch.randn(2, channels, length, dtype=torch.float64)
    block.double()
    h = x.transpose(1, 2)
    q, k, v = (block.norm1(h) @ block.qkv.weight.T + block.qkv.bias).split(channels, dim=-1)
    d = channels // heads
    outs = []
    for i in range(heads):
        sl = slice(i * d, (i + 1) * d)
        weights = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(d), dim=-1)
        outs.append(weights @ v[..., sl])
    h = h + torch.cat(outs, dim=-1) @ block.proj.weight.T + block.proj.bias
    lin1, lin2 = block.mlp[0], block.mlp[3]
    h = h + lin2(F.gelu(lin1(block.norm2(h))))
    torch.testing.assert_close(block(x), h.transpose(1, 2))


def test_self_attention_is_permutation_equivariant_and_rows_independent() -> None:
    block = SelfAttention1d(8, num_heads=2).eval()
    x = torch.randn(3, 8, 11)
    perm = torch.randperm(11)
    with torch.no_grad():
        out = block(x)
        torch.testing.assert_close(block(x[..., perm]), out[..., perm], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(block(x[1:2]), out[1:2], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("channels", "heads"), [(6, 4), (0, 1), (4, 0)])
def test_self_attention_rejects_bad_sizes(channels: int, heads: int) -> None:
    with pytest.raises(ValueError, match="num_heads"):
        SelfAttention1d(channels, num_heads=heads)


def test_attention_pool_uniform_scores_give_the_mean_and_the_centre() -> None:
    pool = AttentionPool1d(4, num_queries=3)
    with torch.no_grad():
        pool.score.weight.zero_()
        pool.score.bias.zero_()
    x = torch.randn(2, 4, 9)
    pooled, position = pool(x)
    assert pooled.shape == (2, 3, 4) and position.shape == (2, 3)
    torch.testing.assert_close(pooled, x.mean(dim=-1, keepdim=True).transpose(1, 2).expand(2, 3, 4))
    torch.testing.assert_close(position, torch.full((2, 3), 0.5))


# (length, index of the spike) → soft-argmax position l / max(L − 1, 1)
@pytest.mark.parametrize(("length", "index", "expected"), [(5, 0, 0.0), (5, 4, 1.0), (11, 3, 0.3), (1, 0, 0.0)])
def test_attention_pool_position_is_the_soft_argmax(length: int, index: int, expected: float) -> None:
    pool = AttentionPool1d(2, num_queries=1)
    with torch.no_grad():
        pool.score.weight.copy_(torch.tensor([[[100.0], [0.0]]]))  # score = 100 · channel 0
        pool.score.bias.zero_()
    x = torch.zeros(1, 2, length)
    x[0, 0, index] = 1.0
    x[0, 1] = torch.arange(length, dtype=torch.float32)
    pooled, position = pool(x)
    torch.testing.assert_close(position, torch.tensor([[expected]]))
    torch.testing.assert_close(pooled[0, 0, 1], torch.tensor(float(index)), rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------------------------- focal


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_focal_with_gamma_zero_is_cross_entropy(reduction: str, weighted: bool) -> None:
    logits = torch.randn(16, 5, dtype=torch.float64) * 3
    target = torch.randint(0, 5, (16,))
    weights = torch.tensor([0.2, 1.0, 3.0, 0.5, 2.0], dtype=torch.float64) if weighted else None
    got = focal_loss(logits, target, gamma=0.0, class_weights=weights, reduction=reduction)  # type: ignore[arg-type]
    torch.testing.assert_close(got, F.cross_entropy(logits, target, weight=weights, reduction=reduction))


# two classes with logits (0, ln 3): p = (1/4, 3/4). Rows: target 0 (p_t = 1/4) and target 1 (p_t = 3/4).
_L0, _L1 = math.log(4.0), math.log(4.0 / 3.0)  # −log p_t


@pytest.mark.parametrize(
    ("gamma", "weights", "reduction", "expected"),
    [
        (2.0, None, "none", [(3 / 4) ** 2 * _L0, (1 / 4) ** 2 * _L1]),
        (1.0, None, "sum", [(3 / 4) * _L0 + (1 / 4) * _L1]),
        (2.0, None, "mean", [((3 / 4) ** 2 * _L0 + (1 / 4) ** 2 * _L1) / 2]),
        (2.0, [2.0, 0.5], "none", [2.0 * (3 / 4) ** 2 * _L0, 0.5 * (1 / 4) ** 2 * _L1]),
        (2.0, [2.0, 0.5], "mean", [(2.0 * (3 / 4) ** 2 * _L0 + 0.5 * (1 / 4) ** 2 * _L1) / 2.5]),
        (0.5, [1.0, 0.0], "sum", [(3 / 4) ** 0.5 * _L0]),
    ],
)
def test_focal_loss_hand_values(
    gamma: float, weights: list[float] | None, reduction: str, expected: list[float]
) -> None:
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(3.0)]], dtype=torch.float64)
    target = torch.tensor([0, 1])
    alpha = None if weights is None else torch.tensor(weights, dtype=torch.float64)
    got = focal_loss(logits, target, gamma=gamma, class_weights=alpha, reduction=reduction)  # type: ignore[arg-type]
    torch.testing.assert_close(got.reshape(-1), torch.tensor(expected, dtype=torch.float64))


def test_focal_loss_down_weights_easy_rows_and_has_finite_gradients() -> None:
    logits = torch.tensor([[30.0, -30.0, 0.0], [0.1, 0.0, -0.1]], requires_grad=True)
    target = torch.tensor([0, 2])
    focal = focal_loss(logits, target, reduction="none")
    ce = F.cross_entropy(logits, target, reduction="none")
    assert (focal <= ce).all() and focal[0] < 1e-20
    focal.sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"gamma": -1.0}, "gamma"),
        ({"reduction": "max"}, "reduction"),
        ({"class_weights": torch.ones(2)}, "class_weights"),
    ],
)
def test_focal_loss_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        focal_loss(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), **kwargs)


# ------------------------------------------------------------------------------------------------- masked NLL


# (μ, log σ², y) → ½(log σ² + (y − μ)²/σ²)
@pytest.mark.parametrize(
    ("mean", "log_var", "target", "expected"),
    [
        (0.0, 0.0, 1.0, 0.5),
        (0.0, math.log(4.0), 2.0, 0.5 * (math.log(4.0) + 1.0)),
        (1.5, -2.0, 1.5, -1.0),
        (-1.0, 1.0, 2.0, 0.5 * (1.0 + 9.0 / math.e)),
    ],
)
def test_masked_nll_single_entry_formula(mean: float, log_var: float, target: float, expected: float) -> None:
    t = torch.tensor
    got = masked_gaussian_nll(t([mean]), t([log_var]), t([target]), t([True]))
    torch.testing.assert_close(got, t(expected))


def test_masked_nll_ignores_absent_peaks() -> None:
    mean = torch.randn(6, 2, requires_grad=True)
    log_var = torch.randn(6, 2, requires_grad=True)
    present = torch.tensor([True, False, True, False, False, True])
    target = torch.randn(6, 2)
    target[~present] = float("nan")  # absent wave V: latency and amplitude are NaN
    loss = masked_gaussian_nll(mean, log_var, target, present[:, None])
    rows = present.nonzero()[:, 0]
    expected = (0.5 * (log_var[rows] + (target[rows] - mean[rows]) ** 2 / log_var[rows].exp())).mean()
    torch.testing.assert_close(loss, expected)
    loss.backward()
    for grad in (mean.grad, log_var.grad):
        assert grad is not None and torch.isfinite(grad).all()
        assert (grad[~present] == 0).all() and (grad[present] != 0).all()


def test_masked_nll_empty_mask_is_zero_with_zero_gradients() -> None:
    mean = torch.randn(3, 2, requires_grad=True)
    log_var = torch.zeros(3, 2, requires_grad=True)
    loss = masked_gaussian_nll(mean, log_var, torch.full((3, 2), float("nan")), torch.zeros(3, 2, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert mean.grad is not None and (mean.grad == 0).all()


def test_masked_nll_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="one shape"):
        masked_gaussian_nll(torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(3), torch.ones(3, dtype=torch.bool))


# ------------------------------------------------------------------------------------------------------------ ramp


@pytest.mark.parametrize(
    ("epoch", "weight", "start", "ramp", "expected"),
    [
        (0.0, 2.0, 0.0, 0.0, 2.0),  # no curriculum: full weight from the start
        (5.0, 2.0, 0.0, 0.0, 2.0),
        (0.0, 1.0, 0.0, 10.0, 0.0),  # ramp begins at 0
        (2.5, 1.0, 0.0, 10.0, 0.25),
        (10.0, 1.0, 0.0, 10.0, 1.0),
        (50.0, 1.0, 0.0, 10.0, 1.0),
        (4.9, 0.8, 5.0, 4.0, 0.0),  # before the start
        (5.0, 0.8, 5.0, 4.0, 0.0),
        (7.0, 0.8, 5.0, 4.0, 0.4),
        (9.0, 0.8, 5.0, 4.0, 0.8),
        (2.0, 3.0, 3.0, 0.0, 0.0),  # a step at start_epoch
        (3.0, 3.0, 3.0, 0.0, 3.0),
    ],
)
def test_ramp_weight_table(epoch: float, weight: float, start: float, ramp: float, expected: float) -> None:
    assert ramp_weight(epoch, weight=weight, start_epoch=start, ramp_epochs=ramp) == pytest.approx(expected)


def test_ramp_weight_rejects_negative_ramp() -> None:
    with pytest.raises(ValueError, match="ramp_epochs"):
        ramp_weight(1.0, weight=1.0, ramp_epochs=-1.0)
