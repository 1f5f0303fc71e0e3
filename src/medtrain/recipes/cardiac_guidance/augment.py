"""Label-safe ultrasound augmentation for cardiac-guidance batches, run on the batch's device.

The labels are 6-DOF probe motions relative to the frame's pose, so an augmentation may change how a frame *looks*
but not *where the anatomy is* in it. :class:`LabelSafeAugment` offers only:

* **strictly label-safe** — intensity transforms, which move no anatomy, so every 6-DOF label stays exactly true:
  gain (``x · k``, ``k`` log-uniform in ``gain``), gamma (``x ** g``, ``g`` log-uniform in ``gamma``), speckle
  (``x · max(0, 1 + speckle · n)`` with ``n ~ N(0, 1)`` per pixel: a multiplicative field of mean 1 clipped at 0,
  like the multiplicative nature of real speckle and gain variations between scanners) and additive Gaussian noise
  of standard deviation ``noise_std`` (electronic noise);
* **approximately label-safe** — an integer shift of up to ``max_shift`` pixels along each axis with zero fill.
  Shifting the picture by ``s`` pixels is what an in-plane probe translation of ``s ·`` pixel spacing would do (up
  to the sector's edge and the depth attenuation, which do not move), so it adds an error of up to ``max_shift ·``
  spacing in x and z to the labels. Keep ``max_shift`` small against the label noise (at 224 px over a 140 mm field,
  4 px ≈ 2.5 mm); ``max_shift=0`` turns it off.

Not offered, on purpose: rotations, flips and scaling. A flip mirrors lateral (and with it the sign of x, yaw and
roll), a rotation is an in-plane probe rotation (pitch) and a scaling is a change of depth: each describes another
pose than the one the labels were measured at, so the labels would be wrong.

Each transform is applied to each sample independently with probability ``probability``; a parameter at its neutral
value (``gain=(1, 1)``, ``gamma=(1, 1)``, ``speckle=0``, ``noise_std=0``, ``max_shift=0``) disables its transform,
and with every transform disabled the output is the input, unchanged. Random numbers come from torch's global
generator for the images' device (``torch.rand(..., device=images.device)``), so the training engine's RNG-state
checkpoints make the augmentation reproducible. The transforms run in the order gain, gamma, speckle, noise, shift;
the result is clipped to [0, 1]. Everything is vectorised over the batch (the shift is one gather).
"""

from __future__ import annotations

import math

import torch


