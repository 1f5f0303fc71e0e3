"""Training augmentation for volume-seg: nnU-Net's augmentation pipeline as MONAI dictionary transforms.

The spatial transforms move the image, every label and every mask together (one sampled transform per call);
the intensity transforms touch the image only. In nnU-Net's order, each step with its own probability
(:data:`NNUNET_PROBABILITIES`):

1. rotation and scaling in **one** resampling (:func:`rand_rotate_scaled`, a MONAI randomizable dictionary
   transform resampling all keys with one ``torch.nn.functional.grid_sample`` per interpolation mode, about twice
   as fast as MONAI's ``Resample`` key by key): rotation and scaling are triggered independently (as nnU-Net;
   MONAI's ``RandAffined`` has one probability and per-axis scales), the angle per rotation axis
   ~ U(±``rotation_degrees``), one isotropic scale factor ~ U(``scale_range``) where ``s > 1`` shrinks the content
   (samples a region ``s×`` larger), as nnU-Net.
   Bilinear for the image, nearest for labels and masks; voxels from outside the patch are 0 in every key, so
   padded mask voxels are invalid;
2. optional elastic deformation (``Rand3DElasticd``: σ ~ U(9, 13), magnitude ~ U(0, 200), nnU-Net v1's values;
   ``Rand2DElasticd``: control points every 16 pixels, magnitude ~ U(0, 2)), same interpolation and padding;
3. Gaussian noise (``RandGaussianNoised``, σ ~ U(0, ``noise_std[1]``));
4. Gaussian blur (``RandGaussianSmoothd``, σ per axis ~ U(``blur_sigma``));
5. brightness: ``x · m``, m ~ U(``brightness``) (``RandScaleIntensityd``);
6. contrast: ``(x − mean) · c + mean`` clipped to the original range, c ~ U(``contrast``)
   (``RandScaleIntensityFixedMeand``, nnU-Net's ContrastAugmentationTransform);
7. low resolution: nearest down-sampling by a zoom ~ U(``low_resolution``) and linear up-sampling
   (``RandSimulateLowResolutiond``);
8. gamma on the inverted image, then gamma: ``x → min + range · ((x − min) / range)^γ``, γ ~ U(``gamma``), mean and
   standard deviation restored (``RandAdjustContrastd`` with ``retain_stats``);
9. mirroring, each axis in ``mirror_axes`` independently (``RandFlipd``).

Input: a dict whose image/label/mask entries are numpy arrays or tensors ``[C, *spatial]`` (other entries pass
through untouched). Output: those entries as plain (non-Meta) ``torch.float32`` tensors ``[C, *spatial]`` of the
same shape; labels and masks keep exactly their input values (nearest interpolation, zero padding).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["NNUNET_PROBABILITIES", "VolumeAugmentation", "build_train_augmentation", "rand_rotate_scaled"]

NNUNET_PROBABILITIES: dict[str, float] = {
    "rotation": 0.2,
    "scale": 0.2,
    "elastic": 0.2,  # used only with elastic=True (nnU-Net v2 does not deform elastically)
    "noise": 0.1,
    "blur": 0.2,
    "brightness": 0.15,
    "contrast": 0.15,
    "low_resolution": 0.25,
    "gamma_inverted": 0.1,
    "gamma": 0.3,
    "mirror": 0.5,  # per axis
}
"""nnU-Net v2's per-sample probabilities (``nnUNetTrainer.get_training_transforms``); keys of ``probabilities``."""


def rotation_scale_matrix(angles: Sequence[float] | None, scale: float | None, spatial_dims: int) -> np.ndarray:
    """The ``spatial_dims × spatial_dims`` matrix ``s · R`` mapping output to input voxel offsets from the centre.

    Axes in medtrain's order ((z, y, x) or (y, x)). 3-D: ``R = R_0(a_0) · R_1(a_1) · R_2(a_2)``, ``R_k`` the rotation
    by ``a_k`` radians about spatial axis ``k`` (in the plane of the other two); 2-D: one angle in the (y, x)
    plane. ``None`` means no rotation / scale 1.
    """
    matrix = np.eye(spatial_dims)
    planes = [(1, 2), (0, 2), (0, 1)] if spatial_dims == 3 else [(0, 1)]
    for angle, (i, j) in zip(angles or (), planes, strict=False):
        rotation = np.eye(spatial_dims)
        rotation[i, i] = rotation[j, j] = math.cos(angle)
        rotation[i, j], rotation[j, i] = -math.sin(angle), math.sin(angle)
        matrix = matrix @ rotation
    return matrix * (1.0 if scale is None else scale)


