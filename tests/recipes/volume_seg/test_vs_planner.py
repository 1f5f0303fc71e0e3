"""volume_seg.planner: topologies against hand traces of nnU-Net's rules, patch/batch planning, memory model."""

from __future__ import annotations

import itertools
import json
import math

import pytest

from medtrain.recipes.volume_seg.planner import (
    BYTES_PER_FEATURE_MAP_ELEMENT,
    PatchPlan,
    Topology,
    estimate_training_memory_mb,
    plan_patch_and_batch,
    plan_topology,
)

I3, I2 = (1, 1, 1), (1, 1)
P3, P2 = (2, 2, 2), (2, 2)
K3, K2 = (3, 3, 3), (3, 3)
XY, K133 = (1, 2, 2), (1, 3, 3)

# (spacing, patch) → (strides, kernel sizes, padded patch). Written by hand, stage by stage, from the rules in the
# planner's docstring (size ≥ 8 to pool, spacing < 2× the finest poolable, single axis needs ≥ 12, kernel 3 once
# spacing < 2× the finest, sizes halved rounding up, pad to 2**pools). Traces in the comments: sizes | spacings.
TOPOLOGY_TABLE = [
    pytest.param(
        (1, 1, 1),
        (128, 128, 128),
        # 128 → 64 → 32 → 16 → 8 → 4: five pools on every axis; 128 is a multiple of 32
        ((I3, P3, P3, P3, P3, P3), (K3,) * 6, (128, 128, 128)),
        id="isotropic-3d",
    ),
    pytest.param(
        (3, 0.5, 0.5),
        (40, 224, 224),
        # 40,224,224 | 3,.5,.5: z 6× finest → pool y,x, z kernel 1
        # 40,112,112 | 3,1,1:   z 3× → pool y,x, kernel 1
        # 40,56,56   | 3,2,2:   z 1.5× → pool all, kernel 3 from here
        # 20,28,28 → 10,14,14 → 5,7,7 (all < 8: stop). pools z 3, y/x 5 → multiples of 8, 32, 32: no padding
        ((I3, XY, XY, P3, P3, P3), (K133, K133, K3, K3, K3, K3), (40, 224, 224)),
        id="anisotropic-3-0.5",
    ),
    pytest.param(
        (5, 1, 1),
        (20, 160, 160),
        # 20,160,160 | 5,1,1 → y,x ; 20,80,80 | 5,2,2 (2.5×) → y,x ; 20,40,40 | 5,4,4 (1.25×) → all, kernel 3
        # 10,20,20 | 10,8,8 → all ; 5,10,10 | 20,16,16: z < 8 → y,x ; 5,5,5: stop. pools z 2, y/x 5
        ((I3, XY, XY, P3, P3, XY), (K133, K133, K3, K3, K3, K3), (20, 160, 160)),
        id="anisotropic-5-1",
    ),
    pytest.param(
        (10, 1, 1),
        (8, 64, 64),
        # spacing ratios 10, 5, 2.5 → y,x three times (z kernel 1); 8,8,8 | 10,8,8 (1.25×) → all; 4,4,4: stop
        ((I3, XY, XY, XY, P3), (K133, K133, K133, K3, K3), (8, 64, 64)),
        id="anisotropic-10-1-thin",
    ),
    pytest.param(
        (4, 1, 1),
        (6, 64, 64),
        # z never poolable (6 < 8); z kernel: ratio 4, 2 (not < 2) → 1, 1, then 4/4 → 3.
        # nnU-Net's own code raises IndexError here (spacings_of_axes[d]); see the module docstring.
        ((I3, XY, XY, XY, XY), (K133, K133, K3, K3, K3), (6, 64, 64)),
        id="anisotropic-z-too-small",
    ),
    pytest.param(
        (10, 1),
        (182, 12),
        # 182,12 | 10,1: only x within 2× (alone, 12 ≥ 12) → x, kernel (1, 3) ; 182,6 | 10,2: x < 8, the finest
        # poolable spacing is y's own → y alone, kernel 3 ; 91 → 46 → 23 → 12 → 6. pools y 5, x 1 → 192, 12.
        # (nnU-Net's code keeps y's kernel at 1 here through its spacings_of_axes[d] index mix-up.)
        ((I2, (1, 2), *[(2, 1)] * 5), ((1, 3), *[K2] * 6), (192, 12)),
        id="2d-kernel-after-axis-drops-out",
    ),
    pytest.param(
        (1, 1, 1),
        (100, 100, 100),
        # 100 → 50 → 25 → 13 → 7: four pools, padded to a multiple of 16: 112
        ((I3, P3, P3, P3, P3), (K3,) * 5, (112, 112, 112)),
        id="odd-size-padded",
    ),
    pytest.param(
        (1, 1, 1),
        (16, 16, 16),
        # 16 → 8 → 4: two pools only
        ((I3, P3, P3), (K3,) * 3, (16, 16, 16)),
        id="small-3d",
    ),
    pytest.param(
        (1, 1),
        (256, 256),
        # 256 → … → 8 → 4: six pools
        ((I2, P2, P2, P2, P2, P2, P2), (K2,) * 7, (256, 256)),
        id="isotropic-2d",
    ),
    pytest.param(
        (0.8, 1.0),
        (150, 90),
        # 150,90 → 75,45 → 38,23 → 19,12 → 10,6; then only y poolable and 10 < 12: stop. pad to 16: 160, 96
        ((I2, P2, P2, P2, P2), (K2,) * 5, (160, 96)),
        id="2d-non-divisible",
    ),
    pytest.param(
        (1, 1),
        (64, 12),
        # 64,12 → 32,6 ; x < 8: y alone (32 ≥ 12) → 16,6 → 8,6 ; 8 < 12: stop. pools y 3, x 1
        ((I2, P2, (2, 1), (2, 1)), (K2,) * 4, (64, 12)),
        id="2d-single-axis-rule",
    ),
    pytest.param(
        (1, 3),
        (64, 64),
        # x spacing 3× → y only, x kernel 1 ; 32,64 | 2,3 (1.5×) → both, kernel 3 ; 16,32 → 8,16 → 4,8 ;
        # y < 8: x alone, 8 < 12: stop. pools y 4, x 3
        ((I2, (2, 1), P2, P2, P2), ((3, 1), K2, K2, K2, K2), (64, 64)),
        id="2d-anisotropic",
    ),
]


