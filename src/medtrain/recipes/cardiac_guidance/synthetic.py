"""Synthetic cardiac-guidance data: an analytic heart phantom per patient, imaged at 6-DOF probe poses.

Written in exactly the seed's layout (:mod:`.records`): ``<output>/<patient>/transitions_dataset.json`` plus
``ft1/image_NNN.png`` and ``ft2/image_NNN.png``, for the demo and the tests.

**Frames of reference.** Everything is in millimetres in the frame of the patient's *standard view*: the probe
pose that images a 4-chamber-like plane through the heart. Its axes are x lateral (image columns, + to the right),
y elevation (normal to the image plane) and z depth (image rows, along the probe axis, + away from the probe); the
probe apex sits at the origin. The heart's centre lies near x = y = 0 at 55–60 % of the :data:`FOV_DEPTH_MM`
depth.

**Poses.** A pose is a 6-vector ``(x, y, z, roll, pitch, yaw)`` (mm, degrees): the probe's offset from the
standard view. The probe is translated by ``t = (x, y, z)`` and rotated by ``R = Rz(yaw) · Ry(pitch) · Rx(roll)``,
so an image sample at lateral ``a`` and depth ``d`` lies at ``t + R · (a, 0, d)``. Roll (about the lateral axis)
fans the plane in elevation, pitch (about the elevation axis, the plane's normal) rotates the picture in-plane about
the apex, yaw (about the probe axis) twists the plane so each side cuts other structures. Poses and actions compose
*additively*: the action that returns to the standard view from pose ``p`` is ``-p``, and moving by ``a`` from ``p``
gives ``p + a``. That is exact for translations and is the usual small-motion approximation for rotations (within
±15° the error of adding Euler angles is a second-order term); the rendered frames always use the stored poses.

**Anatomy** (:class:`Phantom`, evaluated analytically at the sample points, no voxel volume): four ellipsoidal
blood pools (LV, RV, LA, RA) plus an anterior aortic root and a posterior coronary sinus, each wrapped in a
myocardial wall; seven straight tubes (descending aorta, pulmonary veins, vena cava, coronary arteries) with dark
lumens and bright walls that cross the standard plane obliquely; a bright pericardial shell; fat inside it and soft
tissue outside. The chambers are tilted differently and sit at different elevations, and the tubes cross the plane
at 35–60°, so every DOF changes the picture in its own way and with a sign: x moves the anatomy sideways, z up and
down, pitch rotates it about the apex; y, roll and yaw shift the plane out of its own plane by ``y``, by
``depth · sin(roll)`` and by ``lateral · sin(yaw)``, which brings in the aortic root (anterior) or the coronary
sinus (posterior), changes which chambers and walls are cut and slides each tube's cross-section along its own
direction. Edges are smooth (a logistic ramp about 1 mm wide), so the picture changes smoothly with the pose. Per
patient (:func:`sample_phantom`): overall size ×0.85–1.15, heart position (±2 mm lateral, ±1.5 mm elevation, centre
at 55–60 % depth), chamber and tube positions (σ 0.5–1 mm), chamber proportions ±10 % per axis, wall thickness
±20 %, echogenicities (±1.5–2 dB), gain (±3 dB) and attenuation.

**Imaging** (:func:`render_view`): rows are depth (0 at the top, the probe apex, to :data:`FOV_DEPTH_MM`),
columns lateral over the same width (square pixels); a sector mask (apex at the top centre, ±35°, radius
:data:`FOV_DEPTH_MM`). The envelope is echogenicity (blood about -50 dB, fat -24, tissue -28, myocardium -14,
pericardium -2 dB) × depth attenuation ``exp(-α r)`` × multiplicative speckle × patient gain, plus electronic noise
(σ = :data:`ELECTRONIC_NOISE`, taken in magnitude). The speckle is the magnitude of a complex Gaussian field
smoothed with a 0.5 mm axial / 0.8 mm lateral Gaussian (so Rayleigh distributed, like fully developed speckle),
scaled to mean 1; it is drawn afresh for every frame rather than attached to the tissue (a simplification). The
display is log-compressed over :data:`DYNAMIC_RANGE_DB`: ``pixel = 255 · clip(1 + 20 log10(envelope) / 50, 0, 1)``.

**Transitions** (:func:`generate_phantom_dataset`): ``pose1`` uniform within ±12 mm and ±15°; ``at1 = -pose1``;
``action_change = λ · at1 + ε`` with λ ~ U(0.3, 0.8) per transition and ε ~ N(0, 1 mm / 1.5°) per DOF;
``pose2 = pose1 + action_change`` and ``at2 = -pose2 = at1 - action_change``. Values are written rounded to 4
decimals, ``at2`` computed from the rounded ``at1`` and ``action_change`` so the identity holds at that precision,
and the frames are rendered at exactly the written poses (``pose1 = -at1``, ``pose2 = -at2``). Every patient is
seeded by ``(seed, patient index)``, so a dataset is reproducible and a patient does not depend on how many are
generated.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from medtrain.io.atomic import atomic_write_text
from medtrain.io.images import write_grayscale
from medtrain.recipes.cardiac_guidance.records import TRANSITIONS_FILE

FOV_DEPTH_MM = 140.0
SECTOR_HALF_ANGLE_DEG = 35.0
MAX_TRANSLATION_MM = 12.0
MAX_ROTATION_DEG = 15.0
STEP_FRACTION = (0.3, 0.8)
STEP_NOISE = (1.0, 1.0, 1.0, 1.5, 1.5, 1.5)
ELECTRONIC_NOISE = 0.002
DYNAMIC_RANGE_DB = 50.0
EDGE_MM = 1.0
SPECKLE_SIGMA_MM = (0.5, 0.8)  # (axial, lateral) smoothing of the complex field
DECIMALS = 4


@dataclass(frozen=True)
class Chamber:
    """A blood pool wrapped in a wall, in heart coordinates (mm, before the phantom's ``scale``).

    The pool is the ellipsoid ``|S⁻¹ Rᵀ (h - centre)| ≤ 1`` with ``S = diag(semi_axes)`` and ``R`` the rotation by
    ``angles_deg`` about x, then y, then z; the wall is the shell out to semi-axes ``semi_axes + wall``.
    """

    name: str
    centre: tuple[float, float, float]
    semi_axes: tuple[float, float, float]
    angles_deg: tuple[float, float, float]
    wall: float


@dataclass(frozen=True)
class Vessel:
    """A straight tube in heart coordinates: lumen of ``radius`` around the line through ``point`` along the unit
    ``direction``, wrapped in a wall of thickness ``wall``. Tubes cross the standard plane obliquely, so where they
    cut the image moves with every out-of-plane motion."""

    name: str
    point: tuple[float, float, float]
    direction: tuple[float, float, float]
    radius: float
    wall: float


@dataclass(frozen=True)
class Phantom:
    """One patient's heart: structures in heart coordinates ``h``, placed at ``p = centre + scale · h``.

    ``centre`` is in the standard-view frame (mm; see the module docstring). The pericardium is the shell between
    semi-axes ``pericardium_axes`` and those plus ``pericardium_thickness`` about ``pericardium_centre``. ``echo_*``
    are echo amplitudes relative to full scale (blood pools and tube lumens, myocardium and tube walls, pericardium,
    fat inside the pericardium, tissue outside), ``gain`` an amplitude factor and ``attenuation`` the amplitude
    attenuation per millimetre of range (``exp(-attenuation · r)``).
    """

    centre: tuple[float, float, float]
    scale: float
    chambers: tuple[Chamber, ...]
    vessels: tuple[Vessel, ...]
    pericardium_centre: tuple[float, float, float]
    pericardium_axes: tuple[float, float, float]
    pericardium_thickness: float
    echo_blood: float
    echo_myocardium: float
    echo_pericardium: float
    echo_fat: float
    echo_tissue: float
    gain: float
    attenuation: float


# name, centre, semi-axes, angles (deg about x, y, z), wall (mm): the template heart before per-patient changes
_TEMPLATE: tuple[tuple[str, tuple[float, ...], tuple[float, ...], tuple[float, ...], float], ...] = (
    ("LV", (13.0, 3.0, -10.0), (12.0, 20.0, 28.0), (20.0, -8.0, 15.0), 8.0),
    ("RV", (-15.0, -4.0, -6.0), (9.0, 17.0, 23.0), (-20.0, 10.0, 20.0), 3.5),
    ("LA", (11.0, -3.0, 27.0), (11.0, 16.0, 11.0), (15.0, 0.0, 10.0), 3.0),
    ("RA", (-13.0, 2.5, 26.0), (10.0, 15.0, 12.0), (-15.0, 0.0, -10.0), 3.0),
    ("aortic root", (2.0, 22.0, 15.0), (6.5, 6.5, 15.0), (35.0, 0.0, 0.0), 2.5),
    ("coronary sinus", (0.0, -22.0, 20.0), (18.0, 4.0, 4.0), (0.0, 0.0, 10.0), 1.5),
)

# name, point (where it crosses the standard plane), direction, lumen radius, wall (mm)
_VESSELS: tuple[tuple[str, tuple[float, ...], tuple[float, ...], float, float], ...] = (
    ("descending aorta", (8.0, 0.0, 52.0), (0.6, 1.0, 0.2), 7.0, 2.0),
    ("left pulmonary vein", (27.0, 0.0, 33.0), (1.0, 0.75, 0.3), 4.0, 1.5),
    ("right pulmonary vein", (-6.0, 0.0, 44.0), (-0.8, 0.9, 0.4), 4.0, 1.5),
    ("inferior vena cava", (-32.0, 0.0, 30.0), (-0.3, 0.8, -0.9), 6.0, 1.5),
    ("right coronary artery", (-31.0, 0.0, 8.0), (0.25, 1.0, -0.7), 2.5, 1.5),
    ("left anterior descending artery", (-2.0, 0.0, -40.0), (0.5, 1.0, -0.4), 2.5, 1.5),
    ("circumflex artery", (33.0, 0.0, 14.0), (-0.2, 1.0, 0.6), 2.5, 1.5),
)


def sample_phantom(rng: np.random.Generator) -> Phantom:
    """Draw one patient's :class:`Phantom` from the template heart (ranges in the module docstring)."""
    chambers = []
    wall_factor = rng.uniform(0.8, 1.2)
    for name, centre, semi_axes, angles, wall in _TEMPLATE:
        proportions = rng.uniform(0.9, 1.1, size=3)
        chambers.append(
            Chamber(
                name=name,
                centre=_triple(np.asarray(centre) + rng.normal(0.0, 0.5, size=3)),
                semi_axes=_triple(np.asarray(semi_axes) * proportions),
                angles_deg=_triple(np.asarray(angles) + rng.normal(0.0, 1.0, size=3)),
                wall=float(wall * wall_factor),
            )
        )
    vessels = []
    for name, point, direction, radius, wall in _VESSELS:
        unit = np.asarray(direction) / np.linalg.norm(direction) + rng.normal(0.0, 0.03, size=3)
        vessels.append(
            Vessel(
                name=name,
                point=_triple(np.asarray(point) + rng.normal(0.0, 1.0, size=3)),
                direction=_triple(unit / np.linalg.norm(unit)),
                radius=float(radius * rng.uniform(0.9, 1.1)),
                wall=float(wall * wall_factor),
            )
        )
    return Phantom(
        centre=(
            float(rng.uniform(-2.0, 2.0)),
            float(rng.uniform(-1.5, 1.5)),
            float(rng.uniform(0.55, 0.60) * FOV_DEPTH_MM),
        ),
        scale=float(rng.uniform(0.85, 1.15)),
        chambers=tuple(chambers),
        vessels=tuple(vessels),
        pericardium_centre=(0.0, 0.0, 8.0),
        pericardium_axes=_triple(np.array([38.0, 42.0, 48.0]) * rng.uniform(0.95, 1.05, size=3)),
        pericardium_thickness=float(rng.uniform(2.0, 3.0)),
        echo_blood=_from_db(rng.uniform(-52.0, -48.0)),
        echo_myocardium=_from_db(rng.uniform(-15.5, -12.5)),
        echo_pericardium=_from_db(rng.uniform(-3.0, -1.0)),
        echo_fat=_from_db(rng.uniform(-25.5, -22.5)),
        echo_tissue=_from_db(rng.uniform(-29.5, -26.5)),
        gain=_from_db(rng.uniform(-3.0, 3.0)),
        attenuation=float(rng.uniform(0.003, 0.006)),
    )


def pose_matrix(pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(R, t)`` of a 6-DOF pose ``(x, y, z, roll, pitch, yaw)`` (mm, deg): ``R = Rz(yaw) Ry(pitch) Rx(roll)``,
    ``t = (x, y, z)``; an image sample at lateral ``a``, depth ``d`` lies at ``t + R (a, 0, d)``."""
    pose = np.asarray(pose, dtype=np.float64)
    if pose.shape != (6,):
        raise ValueError(f"a pose is 6 numbers (x, y, z, roll, pitch, yaw), got shape {pose.shape}")
    roll, pitch, yaw = np.deg2rad(pose[3:])
    cx, sx, cy, sy, cz, sz = np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]])
    ry = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    rz = np.array([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]])
    return rz @ ry @ rx, pose[:3].copy()


def render_view(phantom: Phantom, pose: np.ndarray, *, size: int, rng: np.random.Generator) -> np.ndarray:
    """The ``uint8 [size, size]`` frame of ``phantom`` seen from ``pose`` (imaging model in the module docstring).

    Pixel ``(row, col)`` samples depth ``(row + 0.5) · Δ`` and lateral ``(col + 0.5 - size / 2) · Δ`` with
    ``Δ = FOV_DEPTH_MM / size``; pixels outside the sector are 0. ``rng`` draws the speckle and noise only.
    """
    if size < 8:
        raise ValueError(f"size must be at least 8 pixels, got {size}")
    rotation, translation = pose_matrix(pose)
    spacing = FOV_DEPTH_MM / size
    centres = (np.arange(size) + 0.5) * spacing
    depth = centres[:, None].astype(np.float32)
    lateral = (centres - FOV_DEPTH_MM / 2.0)[None, :].astype(np.float32)
    # the image plane in heart coordinates: h(lateral a, depth d) = origin + a · u + d · w
    plane = _Plane(
        origin=(translation - np.asarray(phantom.centre)) / phantom.scale,
        u=rotation[:, 0] / phantom.scale,
        w=rotation[:, 2] / phantom.scale,
        lateral=lateral,
        depth=depth,
    )
    echo = _echogenicity(phantom, plane)
    radius = np.hypot(depth, lateral)
    inside = (radius <= FOV_DEPTH_MM) & (np.degrees(np.arctan2(np.abs(lateral), depth)) <= SECTOR_HALF_ANGLE_DEG)
    speckle = _speckle(rng, size, (SPECKLE_SIGMA_MM[0] / spacing, SPECKLE_SIGMA_MM[1] / spacing))
    envelope = echo * np.exp(np.float32(-phantom.attenuation) * radius) * speckle * np.float32(phantom.gain)
    envelope = np.abs(envelope + np.float32(ELECTRONIC_NOISE) * rng.standard_normal(echo.shape, dtype=np.float32))
    decibels = np.float32(20.0) * np.log10(np.maximum(envelope, np.float32(1e-6)))
    value = np.clip(np.float32(1.0) + decibels * np.float32(1.0 / DYNAMIC_RANGE_DB), 0.0, 1.0)
    frame = np.where(inside, value, np.float32(0.0))
    return np.rint(frame * np.float32(255.0)).astype(np.uint8)


def sample_transition(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(at1, action_change, at2)`` of one transition, each float64 ``[6]`` rounded to 4 decimals.

    ``pose1`` uniform in ±:data:`MAX_TRANSLATION_MM` / ±:data:`MAX_ROTATION_DEG`, ``at1 = -pose1``,
    ``action_change = λ at1 + ε`` (λ ~ U(:data:`STEP_FRACTION`), ε ~ N(0, :data:`STEP_NOISE`)),
    ``at2 = round(at1 - action_change)`` from the rounded values, so ``at2 == at1 - action_change`` to 4 decimals.
    """
    limits = np.array([MAX_TRANSLATION_MM] * 3 + [MAX_ROTATION_DEG] * 3)
    pose1 = rng.uniform(-1.0, 1.0, size=6) * limits
    at1 = _round(-pose1)
    step = rng.uniform(*STEP_FRACTION)
    action = _round(step * at1 + rng.normal(0.0, 1.0, size=6) * np.asarray(STEP_NOISE))
    return at1, action, _round(at1 - action)


def generate_phantom_dataset(
    output: Path, *, patients: int = 6, transitions_per_patient: int = 80, image_size: int = 128, seed: int = 0
) -> list[str]:
    """Write ``patients`` phantom patients under ``output`` in the seed's layout; return their folder names.

    Patient ``k`` is ``patient_{k:02d}`` with ``transitions_per_patient`` records (module docstring), frames
    ``ft1/image_{i:03d}.png`` (at ``pose1 = -at1``) and ``ft2/image_{i:03d}.png`` (at ``pose2 = -at2``) of
    ``image_size`` pixels, numbered from 1, and ``transitions_dataset.json`` with the seed's keys in the seed's
    order. Deterministic for ``seed``; patient ``k`` draws from ``np.random.default_rng([seed, k])``.
    """
    if patients < 1 or transitions_per_patient < 1:
        raise ValueError("patients and transitions_per_patient must be at least 1")
    output = Path(output)
    width = max(3, len(str(transitions_per_patient)))
    names = []
    for k in range(patients):
        name = f"patient_{k:02d}"
        folder = output / name
        rng = np.random.default_rng([seed, k])
        phantom = sample_phantom(rng)
        records = []
        for i in range(1, transitions_per_patient + 1):
            at1, action, at2 = sample_transition(rng)
            ft1, ft2 = f"ft1/image_{i:0{width}d}.png", f"ft2/image_{i:0{width}d}.png"
            write_grayscale(folder / ft1, render_view(phantom, -at1, size=image_size, rng=rng))
            write_grayscale(folder / ft2, render_view(phantom, -at2, size=image_size, rng=rng))
            records.append(
                {
                    "ft1_image_path": ft1,
                    "ft2_image_path": ft2,
                    "at1_6dof": at1.tolist(),
                    "action_change_6dof": action.tolist(),
                    "at2_6dof": at2.tolist(),
                }
            )
        atomic_write_text(folder / TRANSITIONS_FILE, json.dumps(records, indent=2) + "\n")
        names.append(name)
    return names


# ------------------------------------------------------------------------------------------------------ helpers


def _from_db(decibels: float) -> float:
    """Amplitude ratio of ``decibels``: ``10 ** (dB / 20)``."""
    return float(10.0 ** (decibels / 20.0))


def _triple(values: np.ndarray) -> tuple[float, float, float]:
    return float(values[0]), float(values[1]), float(values[2])


def _round(values: np.ndarray) -> np.ndarray:
    """Round to :data:`DECIMALS` and turn -0.0 into 0.0 (so the JSON never shows ``-0.0``)."""
    return np.round(values, DECIMALS) + 0.0


@dataclass(frozen=True)
class _Plane:
    """The image plane in heart coordinates, ``h = origin + a · u + d · w``, sampled at ``lateral [1, W]`` (a) and
    ``depth [H, 1]`` (d) in millimetres. Every quantity the phantom needs is a norm of an affine function of ``h``,
    so it is evaluated by broadcasting one row and one column per component (no ``[H, W, 3]`` arrays)."""

    origin: np.ndarray
    u: np.ndarray
    w: np.ndarray
    lateral: np.ndarray
    depth: np.ndarray

    def norm(self, matrix: np.ndarray, centre: np.ndarray) -> np.ndarray:
        """``|matrix · (h - centre)|`` at every pixel, ``[H, W]``."""
        base, along_u, along_w = matrix @ (self.origin - centre), matrix @ self.u, matrix @ self.w
        total = np.zeros((self.depth.shape[0], self.lateral.shape[1]), dtype=np.float32)
        for i in range(matrix.shape[0]):
            component = np.float32(base[i]) + np.float32(along_w[i]) * self.depth
            component = component + np.float32(along_u[i]) * self.lateral
            total += component * component
        return np.sqrt(total, out=total)


def _rotation(angles_deg: tuple[float, float, float]) -> np.ndarray:
    return pose_matrix(np.array([0.0, 0.0, 0.0, *angles_deg]))[0]


def _inside(distance_mm: np.ndarray) -> np.ndarray:
    """Soft membership from a signed distance (mm, negative inside): a logistic ramp :data:`EDGE_MM` wide."""
    return np.float32(0.5) - np.float32(0.5) * np.tanh(distance_mm * np.float32(1.0 / EDGE_MM))


def _ellipsoid(plane: _Plane, centre, semi_axes, rotation: np.ndarray, scale: float) -> np.ndarray:
    """Soft membership of an ellipsoid ``|S⁻¹ Rᵀ (h - centre)| ≤ 1``. The signed distance is approximated by
    ``(ρ - 1) · min(semi_axes) · scale`` (mm; exact for a sphere), which is all a 1 mm edge ramp needs."""
    rho = plane.norm(rotation.T / np.asarray(semi_axes)[:, None], np.asarray(centre))
    return _inside((rho - np.float32(1.0)) * np.float32(min(semi_axes) * scale))


def _echogenicity(phantom: Phantom, plane: _Plane) -> np.ndarray:
    """Echogenicity ``[H, W]`` on ``plane``: tissue, pericardial sac and shell, walls over them, blood on top."""
    scale = np.float32(phantom.scale)
    identity = np.eye(3)
    sac = _ellipsoid(plane, phantom.pericardium_centre, phantom.pericardium_axes, identity, scale)
    outer_axes = tuple(a + phantom.pericardium_thickness for a in phantom.pericardium_axes)
    shell = _ellipsoid(plane, phantom.pericardium_centre, outer_axes, identity, scale) - sac
    echo = phantom.echo_tissue * (1.0 - sac - shell) + phantom.echo_fat * sac + phantom.echo_pericardium * shell

    wall = np.zeros_like(echo)
    blood = np.zeros_like(echo)
    for chamber in phantom.chambers:
        rotation = _rotation(chamber.angles_deg)
        outer = tuple(a + chamber.wall for a in chamber.semi_axes)
        np.maximum(wall, _ellipsoid(plane, chamber.centre, outer, rotation, scale), out=wall)
        np.maximum(blood, _ellipsoid(plane, chamber.centre, chamber.semi_axes, rotation, scale), out=blood)
    for vessel in phantom.vessels:
        # the distance to the tube's axis is |(I - d dᵀ)(h - point)|
        direction = np.asarray(vessel.direction)
        axis_distance = plane.norm(np.eye(3) - np.outer(direction, direction), np.asarray(vessel.point))
        np.maximum(wall, _inside((axis_distance - np.float32(vessel.radius + vessel.wall)) * scale), out=wall)
        np.maximum(blood, _inside((axis_distance - np.float32(vessel.radius)) * scale), out=blood)

    echo = echo * (1.0 - wall) + phantom.echo_myocardium * wall
    return echo * (1.0 - blood) + phantom.echo_blood * blood


def _speckle(rng: np.random.Generator, size: int, sigma_px: tuple[float, float]) -> np.ndarray:
    """Mean-1 Rayleigh speckle ``[size, size]``: ``|g|`` of a complex Gaussian field ``g`` smoothed by ``sigma_px``
    (rows, columns), divided by its expected mean ``σ √(π/2)``."""
    sigma = (max(sigma_px[0], 0.5), max(sigma_px[1], 0.5))
    real = gaussian_filter(rng.standard_normal((size, size), dtype=np.float32), sigma, mode="wrap")
    imag = gaussian_filter(rng.standard_normal((size, size), dtype=np.float32), sigma, mode="wrap")
    power = real * real + imag * imag
    component_sigma = math.sqrt(float(np.mean(power, dtype=np.float64)) / 2.0)
    return np.sqrt(power) * np.float32(1.0 / (component_sigma * math.sqrt(math.pi / 2.0)))