def resample_affine(tensors: Sequence[torch.Tensor], matrix: np.ndarray, modes: Sequence[str]) -> list[torch.Tensor]:
    """Resample ``[C, *spatial]`` tensors on one grid: output voxel at offset ``o`` from the centre takes the input
    at ``matrix · o`` (voxel units), ``"bilinear"`` or ``"nearest"`` per tensor, 0 outside the input.

    One ``grid_sample`` per mode (tensors of a mode are stacked along channels); ``align_corners=False``.
    """
    spatial = tuple(tensors[0].shape[1:])
    half = np.array(spatial, dtype=float) / 2
    normalised = (matrix * half[None, :]) / half[:, None]  # diag(2/size) · M · diag(size/2)
    theta = np.zeros((len(spatial), len(spatial) + 1))
    theta[:, :-1] = normalised[::-1, ::-1]  # grid_sample's coordinates are (x, y[, z])
    grid = torch.nn.functional.affine_grid(
        torch.as_tensor(theta, dtype=torch.float32)[None], [1, 1, *spatial], align_corners=False
    )
    out: list[torch.Tensor | None] = [None] * len(tensors)
    for mode in dict.fromkeys(modes):
        chosen = [k for k, m in enumerate(modes) if m == mode]
        stacked = torch.cat([tensors[k] for k in chosen])[None]
        result = torch.nn.functional.grid_sample(stacked, grid, mode=mode, padding_mode="zeros", align_corners=False)
        for k, part in zip(chosen, torch.split(result[0], [tensors[k].shape[0] for k in chosen]), strict=True):
            out[k] = part
    return out  # type: ignore[return-value]


@functools.cache
def _rotate_scale_class() -> type:
    """The transform class of :func:`rand_rotate_scaled`, defined on first use so that MONAI loads lazily."""
    from monai.transforms import MapTransform, RandomizableTransform

    class _RandRotateScaled(RandomizableTransform, MapTransform):
        def __init__(
            self,
            keys: Sequence[Hashable],
            modes: Sequence[str],
            rotation_radians: Sequence[float],
            scale_range: tuple[float, float],
            prob_rotation: float,
            prob_scale: float,
        ) -> None:
            MapTransform.__init__(self, keys)
            RandomizableTransform.__init__(self, prob=1.0)
            self.modes, self.rotation_radians, self.scale_range = list(modes), list(rotation_radians), scale_range
            self.prob_rotation, self.prob_scale = prob_rotation, prob_scale
            self.angles: list[float] | None = None
            self.scale: float | None = None

        def randomize(self, data: Any = None) -> None:
            rotate = self.R.random_sample() < self.prob_rotation
            scale = self.R.random_sample() < self.prob_scale
            self.angles = [float(self.R.uniform(-r, r)) for r in self.rotation_radians] if rotate else None
            self.scale = float(self.R.uniform(*self.scale_range)) if scale else None

        def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
            self.randomize()
            out = dict(data)
            if self.angles is None and self.scale is None:
                return out
            tensors = [torch.as_tensor(out[key], dtype=torch.float32) for key in self.keys]
            matrix = rotation_scale_matrix(self.angles, self.scale, tensors[0].ndim - 1)
            for key, value in zip(self.keys, resample_affine(tensors, matrix, self.modes), strict=True):
                out[key] = value
            return out

    return _RandRotateScaled


def rand_rotate_scaled(
    keys: Sequence[Hashable],
    modes: Sequence[str],
    rotation_radians: Sequence[float],
    scale_range: tuple[float, float],
    prob_rotation: float,
    prob_scale: float,
) -> Any:
    """A MONAI randomizable dictionary transform: rotation and/or scaling of ``keys`` in one resampling.

    With probability ``prob_rotation`` the angles (radians, one per rotation axis: 1 in 2-D, 3 in 3-D, see
    :func:`rotation_scale_matrix`) are drawn from U(±``rotation_radians``); independently with probability
    ``prob_scale`` one isotropic factor from U(``scale_range``). All keys are resampled on the same grid
    (:func:`resample_affine`) with their mode (``modes``); untriggered calls return the input unchanged.
    """
    return _rotate_scale_class()(keys, modes, rotation_radians, scale_range, prob_rotation, prob_scale)