@pytest.mark.parametrize(("spacing", "patch", "expected"), TOPOLOGY_TABLE)
def test_topology_matches_hand_trace(spacing, patch, expected) -> None:
    strides, kernels, padded = expected
    topology = plan_topology(spacing, patch)
    assert topology.strides == strides
    assert topology.kernel_sizes == kernels
    assert topology.patch_size == padded
    assert topology.n_stages == len(strides)
    assert topology.spatial_dims == len(spacing)
    assert topology.must_be_divisible_by == tuple(2**p for p in topology.pools_per_axis)
    assert all(size % step == 0 for size, step in zip(topology.patch_size, topology.must_be_divisible_by, strict=True))


def test_widths_and_depths_follow_resenc() -> None:
    topology = plan_topology((1, 1, 1), (128, 128, 128))
    assert topology.features_per_stage == (32, 64, 128, 256, 320, 320)
    assert topology.n_blocks_per_stage == (1, 3, 4, 6, 6, 6)
    assert topology.n_conv_per_stage_decoder == (1, 1, 1, 1, 1)
    small = plan_topology((1, 1), (16, 16), base_features=8, max_features=16)
    assert small.features_per_stage == (8, 16, 16)
    assert small.n_blocks_per_stage == (1, 3, 4)


def test_max_numpool_limits_pools() -> None:
    topology = plan_topology((1, 1, 1), (128, 128, 128), max_numpool=3)
    assert topology.strides == (I3, P3, P3, P3)
    assert topology.must_be_divisible_by == (8, 8, 8)


def test_min_feature_map_size_changes_the_stop() -> None:
    # m = 8: pool while ≥ 16: 128 → 64 → 32 → 16 → 8 (four pools)
    assert plan_topology((1, 1, 1), (128, 128, 128), min_feature_map_size=8).n_stages == 5