class LabelSafeAugment(torch.nn.Module):
    """Ultrasound intensity transforms and small shifts on ``[B, 1, H, W]`` batches in [0, 1] (see the module)."""

    def __init__(
        self,
        *,
        probability: float = 0.5,
        gain: tuple[float, float] = (0.8, 1.25),
        gamma: tuple[float, float] = (0.8, 1.25),
        speckle: float = 0.1,
        noise_std: float = 0.02,
        max_shift: int = 4,
    ) -> None:
        super().__init__()
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {probability}")
        for name, (low, high) in (("gain", gain), ("gamma", gamma)):
            if not 0.0 < low <= high:
                raise ValueError(f"{name} must be a range (low, high) with 0 < low <= high, got {(low, high)}")
        if speckle < 0.0 or noise_std < 0.0:
            raise ValueError(f"speckle and noise_std must be >= 0, got {speckle} and {noise_std}")
        if int(max_shift) != max_shift or max_shift < 0:
            raise ValueError(f"max_shift must be a non-negative integer, got {max_shift}")
        self.probability = float(probability)
        self.gain = (float(gain[0]), float(gain[1]))
        self.gamma = (float(gamma[0]), float(gamma[1]))
        self.speckle = float(speckle)
        self.noise_std = float(noise_std)
        self.max_shift = int(max_shift)

    def extra_repr(self) -> str:
        return (
            f"probability={self.probability}, gain={self.gain}, gamma={self.gamma}, speckle={self.speckle}, "
            f"noise_std={self.noise_std}, max_shift={self.max_shift}"
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Augmented copy of ``images`` (float ``[B, 1, H, W]`` in [0, 1]): same shape, dtype and device, in [0, 1].

        Per sample ``b`` and transform, with probability ``probability``: ``x ← x · k_b`` with
        ``log k_b ~ U(log gain)``; ``x ← x ** g_b`` with ``log g_b ~ U(log gamma)``; ``x ← x · max(0, 1 + speckle ·
        n)`` with ``n ~ N(0, 1)`` per pixel; ``x ← x + noise_std · n``; ``x[i, j] ← x[i - dy_b, j - dx_b]`` (0 where
        that falls outside) with ``dy_b, dx_b`` uniform integers in ``[-max_shift, max_shift]``. Then clip to
        [0, 1]. Returns ``images`` itself when every transform is disabled or ``probability`` is 0.
        """
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"expected images of shape [B, 1, H, W], got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise ValueError(f"expected floating-point images in [0, 1], got {images.dtype}")
        active = self.probability > 0.0 and (
            self.gain != (1.0, 1.0)
            or self.gamma != (1.0, 1.0)
            or self.speckle > 0.0
            or self.noise_std > 0.0
            or self.max_shift > 0
        )
        if not active:
            return images
        out = images
        if self.gain != (1.0, 1.0):
            out = out * self._log_uniform(images, self.gain)
        if self.gamma != (1.0, 1.0):
            # clamp first: a gain above 1 may have pushed values over 1, and x ** g needs x >= 0
            out = out.clamp(0.0, 1.0) ** self._log_uniform(images, self.gamma)
        if self.speckle > 0.0:
            field = (1.0 + self.speckle * torch.randn_like(out)).clamp_min(0.0)
            out = torch.where(self._chosen(images), out * field, out)
        if self.noise_std > 0.0:
            out = out + self._chosen(images) * (self.noise_std * torch.randn_like(out))
        if self.max_shift > 0:
            out = self._shift(out)
        return out.clamp(0.0, 1.0)

    # ------------------------------------------------------------------------------------------------------ helpers

    def _chosen(self, images: torch.Tensor) -> torch.Tensor:
        """Bool ``[B, 1, 1, 1]``: which samples get the current transform (each with ``probability``)."""
        return torch.rand(images.shape[0], 1, 1, 1, device=images.device) < self.probability

    def _log_uniform(self, images: torch.Tensor, bounds: tuple[float, float]) -> torch.Tensor:
        """Per-sample factors ``[B, 1, 1, 1]``: log-uniform in ``bounds`` for chosen samples, 1 for the others."""
        low, high = math.log(bounds[0]), math.log(bounds[1])
        draw = torch.rand(images.shape[0], 1, 1, 1, device=images.device, dtype=images.dtype)
        factor = torch.exp(low + (high - low) * draw)
        return torch.where(self._chosen(images), factor, torch.ones_like(factor))

    def _shift(self, images: torch.Tensor) -> torch.Tensor:
        """Shift each chosen sample by integer ``(dy, dx)`` in ``[-max_shift, max_shift]``², filling with zeros.

        One gather on a zero-padded copy: ``out[b, 0, i, j] = padded[b, 0, i + m - dy_b, j + m - dx_b]`` with
        ``m = max_shift``, which is 0 wherever ``(i - dy_b, j - dx_b)`` lies outside the image.
        """
        batch, _, height, width = images.shape
        m = self.max_shift
        offsets = torch.randint(-m, m + 1, (batch, 2), device=images.device)
        offsets = offsets * self._chosen(images).view(batch, 1)
        padded = torch.nn.functional.pad(images, (m, m, m, m))
        rows = torch.arange(height, device=images.device).view(1, height) + m - offsets[:, :1]  # [B, H]
        cols = torch.arange(width, device=images.device).view(1, width) + m - offsets[:, 1:]  # [B, W]
        flat = rows[:, :, None] * (width + 2 * m) + cols[:, None, :]  # [B, H, W] indices into padded rows
        gathered = padded.reshape(batch, -1).gather(1, flat.reshape(batch, -1))
        return gathered.view(batch, 1, height, width)