class VolumeAugmentation:
    """The composed augmentation (from :func:`build_train_augmentation`): call it on a sample dict.

    ``reseed(seed)`` resets the random state of every transform (``Compose.set_random_state``), so the sequence of
    outputs is a function of the seed; call it per worker / per epoch with distinct seeds.
    """

    def __init__(self, compose: Any, keys: Sequence[str], seed: int) -> None:
        self.compose, self.keys = compose, tuple(keys)
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Reset the random state of all transforms from ``seed``."""
        self.compose.set_random_state(seed=int(seed) % 2**32)

    def __call__(self, sample: Mapping[str, Any]) -> dict[str, Any]:
        """Augment ``sample``'s image, labels and masks (see the module docstring for input and output types).

        MONAI's metadata tracking is switched off during the call (``set_track_meta(False)``, restored after): it
        costs more than the transforms on small patches and nothing here reads the metadata.
        """
        from monai.data import get_track_meta, set_track_meta

        data = dict(sample)
        for key in self.keys:
            value = data[key] if torch.is_tensor(data[key]) else np.ascontiguousarray(data[key])
            data[key] = torch.as_tensor(value).to(torch.float32)
        tracking = get_track_meta()
        set_track_meta(False)
        try:
            data = self.compose(data)
        finally:
            set_track_meta(tracking)
        for key in self.keys:
            value = data[key]
            value = value.as_tensor() if hasattr(value, "as_tensor") else torch.as_tensor(value)
            data[key] = value.to(torch.float32).contiguous()
        return data


def _range(name: str, values: Sequence[float], low: float = -math.inf) -> tuple[float, float]:
    pair = tuple(float(v) for v in values)
    if len(pair) != 2 or not low <= pair[0] <= pair[1]:
        raise ValueError(
            f"build_train_augmentation: {name} {tuple(values)} must be (low, high) with {low} ≤ low ≤ high"
        )
    return pair  # type: ignore[return-value]


def build_train_augmentation(
    *,
    spatial_dims: int,
    image_key: str = "image",
    label_keys: Sequence[str] = (),
    mask_keys: Sequence[str] = (),
    probabilities: Mapping[str, float] | None = None,
    rotation_degrees: float | Sequence[float] | None = None,
    scale_range: tuple[float, float] = (0.7, 1.4),
    mirror_axes: Sequence[int] | None = None,
    elastic: bool = False,
    noise_std: tuple[float, float] = (0.0, 0.1),
    blur_sigma: tuple[float, float] = (0.5, 1.0),
    brightness: tuple[float, float] = (0.75, 1.25),
    contrast: tuple[float, float] = (0.75, 1.25),
    gamma: tuple[float, float] = (0.7, 1.5),
    low_resolution: tuple[float, float] = (0.5, 1.0),
    seed: int = 0,
) -> VolumeAugmentation:
    """nnU-Net's training augmentation for ``[C, *spatial]`` samples (module docstring lists the steps).

    ``probabilities`` overrides entries of :data:`NNUNET_PROBABILITIES` (unknown keys are an error; 0 disables a
    step). ``rotation_degrees``: the maximum angle, one value for every rotation axis or one per axis (3-D:
    three, 2-D: one); default 30° in 3-D and 180° in 2-D (nnU-Net). ``mirror_axes``: spatial axes that may be
    flipped (default all; ``()`` none). ``noise_std`` must start at 0 (MONAI draws σ from U(0, high)). Intensity
    values are those of the (normalised) image: apply after normalisation, as nnU-Net.
    """
    from monai.transforms import (
        Compose,
        Rand2DElasticd,
        Rand3DElasticd,
        RandAdjustContrastd,
        RandFlipd,
        RandGaussianNoised,
        RandGaussianSmoothd,
        RandScaleIntensityd,
        RandScaleIntensityFixedMeand,
        RandSimulateLowResolutiond,
    )

    if spatial_dims not in (2, 3):
        raise ValueError(f"build_train_augmentation: spatial_dims {spatial_dims} must be 2 or 3")
    unknown = set(probabilities or {}) - set(NNUNET_PROBABILITIES)
    if unknown:
        raise ValueError(
            f"build_train_augmentation: unknown probabilities {sorted(unknown)}; known: {list(NNUNET_PROBABILITIES)}"
        )
    p = {**NNUNET_PROBABILITIES, **(probabilities or {})}
    if any(not 0 <= v <= 1 for v in p.values()):
        raise ValueError(f"build_train_augmentation: probabilities {dict(p)} must lie in [0, 1]")
    keys = [image_key, *label_keys, *mask_keys]
    if len(set(keys)) != len(keys):
        raise ValueError(f"build_train_augmentation: repeated key in image/label/mask keys {keys}")
    modes = ["bilinear"] + ["nearest"] * (len(keys) - 1)
    n_angles = 3 if spatial_dims == 3 else 1
    if rotation_degrees is None:
        rotation_degrees = 30.0 if spatial_dims == 3 else 180.0
    degrees = [float(rotation_degrees)] * n_angles if np.isscalar(rotation_degrees) else list(rotation_degrees)
    if len(degrees) != n_angles:
        raise ValueError(f"build_train_augmentation: rotation_degrees {rotation_degrees} needs {n_angles} value(s)")
    scale_range = _range("scale_range", scale_range, 1e-3)
    if noise_std[0] != 0:
        raise ValueError(f"build_train_augmentation: noise_std {tuple(noise_std)} must start at 0")
    mirror_axes = tuple(range(spatial_dims)) if mirror_axes is None else tuple(int(a) for a in mirror_axes)
    if any(not 0 <= a < spatial_dims for a in mirror_axes):
        raise ValueError(f"build_train_augmentation: mirror_axes {mirror_axes} must be spatial axes < {spatial_dims}")
    blur = _range("blur_sigma", blur_sigma, 0.0)
    linear = "trilinear" if spatial_dims == 3 else "bilinear"
    transforms: list[Any] = [
        rand_rotate_scaled(keys, modes, [math.radians(d) for d in degrees], scale_range, p["rotation"], p["scale"])
    ]
    if elastic:
        if spatial_dims == 3:
            deform = Rand3DElasticd(keys, sigma_range=(9.0, 13.0), magnitude_range=(0.0, 200.0), prob=p["elastic"],
                                    mode=modes, padding_mode="zeros")  # fmt: skip
        else:
            deform = Rand2DElasticd(keys, spacing=(16.0, 16.0), magnitude_range=(0.0, 2.0), prob=p["elastic"],
                                    mode=modes, padding_mode="zeros")  # fmt: skip
        transforms.append(deform)
    bright = _range("brightness", brightness, 0.0)
    contrast_pair = _range("contrast", contrast, 0.0)
    contrast_factors = (contrast_pair[0] - 1, contrast_pair[1] - 1)
    zoom, gammas = _range("low_resolution", low_resolution, 1e-3), _range("gamma", gamma, 1e-3)
    transforms += [
        RandGaussianNoised(image_key, prob=p["noise"], mean=0.0, std=float(noise_std[1])),
        RandGaussianSmoothd(image_key, sigma_x=blur, sigma_y=blur, sigma_z=blur, prob=p["blur"]),
        RandScaleIntensityd(image_key, factors=(bright[0] - 1, bright[1] - 1), prob=p["brightness"]),
        RandScaleIntensityFixedMeand(
            image_key, factors=contrast_factors, fixed_mean=True, preserve_range=True, prob=p["contrast"]
        ),
        RandSimulateLowResolutiond(
            image_key, prob=p["low_resolution"], zoom_range=zoom, downsample_mode="nearest", upsample_mode=linear
        ),
        RandAdjustContrastd(image_key, prob=p["gamma_inverted"], gamma=gammas, invert_image=True, retain_stats=True),
        RandAdjustContrastd(image_key, prob=p["gamma"], gamma=gammas, retain_stats=True),
    ]
    transforms += [RandFlipd(keys, prob=p["mirror"], spatial_axis=axis) for axis in mirror_axes]
    return VolumeAugmentation(Compose(transforms), keys, seed)