def test_topology_dict_round_trip_is_exact_and_json_safe() -> None:
    topology = plan_topology((3.3, 0.7, 0.7), (40, 200, 190))
    text = json.dumps(topology.to_dict())
    again = Topology.from_dict(json.loads(text))
    assert again == topology
    assert isinstance(again.spacing[0], float) and isinstance(again.strides[1], tuple)
    broken = topology.to_dict()
    del broken["strides"]
    with pytest.raises(ValueError, match="strides"):
        Topology.from_dict(broken)
    broken = topology.to_dict() | {"features_per_stage": [32, 64]}
    with pytest.raises(ValueError, match="inconsistent"):
        Topology.from_dict(broken)


@pytest.mark.parametrize(
    ("spacing", "patch"),
    [
        ((1, 1, 1), (6, 6, 6)),  # no axis ≥ 8
        ((1, 1), (7, 5)),
        ((1, 10), (9, 48)),  # only y within 2× of the finest spacing, and 9 < 12
        ((1, 1, 1), (0, 64, 64)),
        ((0, 1, 1), (8, 8, 8)),
        ((1,), (64,)),
    ],
)
def test_bad_topology_arguments(spacing, patch) -> None:
    with pytest.raises(ValueError):
        plan_topology(spacing, patch)


def _pad(shape, multiple):
    return tuple(math.ceil(s / m) * m for s, m in zip(shape, multiple, strict=True))


PLAN_CASES = [
    ((1.0, 1.0, 1.0), (512, 512, 512)),
    ((3.0, 0.7, 0.7), (60, 400, 400)),
    ((0.7, 0.7), (600, 500)),
    ((2.0, 1.0, 1.0), (40, 90, 70)),
]


@pytest.mark.parametrize(("spacing", "median"), PLAN_CASES)
@pytest.mark.parametrize("budget", [1500.0, 8192.0, 40000.0])
def test_patch_plan_respects_budget_and_shape(spacing, median, budget) -> None:
    plan = plan_patch_and_batch(
        spacing, median, in_channels=1, n_output_channels=2, n_cases=20, memory_budget_mb=budget
    )
    assert isinstance(plan, PatchPlan)
    assert plan.patch_size == plan.topology.patch_size
    assert plan.estimated_mb <= budget
    assert plan.estimated_mb == pytest.approx(estimate_training_memory_mb(plan.topology, 1, 2, plan.batch_size))
    assert plan.batch_size >= 2
    assert all(p <= m for p, m in zip(plan.patch_size, _pad(median, plan.topology.must_be_divisible_by), strict=True))
    json.dumps(plan.to_dict())


@pytest.mark.parametrize(("spacing", "median"), PLAN_CASES)
def test_patch_plan_monotone_in_budget(spacing, median) -> None:
    plans = [
        plan_patch_and_batch(spacing, median, in_channels=1, n_output_channels=2, n_cases=20, memory_budget_mb=b)
        for b in (1000.0, 2000.0, 4000.0, 8000.0, 16000.0, 32000.0)
    ]
    voxels = [math.prod(plan.patch_size) * plan.batch_size for plan in plans]
    assert voxels == sorted(voxels)
    assert all(math.prod(a.patch_size) <= math.prod(b.patch_size) for a, b in itertools.pairwise(plans))


def test_nnunet_resenc_m_reference_case() -> None:
    # nnU-Net ResEnc M (8 GB) plans 128³ at batch 2 for isotropic data with large volumes
    plan = plan_patch_and_batch((1, 1, 1), (512, 512, 512), in_channels=1, n_output_channels=2, n_cases=100)
    assert plan.patch_size == (128, 128, 128)
    assert plan.batch_size == 2
    assert plan.topology.n_stages == 6


def test_initial_patch_follows_inverse_spacing_and_median() -> None:
    # huge budget: the initial patch stays. 3-D: 1/spacing scaled to 256³ = (128, 256, 512) → clipped to the
    # median (100, 300, 300) → pools z 4, y 5, x 6 (x alone, then y and x, then all; stop at 7, 8, 5)
    # → padded to multiples of 16, 32, 64 → (112, 256, 320)
    plan = plan_patch_and_batch(
        (2.0, 1.0, 0.5), (100, 300, 300), in_channels=1, n_output_channels=1, n_cases=1000, memory_budget_mb=1e9
    )
    assert plan.patch_size == (112, 256, 320)
    # 2-D: 2048² at spacing (1, 1), clipped to (300, 5000) → (300, 2048); y pools 6 times (300 → … → 5), x 8
    # times (alone once y < 8, down to 8) → multiples of 64, 256 → (320, 2048)
    plan = plan_patch_and_batch(
        (1.0, 1.0), (300, 5000), in_channels=1, n_output_channels=1, n_cases=1000, memory_budget_mb=1e9
    )
    assert plan.patch_size == (320, 2048)
    assert plan.topology.pools_per_axis == (6, 8)


