"""S4D layer: the FFT convolution equals the discretised recurrence, the kernel matches its closed form, init and
shapes follow the paper's S4D-Lin recipe."""

from __future__ import annotations

import math

import pytest
import torch

from medtrain.nn.s4d import S4DLayer, s4d_kernel


def _complex_params(layer: S4DLayer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dt = torch.exp(layer.log_dt.detach()).to(torch.float64)[:, None]
    A = -torch.exp(layer.log_A_real.detach().to(torch.float64)) + 1j * layer.A_imag.detach().to(torch.float64)
    C = torch.view_as_complex(layer.C.detach().to(torch.float64).contiguous())  # [dirs, H, N]
    return dt, A, C


def _recurrence(u: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """x_k = Ā x_{k−1} + B̄ u_k, y_k = 2 Re(C x_k), step by step (ZOH, B = 1)."""
    a_bar = torch.exp(dt * A)  # [H, N]
    b_bar = (a_bar - 1) / A
    x = torch.zeros(u.shape[0], *A.shape, dtype=torch.complex128)
    ys = []
    for k in range(u.shape[-1]):
        x = a_bar * x + b_bar * u[:, :, k, None]
        ys.append(2 * (C * x).sum(-1).real)
    return torch.stack(ys, dim=-1)


def _randomised_layer(d_model: int, d_state: int, bidirectional: bool, seed: int) -> S4DLayer:
    torch.manual_seed(seed)
    layer = S4DLayer(d_model, d_state, dt_min=1e-2, dt_max=0.5, bidirectional=bidirectional).double()
    with torch.no_grad():  # move away from the structured init so the test covers general A
        layer.log_A_real.add_(0.5 * torch.randn_like(layer.log_A_real))
        layer.A_imag.add_(torch.randn_like(layer.A_imag))
    return layer


@pytest.mark.parametrize(
    ("d_model", "d_state", "length", "seed"),
    [(1, 2, 5, 0), (3, 4, 17, 1), (4, 8, 32, 2), (2, 16, 64, 3)],
)
def test_fft_convolution_equals_recurrence(d_model: int, d_state: int, length: int, seed: int) -> None:
    layer = _randomised_layer(d_model, d_state, bidirectional=False, seed=seed)
    u = torch.randn(2, d_model, length, dtype=torch.float64)
    dt, A, C = _complex_params(layer)
    expected = _recurrence(u, dt, A, C[0]) + layer.D.detach()[:, None] * u
    torch.testing.assert_close(layer.ssm(u), expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(("d_model", "d_state", "length", "seed"), [(2, 4, 9, 4), (3, 8, 24, 5)])
def test_bidirectional_adds_anticausal_recurrence(d_model: int, d_state: int, length: int, seed: int) -> None:
    layer = _randomised_layer(d_model, d_state, bidirectional=True, seed=seed)
    u = torch.randn(2, d_model, length, dtype=torch.float64)
    dt, A, C = _complex_params(layer)
    forward = _recurrence(u, dt, A, C[0])
    # backward branch: run the recurrence on the reversed sequence; output i sees u_{i+1}, u_{i+2}, … (not u_i)
    rev = _recurrence(u.flip(-1), dt, A, C[1])  # rev[j] = Σ_l K'_l u[L−1−j+l]
    backward = torch.zeros_like(forward)
    backward[..., : length - 1] = rev[..., : length - 1].flip(-1)  # position i ← rev[L−2−i]
    expected = forward + backward + layer.D.detach()[:, None] * u
    torch.testing.assert_close(layer.ssm(u), expected, rtol=1e-9, atol=1e-9)


# one real mode: A = −1/2, C = 1 ⇒ K_l = 2·(e^{−Δ/2} − 1)/(−1/2)·e^{−Δl/2} = 4(1 − e^{−Δ/2})·e^{−Δl/2}
@pytest.mark.parametrize("dt", [1e-3, 0.1, 1.0])
def test_kernel_single_real_mode_closed_form(dt: float) -> None:
    log_dt = torch.tensor([math.log(dt)], dtype=torch.float64)
    log_a = torch.tensor([[math.log(0.5)]], dtype=torch.float64)
    a_imag = torch.zeros(1, 1, dtype=torch.float64)
    C = torch.tensor([[[1.0, 0.0]]], dtype=torch.float64)
    k = s4d_kernel(log_dt, log_a, a_imag, C, 6)
    expected = torch.tensor(
        [[4 * (1 - math.exp(-dt / 2)) * math.exp(-dt * lag / 2) for lag in range(6)]], dtype=torch.float64
    )
    torch.testing.assert_close(k, expected, rtol=1e-12, atol=1e-15)


def test_kernel_matches_complex_formula_with_leading_dims() -> None:
    g = torch.Generator().manual_seed(7)
    H, N, L = 3, 5, 11
    log_dt = torch.randn(H, generator=g, dtype=torch.float64) - 2
    log_a = torch.randn(H, N, generator=g, dtype=torch.float64)
    a_imag = 3 * torch.randn(H, N, generator=g, dtype=torch.float64)
    C = torch.randn(2, H, N, 2, generator=g, dtype=torch.float64)
    A = -torch.exp(log_a) + 1j * a_imag
    dtA = torch.exp(log_dt)[:, None] * A
    Cc = torch.view_as_complex(C)
    expected = (
        2
        * torch.einsum("dhn,hnl->dhl", Cc * (torch.exp(dtA) - 1) / A, torch.exp(dtA[..., None] * torch.arange(L))).real
    )
    torch.testing.assert_close(s4d_kernel(log_dt, log_a, a_imag, C, L), expected, rtol=1e-10, atol=1e-12)


def test_s4d_lin_initialisation() -> None:
    torch.manual_seed(0)
    layer = S4DLayer(d_model=16, d_state=8, dt_min=1e-3, dt_max=1e-1)
    A = -torch.exp(layer.log_A_real) + 1j * layer.A_imag
    expected = (-0.5 + 1j * math.pi * torch.arange(4)).expand(16, 4)
    torch.testing.assert_close(A, expected.to(A.dtype))
    dt = torch.exp(layer.log_dt)
    assert dt.min() >= 1e-3 * (1 - 1e-6) and dt.max() <= 1e-1 * (1 + 1e-6)
    assert tuple(layer.C.shape) == (1, 16, 4, 2)
    assert tuple(S4DLayer(16, 8, bidirectional=True).C.shape) == (2, 16, 4, 2)
    assert not any(p.is_complex() for p in layer.parameters())
    assert set(S4DLayer.ssm_parameter_names()) <= {name for name, _ in layer.named_parameters()}


@pytest.mark.parametrize(
    ("bidirectional", "dropout", "dtype"),
    [(False, 0.0, torch.float32), (True, 0.1, torch.float32), (False, 0.0, torch.float64)],
)
def test_forward_shape_dtype_and_gradients(bidirectional: bool, dropout: float, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    layer = S4DLayer(8, 16, dropout=dropout, bidirectional=bidirectional).to(dtype)
    u = torch.randn(3, 8, 200, dtype=dtype)
    y = layer(u)
    assert y.shape == u.shape and y.dtype == dtype
    y.square().mean().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(("bidirectional", "past_changes"), [(False, False), (True, True)])
def test_causality(bidirectional: bool, past_changes: bool) -> None:
    torch.manual_seed(0)
    layer = S4DLayer(4, 8, bidirectional=bidirectional).eval()
    u = torch.randn(1, 4, 40)
    v = u.clone()
    v[..., 25] += 1.0
    dy = (layer(u) - layer(v)).abs()
    assert bool(dy[..., :25].max() > 1e-6) is past_changes
    assert dy[..., 25:].max() > 1e-6


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"d_model": 4, "d_state": 3}, "even"),
        ({"d_model": 0}, "d_model"),
        ({"d_model": 4, "dt_min": 0.2, "dt_max": 0.1}, "dt_min"),
    ],
)
def test_bad_arguments(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        S4DLayer(**kwargs)  # type: ignore[arg-type]


def test_wrong_channel_count_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\[B, 4, L\]"):
        S4DLayer(4)(torch.randn(2, 5, 10))


def test_float32_agrees_with_float64_at_default_init() -> None:
    """The real-arithmetic kernel (expm1 form of B̄) keeps float32 close to float64 even for Δ near dt_min."""
    torch.manual_seed(0)
    layer = S4DLayer(32, 64, dt_min=1e-4, dt_max=1e-1, bidirectional=True)
    double = S4DLayer(32, 64, bidirectional=True).double()
    double.load_state_dict(layer.state_dict())
    u = torch.randn(2, 32, 200)
    torch.testing.assert_close(layer.ssm(u).double(), double.ssm(u.double()), rtol=1e-4, atol=1e-4)
