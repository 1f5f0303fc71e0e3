"""nn.unet: MultiTaskUNet shapes (2-D/3-D, anisotropic), heads, shared vs separate decoders, deep supervision,
single registration of every parameter, gradients, ONNX export; nnU-Net deep-supervision weights."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import safetensors.torch
import torch

from medtrain.nn.unet import MultiTaskUNet

pytestmark = pytest.mark.usefixtures("seeded_one_thread")

TINY_2D = {
    "spatial_dims": 2,
    "in_channels": 1,
    "features_per_stage": [4, 8],
    "strides": [[1, 1], [2, 2]],
    "kernel_sizes": [[3, 3], [3, 3]],
    "n_blocks_per_stage": [1, 1],
    "n_conv_per_stage_decoder": [1],
}
ANISO_3D = {
    "spatial_dims": 3,
    "in_channels": 2,
    "features_per_stage": [4, 8, 16],
    "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2]],
    "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3]],
    "n_blocks_per_stage": [1, 2, 2],
    "n_conv_per_stage_decoder": [1, 2],
}
ISO_2D = {
    "spatial_dims": 2,
    "in_channels": 3,
    "features_per_stage": [4, 8, 16, 16],
    "strides": [[1, 1], [2, 2], [2, 2], [2, 1]],
    "kernel_sizes": [[3, 3]] * 4,
    "n_blocks_per_stage": [1, 3, 4, 6],
    "n_conv_per_stage_decoder": [1, 1, 1],
}
HEADS = {"ink": 1, "sheet": 3, "normals": 2}


def _n_params(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


@pytest.mark.parametrize(("config", "shape"), [(ANISO_3D, (8, 16, 16)), (ISO_2D, (32, 16))])
@pytest.mark.parametrize("shared", [False, True])
def test_full_resolution_logits_per_head(config, shape, shared: bool) -> None:
    model = MultiTaskUNet(**config, heads=HEADS, shared_decoder=shared)
    x = torch.randn(2, config["in_channels"], *shape)
    for mode in (model.train(), model.eval()):
        with torch.no_grad():
            outputs = mode(x)
        assert list(outputs) == list(HEADS)
        assert {name: tuple(out.shape) for name, out in outputs.items()} == {
            name: (2, channels, *shape) for name, channels in HEADS.items()
        }


@pytest.mark.parametrize(
    ("config", "shape", "expected"),
    [
        # strides (1,1,1), (1,2,2), (2,2,2): outputs at stage 0 and 1 → (8,16,16), (8,8,8)
        (ANISO_3D, (8, 16, 16), [(8, 16, 16), (8, 8, 8)]),
        # strides (1,1), (2,2), (2,2), (2,1): cumulative (1,1), (2,2), (4,4) → three outputs
        (ISO_2D, (32, 16), [(32, 16), (16, 8), (8, 4)]),
    ],
)
def test_deep_supervision_outputs_in_training_only(config, shape, expected) -> None:
    model = MultiTaskUNet(**config, heads={"a": 1, "b": 2}, deep_supervision=True).train()
    x = torch.randn(1, config["in_channels"], *shape)
    outputs = model(x)
    for name, channels in {"a": 1, "b": 2}.items():
        assert [tuple(out.shape) for out in outputs[name]] == [(1, channels, *size) for size in expected]
    strides = model.deep_supervision_strides
    assert [tuple(s // d for s, d in zip(shape, stride, strict=True)) for stride in strides] == expected
    with torch.no_grad():
        evaluated = model.eval()(x)
    assert tuple(evaluated["b"].shape) == (1, 2, *shape)
    torch.testing.assert_close(evaluated["b"], outputs["b"][0].detach())  # InstanceNorm: same in both modes


def test_parameter_count_by_hand() -> None:
    # encoder: stem 1→4 3×3 (36+4) + norm 8 = 48; stage 0 block 4→4: 2·(4·4·9+4) + 2·8 = 312;
    # stage 1 block 4→8 stride 2: (4·8·9+8) + 16 + (8·8·9+8) + 16 + 1×1 shortcut 4·8 + 16 = 960 → 1320
    # decoder body: transposed 8→4 2×2 (8·4·4+4 = 132) + conv 8→4 3×3 (292) + norm 8 = 432
    # heads (one decoder stage): 4·c + c → 5 for c = 1, 10 for c = 2
    heads = {"a": 1, "b": 2}
    shared = MultiTaskUNet(**TINY_2D, heads=heads, shared_decoder=True)
    separate = MultiTaskUNet(**TINY_2D, heads=heads, shared_decoder=False)
    assert _n_params(shared.encoder) == 1320
    assert _n_params(shared) == 1320 + 432 + 15
    assert _n_params(separate) == 1320 + 2 * 432 + 15
    three = MultiTaskUNet(**ANISO_3D, heads=HEADS, shared_decoder=False)
    one = MultiTaskUNet(**ANISO_3D, heads=HEADS, shared_decoder=True)
    body = _n_params(one) - _n_params(one.encoder) - sum(_n_params(h) for h in one.decoders["shared"].heads.values())
    assert _n_params(three) - _n_params(one) == (len(HEADS) - 1) * body


@pytest.mark.parametrize("shared", [False, True])
def test_state_dict_holds_every_tensor_once_and_saves_as_safetensors(shared: bool, tmp_path: Path) -> None:
    model = MultiTaskUNet(**ANISO_3D, heads=HEADS, shared_decoder=shared, deep_supervision=True)
    state = model.state_dict()
    pointers = [tensor.data_ptr() for tensor in state.values() if tensor.numel()]
    assert len(pointers) == len(set(pointers))
    assert sum(key.startswith("encoder.") for key in state) > 0
    assert not any(".encoder." in key for key in state)
    assert sum(state[key].numel() for key in state if "running" not in key) == _n_params(model)
    path = tmp_path / "model.safetensors"
    safetensors.torch.save_file(state, str(path))
    fresh = MultiTaskUNet(**ANISO_3D, heads=HEADS, shared_decoder=shared, deep_supervision=True)
    fresh.load_state_dict(safetensors.torch.load_file(str(path)), strict=True)
    x = torch.randn(1, 2, 8, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x)["ink"], model.eval()(x)["ink"])


@pytest.mark.parametrize("shared", [False, True])
def test_every_head_trains_the_encoder_and_only_its_own_decoder(shared: bool) -> None:
    model = MultiTaskUNet(**ANISO_3D, heads=HEADS, shared_decoder=shared, deep_supervision=True).train()
    x = torch.randn(2, 2, 8, 16, 16)
    for name in HEADS:
        model.zero_grad(set_to_none=True)
        outputs = model(x)
        sum(out.square().mean() for out in outputs[name]).backward()
        stem = model.encoder.stem[0].weight.grad
        # (the deepest block's convolutions get no gradient at initialisation: its last norm scale is zero)
        deepest = model.encoder.stages[-1][0].conv2[1].weight.grad
        assert stem is not None and stem.abs().sum() > 0
        assert deepest is not None and deepest.abs().sum() > 0
        if not shared:
            for other in HEADS:
                grads = [p.grad for p in model.decoders[other].parameters()]
                if other == name:
                    assert all(g is not None for g in grads)
                else:
                    assert all(g is None for g in grads)


def test_residual_blocks_start_as_their_shortcut() -> None:
    model = MultiTaskUNet(**TINY_2D, heads={"a": 1})
    block = model.encoder.stages[1][0]
    assert torch.count_nonzero(block.conv2[1].weight) == 0
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(block(x), torch.nn.functional.leaky_relu(block.shortcut(x), 0.01))


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"strides": [[1, 1], [2, 2], [2, 2]]}, "one stride"),
        ({"n_conv_per_stage_decoder": [1, 1]}, "n_conv_per_stage_decoder"),
        ({"kernel_sizes": [[3, 3], [2, 2]]}, "odd"),
        ({"spatial_dims": 4}, "spatial_dims"),
    ],
)
def test_bad_arguments(changes, match) -> None:
    with pytest.raises(ValueError, match=match):
        MultiTaskUNet(**(TINY_2D | changes), heads={"a": 1})
    with pytest.raises(ValueError, match="heads"):
        MultiTaskUNet(**TINY_2D, heads={"a.b": 1})


def test_bad_input_shapes() -> None:
    model = MultiTaskUNet(**ISO_2D, heads={"a": 1})
    assert model.must_be_divisible_by == (8, 4)
    with pytest.raises(ValueError, match="multiple"):
        model(torch.randn(1, 3, 20, 16))
    with pytest.raises(ValueError, match="expected input"):
        model(torch.randn(1, 1, 32, 16))


def test_onnx_export_with_dynamic_batch(tmp_path: Path) -> None:
    import onnxruntime

    model = MultiTaskUNet(**TINY_2D, heads={"a": 1, "b": 2}, deep_supervision=True).eval()

    class Flat(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            outputs = self.model(x)
            return outputs["a"], outputs["b"]

    path = tmp_path / "unet.onnx"
    axes = {name: {0: "batch"} for name in ("image", "a", "b")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Flat(), (torch.randn(1, 1, 16, 16),), str(path), dynamo=False, input_names=["image"],
            output_names=["a", "b"], dynamic_axes=axes,
        )  # fmt: skip
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 1, 16, 16)
    onnx_a, onnx_b = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        expected = model.eval()(x)
    torch.testing.assert_close(torch.from_numpy(onnx_a), expected["a"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.from_numpy(onnx_b), expected["b"], rtol=1e-4, atol=1e-5)
