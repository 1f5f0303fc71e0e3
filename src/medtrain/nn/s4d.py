"""Diagonal state-space sequence layer (S4D) for 1-D signals: a long causal (or two-sided) convolution whose kernel
comes from a small learned linear ODE per channel.

Reference: Gu, Gupta, Goel, Ré (2022), "On the Parameterization and Initialization of Diagonal State Space Models"
(S4D), and the authors' minimal S4D block. The formula, per channel h (``d_model`` channels) and mode n
(``d_state // 2`` complex modes; each stands for a conjugate pair, so the real state size is ``d_state``):

- continuous system  x'(t) = A x(t) + B u(t),  y(t) = 2·Re(C x(t)) + D u(t)
- A_n = −exp(log_A_real_n) + i·A_imag_n  (S4D-Lin init: A_n = −1/2 + iπn),  B = 1,  C_n complex learned (N(0, 1)
  complex), D learned (N(0, 1)),  Δ = exp(log_dt) per channel with log_dt ~ U[log dt_min, log dt_max]
- zero-order-hold discretisation  Ā_n = exp(Δ A_n),  B̄_n = (exp(Δ A_n) − 1) / A_n · B
- recurrence  x_k = Ā x_{k−1} + B̄ u_k,  y_k = 2·Re(Σ_n C_n x_{k,n}) + D u_k
- equivalently a causal convolution with kernel  K_l = 2·Re(Σ_n C_n (exp(ΔA_n) − 1)/A_n · exp(ΔA_n l)),  l = 0..L−1,
  computed here as  y = (K * u) + D·u  with an FFT of length 2L (no wrap-around).

The kernel is evaluated in real arithmetic (cos/sin of the imaginary parts), so no complex tensors appear in the
parameters or the graph: the module stores as safetensors and exports to ONNX (rfft/irfft map to the ONNX DFT op).

Why our own code: no maintained pip package fits. The authors' code (state-spaces/s4) is not on PyPI; ``lrnnx``
(which has an S4D) compiles custom CUDA kernels at install time and targets CUDA; ``mamba-ssm`` is a selective
(input-dependent) SSM, CUDA only; ``s5-pytorch`` implements S5, a different model; ``s4-torch`` is a single 0.0.1
release; ESPnet's copy drags in a speech toolkit. The layer is ~60 lines and is tested against the direct recurrence.

Training note from the reference: the SSM parameters (``log_dt``, ``log_A_real``, ``A_imag``) are usually trained with
a smaller learning rate (1e-3) and no weight decay; :meth:`S4DLayer.ssm_parameter_names` lists them for optimizer
parameter groups.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["S4DLayer", "s4d_kernel"]


def s4d_kernel(log_dt: Tensor, log_A_real: Tensor, A_imag: Tensor, C: Tensor, length: int) -> Tensor:
    """Convolution kernel of a diagonal SSM with ZOH discretisation and B = 1.

    ``K[..., h, l] = 2·Re(Σ_n C[..., h, n] · (exp(Δ_h A_hn) − 1)/A_hn · exp(Δ_h A_hn · l))`` for ``l = 0..length−1``,
    with ``Δ_h = exp(log_dt[h])`` and ``A_hn = −exp(log_A_real[h, n]) + i·A_imag[h, n]``.

    Args:
        log_dt: ``[H]`` log step sizes.
        log_A_real: ``[H, N]`` log of −Re(A).
        A_imag: ``[H, N]`` Im(A).
        C: ``[..., H, N, 2]`` output projection as (real, imaginary) pairs (``torch.view_as_real`` layout); leading
            dimensions (e.g. one per direction) are kept.
        length: kernel length L.

    Returns:
        ``[..., H, L]`` real kernel, in the dtype of the parameters.
    """
    dt = torch.exp(log_dt).unsqueeze(-1)  # [H, 1]
    a = -torch.exp(log_A_real)  # Re(A) < 0: every mode is stable
    b = A_imag
    dta, dtb = dt * a, dt * b
    # B̄ = (exp(ΔA) − 1) / A  =  (p + iq)(a − ib) / (a² + b²)
    # p = e^{Δa}·cos(Δb) − 1 written without cancellation for small Δ (expm1 and 1 − cos = 2 sin²(·/2))
    p = torch.expm1(dta) * torch.cos(dtb) - 2.0 * torch.sin(0.5 * dtb) ** 2
    q = torch.exp(dta) * torch.sin(dtb)
    denom = a * a + b * b
    bbar_re = (p * a + q * b) / denom
    bbar_im = (q * a - p * b) / denom
    c_re, c_im = C[..., 0], C[..., 1]
    cb_re = c_re * bbar_re - c_im * bbar_im  # [..., H, N]
    cb_im = c_re * bbar_im + c_im * bbar_re
    steps = torch.arange(length, device=log_dt.device, dtype=log_dt.dtype)
    # exp(ΔA·l) = exp(Δa·l)·(cos(Δb·l) + i·sin(Δb·l));  Re((x + iy)(c + is)) = xc − ys
    magnitude = torch.exp(dta.unsqueeze(-1) * steps)  # [H, N, L]
    angle = dtb.unsqueeze(-1) * steps
    vandermonde_re = magnitude * torch.cos(angle)
    vandermonde_im = magnitude * torch.sin(angle)
    kernel = torch.einsum("...hn,hnl->...hl", cb_re, vandermonde_re) - torch.einsum(
        "...hn,hnl->...hl", cb_im, vandermonde_im
    )
    return 2.0 * kernel


class S4DLayer(nn.Module):
    """S4D block on ``[B, d_model, L]`` → ``[B, d_model, L]`` (channels first, any L).

    ``forward(u) = GLU(Conv1x1_{d_model→2·d_model}(Dropout(GELU(ssm(u)))))`` as in the reference S4D block, where
    ``ssm(u) = K * u + D·u`` (see the module docstring). With ``bidirectional=True`` a second output projection C'
    (A and Δ shared) gives an anti-causal kernel K' and ``ssm(u)_i = Σ_l K_l u_{i−l} + Σ_l K'_l u_{i+1+l} + D u_i``.
    Residual connection and normalisation are left to the caller's block. Dropout is channel-wise (the mask is tied
    along the sequence, ``nn.Dropout1d``) as in the reference. The SSM runs in float32 (or float64 for float64
    inputs) and the result is cast back to the input dtype.

    Args:
        d_model: channels H.
        d_state: real state size N per channel (even; N/2 complex conjugate-pair modes).
        dt_min, dt_max: range of the log-uniform initial step size Δ.
        dropout: channel dropout probability after the activation.
        bidirectional: add the anti-causal branch.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dropout: float = 0.0,
        bidirectional: bool = False,
    ) -> None:
        super().__init__()
        if d_model < 1:
            raise ValueError(f"d_model must be positive, got {d_model}")
        if d_state < 2 or d_state % 2:
            raise ValueError(f"d_state must be an even number ≥ 2 (conjugate pairs), got {d_state}")
        if not 0.0 < dt_min <= dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        modes = d_state // 2
        self.d_model = d_model
        self.d_state = d_state
        self.bidirectional = bidirectional
        log_dt = torch.rand(d_model) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = nn.Parameter(log_dt)
        self.log_A_real = nn.Parameter(torch.full((d_model, modes), math.log(0.5)))
        self.A_imag = nn.Parameter(math.pi * torch.arange(modes, dtype=torch.float32).repeat(d_model, 1))
        directions = 2 if bidirectional else 1
        self.C = nn.Parameter(torch.view_as_real(torch.randn(directions, d_model, modes, dtype=torch.cfloat)).clone())
        self.D = nn.Parameter(torch.randn(d_model))
        self.activation = nn.GELU()
        self.dropout: nn.Module = nn.Dropout1d(dropout) if dropout > 0.0 else nn.Identity()
        self.output_linear = nn.Sequential(nn.Conv1d(d_model, 2 * d_model, kernel_size=1), nn.GLU(dim=-2))

    @staticmethod
    def ssm_parameter_names() -> tuple[str, ...]:
        """Names of the SSM parameters that the reference trains with a small learning rate and no weight decay."""
        return ("log_dt", "log_A_real", "A_imag")

    def kernel(self, length: int) -> Tensor:
        """``[directions, d_model, length]`` kernels (direction 0 causal, 1 anti-causal when bidirectional)."""
        return s4d_kernel(self.log_dt, self.log_A_real, self.A_imag, self.C, length)

    def ssm(self, u: Tensor) -> Tensor:
        """The linear part ``K * u (+ K' ⋆ u) + D·u`` on ``[B, d_model, L]``, before activation and projection."""
        if u.ndim != 3 or u.shape[1] != self.d_model:
            raise ValueError(f"expected input [B, {self.d_model}, L], got {tuple(u.shape)}")
        length = u.shape[-1]
        work_dtype = torch.float64 if u.dtype == torch.float64 else torch.float32
        x = u.to(work_dtype)
        k = self.kernel(length).to(work_dtype)
        # kernel laid out on a circle of length 2L: causal taps at 0..L−1, anti-causal tap l at 2L−1−l (lag −(l+1))
        k_full = nn.functional.pad(k[0], (0, length))
        if self.bidirectional:
            k_full = k_full + nn.functional.pad(k[1].flip(-1), (length, 0))
        y = torch.fft.irfft(torch.fft.rfft(x, n=2 * length) * torch.fft.rfft(k_full, n=2 * length), n=2 * length)
        y = y[..., :length] + x * self.D.to(work_dtype).unsqueeze(-1)
        return y.to(u.dtype)

    def forward(self, u: Tensor) -> Tensor:
        """``[B, d_model, L]`` → ``[B, d_model, L]``; see the class docstring."""
        return self.output_linear(self.dropout(self.activation(self.ssm(u))))