def test_batch_is_capped_by_dataset_fraction() -> None:
    # 10 cases of 64³; patch 64³ would be 1/10 of the dataset per sample → 5 % cap = floor(0.5) → min_batch 2
    small = plan_patch_and_batch((1, 1, 1), (64, 64, 64), in_channels=1, n_output_channels=1, n_cases=10)
    assert small.patch_size == (64, 64, 64) and small.batch_size == 2
    # 2000 cases: cap floor(2000·0.05) = 100, memory allows floor(8192 / per-sample)
    many = plan_patch_and_batch((1, 1, 1), (64, 64, 64), in_channels=1, n_output_channels=1, n_cases=2000)
    per_sample = estimate_training_memory_mb(many.topology, 1, 1, 1)
    assert many.batch_size == min(100, math.floor(8192 / per_sample))
    assert many.batch_size > 2


def test_budget_too_small_raises() -> None:
    with pytest.raises(ValueError, match="too small"):
        plan_patch_and_batch(
            (1, 1, 1), (256, 256, 256), in_channels=1, n_output_channels=1, n_cases=5, memory_budget_mb=0.1
        )


def test_memory_estimate_is_monotone() -> None:
    topology = plan_topology((1, 1, 1), (64, 64, 64))
    base = estimate_training_memory_mb(topology, 1, 2, 2)
    assert estimate_training_memory_mb(topology, 1, 2, 4) == pytest.approx(2 * base)
    assert estimate_training_memory_mb(topology, 3, 2, 2) > base
    assert estimate_training_memory_mb(topology, 1, 5, 2) > base
    assert estimate_training_memory_mb(topology, 1, 2, 2, n_decoders=2) > base
    assert estimate_training_memory_mb(plan_topology((1, 1, 1), (96, 96, 96)), 1, 2, 2) > base
    with pytest.raises(ValueError):
        estimate_training_memory_mb(topology, 1, 2, 0)


@pytest.mark.usefixtures("seeded_one_thread")
@pytest.mark.parametrize("shared", [False, True])
def test_memory_estimate_counts_the_networks_feature_maps(shared: bool) -> None:
    """E equals the input plus every (transposed) convolution and strided/projection shortcut output of the real
    network (nnU-Net's ``compute_conv_feature_map_size`` counting)."""
    import torch

    from medtrain.nn.unet import MultiTaskUNet

    topology = plan_topology((2.0, 1.0, 1.0), (8, 16, 16), base_features=4, max_features=8)
    heads = {"a": 1, "b": 3}
    model = MultiTaskUNet(
        3,
        2,
        topology.features_per_stage,
        topology.strides,
        topology.kernel_sizes,
        topology.n_blocks_per_stage,
        topology.n_conv_per_stage_decoder,
        heads,
        shared_decoder=shared,
        deep_supervision=True,
    ).train()
    counted = []
    convs = (torch.nn.Conv3d, torch.nn.ConvTranspose3d)
    counted_modules = [
        module
        for name, module in model.named_modules()
        if (isinstance(module, convs) and ".shortcut." not in name)
        or (name.endswith(".shortcut") and not isinstance(module, torch.nn.Identity))
    ]
    assert len(counted_modules) > 2 * sum(topology.n_blocks_per_stage)
    hooks = [m.register_forward_hook(lambda _m, _i, out: counted.append(out.numel())) for m in counted_modules]
    x = torch.zeros(1, 2, *topology.patch_size)
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    elements = x.numel() + sum(counted)
    estimate = estimate_training_memory_mb(topology, 2, 4, 1, n_decoders=1 if shared else 2)
    assert estimate * 2**20 / BYTES_PER_FEATURE_MAP_ELEMENT[3] == pytest.approx(elements)
