"""nn.resnet and nn.tokens: ResNet feature shapes and depths, pretrained loading, sincos positions, tokenizers."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import safetensors.torch
import torch

from medtrain.errors import DataError
from medtrain.nn.resnet import (
    RESNET_LAYERS,
    ResNetFeatures,
    adapt_input_conv,
    feature_grid,
    load_pretrained_backbone,
)
from medtrain.nn.tokens import ChannelTokens, SpatialTokens, build_tokenizer, sincos_position_2d

TINY = {"depth": 10, "base_width": 4}


pytestmark = pytest.mark.usefixtures("seeded_one_thread")


def test_resnet34_at_224_gives_512_by_7_by_7() -> None:
    model = ResNetFeatures().eval()
    assert model.out_channels == 512
    with torch.no_grad():
        assert model(torch.rand(1, 1, 224, 224)).shape == (1, 512, 7, 7)


def test_layer_table() -> None:
    assert RESNET_LAYERS == {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


@pytest.mark.parametrize(("depth", "blocks"), [(10, (1, 1, 1, 1)), (18, (2, 2, 2, 2)), (34, (3, 4, 6, 3))])
def test_blocks_per_stage_and_widths(depth: int, blocks: tuple[int, ...]) -> None:
    model = ResNetFeatures(depth=depth, base_width=8)
    stages = [model.layer1, model.layer2, model.layer3, model.layer4]
    assert tuple(len(stage) for stage in stages) == blocks
    assert [stage[-1].conv2.out_channels for stage in stages] == [8, 16, 32, 64]
    assert model.out_channels == 64
    assert model.conv1.in_channels == 1


@pytest.mark.parametrize("depth", [10, 34])
def test_same_network_as_monai_resnet(depth: int) -> None:
    from monai.networks.nets import ResNet  # imported here: importing MONAI costs seconds (see nn/resnet.py)

    reference = ResNet(
        block="basic",
        layers=list(RESNET_LAYERS[depth]),
        block_inplanes=[8, 16, 32, 64],
        spatial_dims=2,
        n_input_channels=1,
        conv1_t_size=7,
        conv1_t_stride=2,
        shortcut_type="B",
        bias_downsample=False,
        feed_forward=False,
    ).eval()
    for bn in [m for m in reference.modules() if isinstance(m, torch.nn.BatchNorm2d)]:
        torch.nn.init.uniform_(bn.weight, 0.5, 1.5)
        torch.nn.init.uniform_(bn.running_mean, -0.1, 0.1)
    ours = ResNetFeatures(depth=depth, base_width=8).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)  # same parameter names and shapes
    x = torch.rand(2, 1, 64, 96)
    with torch.no_grad():  # MONAI's forward ends with a global average pool
        torch.testing.assert_close(ours(x).mean(dim=(2, 3)), reference(x), rtol=1e-4, atol=1e-5)


def test_bad_depth_is_refused() -> None:
    with pytest.raises(ValueError, match="depth"):
        ResNetFeatures(depth=50)


@pytest.mark.parametrize(
    ("image_size", "grid"), [(224, 7), (256, 8), (128, 4), (64, 2), (32, 1), (33, 2), (100, 4), (1, 1), (225, 8)]
)
def test_feature_grid_table(image_size: int, grid: int) -> None:
    assert feature_grid(image_size) == grid


@pytest.mark.parametrize(("image_size", "grid"), [(224, 14), (64, 4), (32, 2), (33, 3), (100, 7), (1, 1)])
def test_feature_grid_table_with_last_stride_1(image_size: int, grid: int) -> None:
    assert feature_grid(image_size, last_stride=1) == grid


@pytest.mark.parametrize("last_stride", [1, 2])
@pytest.mark.parametrize(("height", "width"), [(33, 100), (64, 1), (70, 45)])
def test_feature_map_side_is_ceil_of_side_over_16_times_last_stride(height: int, width: int, last_stride: int) -> None:
    model = ResNetFeatures(**TINY, last_stride=last_stride).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 1, height, width))
    assert out.shape == (1, 32, feature_grid(height, last_stride), feature_grid(width, last_stride))


def test_last_stride_1_has_the_same_parameters_and_keys() -> None:
    classic, fine = ResNetFeatures(**TINY), ResNetFeatures(**TINY, last_stride=1)
    assert {k: v.shape for k, v in classic.state_dict().items()} == {k: v.shape for k, v in fine.state_dict().items()}
    fine.load_state_dict(classic.state_dict(), strict=True)
    assert fine.layer4[0].conv1.stride == (1, 1) and fine.layer4[0].downsample[0].stride == (1, 1)
    assert fine.layer3[0].conv1.stride == (2, 2) and classic.layer4[0].conv1.stride == (2, 2)


@pytest.mark.parametrize("last_stride", [0, 3])
def test_bad_last_stride_is_refused(last_stride: int) -> None:
    with pytest.raises(ValueError, match="last_stride"):
        ResNetFeatures(**TINY, last_stride=last_stride)
    with pytest.raises(ValueError, match="last_stride"):
        feature_grid(64, last_stride)


def test_sincos_matches_a_hand_computation() -> None:
    # dim 8 → D = 2 frequencies per axis: ω = (1, 1/10000^(1/2) = 0.01); index = row·width + col.
    emb = sincos_position_2d(2, 3, 8)
    assert emb.shape == (6, 8) and emb.dtype == torch.float32

    def row(r: int, c: int) -> list[float]:
        return [
            math.sin(r), math.sin(r / 100), math.cos(r), math.cos(r / 100),
            math.sin(c), math.sin(c / 100), math.cos(c), math.cos(c / 100),
        ]  # fmt: skip

    expected = torch.tensor([row(0, 0), row(0, 1), row(0, 2), row(1, 0), row(1, 1), row(1, 2)])
    torch.testing.assert_close(emb, expected)
    torch.testing.assert_close(emb[0], torch.tensor([0.0, 0, 1, 1, 0, 0, 1, 1]))


@pytest.mark.parametrize("dim", [0, 6, 10])
def test_sincos_needs_a_multiple_of_4(dim: int) -> None:
    with pytest.raises(ValueError, match="multiple of 4"):
        sincos_position_2d(2, 2, dim)


def test_tokenizers_at_the_default_sizes() -> None:
    features = torch.randn(2, 512, 7, 7)
    channel, spatial = build_tokenizer("channel", 512, (7, 7), 16), build_tokenizer("spatial", 512, (7, 7), 16)
    assert isinstance(channel, ChannelTokens) and isinstance(spatial, SpatialTokens)
    assert (channel.num_tokens, spatial.num_tokens) == (512, 49)
    assert channel(features).shape == (2, 512, 16)
    assert spatial(features).shape == (2, 49, 16)
    assert channel.proj.in_features == 49 and spatial.proj.in_features == 512
    with pytest.raises(ValueError, match="token type"):
        build_tokenizer("patch", 512, (7, 7), 16)  # type: ignore[arg-type]


def test_channel_tokens_are_projection_plus_channel_embedding() -> None:
    tokens = ChannelTokens(3, (2, 2), 8)
    features = torch.randn(4, 3, 2, 2)
    expected = features.reshape(4, 3, 4) @ tokens.proj.weight.T + tokens.proj.bias + tokens.channel_embedding
    torch.testing.assert_close(tokens(features), expected)
    assert "channel_embedding" in tokens.state_dict()
    with pytest.raises(ValueError, match="feature map"):
        tokens(torch.randn(4, 3, 3, 2))


def test_spatial_tokens_differ_by_position() -> None:
    tokens = SpatialTokens(5, (2, 3), 8)
    features = torch.randn(1, 5, 1, 1).expand(2, 5, 2, 3)  # the same features at every position
    out = tokens(features)
    assert out.shape == (2, 6, 8)
    assert torch.cdist(out[0], out[0]).add(torch.eye(6)).min() > 1e-3  # all six tokens pairwise distinct
    torch.testing.assert_close(out - out[:, :1], (tokens.position - tokens.position[0]).expand(2, 6, 8))
    assert "position" not in tokens.state_dict()  # fixed, not persistent


def _torchvision_style(module: ResNetFeatures) -> dict[str, torch.Tensor]:
    """A torchvision ResNet state dict built from ``module``: its keys already are torchvision's, plus ``fc``."""
    state = {name: tensor.clone() for name, tensor in module.state_dict().items()}
    for name in ["conv1.weight", "bn1.running_var", "layer1.0.conv2.weight", "layer2.0.downsample.0.weight"]:
        assert name in state  # torchvision names
    assert "layer2.0.downsample.0.bias" not in state  # torchvision's shortcut convolutions have no bias
    state["fc.weight"] = torch.randn(10, module.out_channels)
    state["fc.bias"] = torch.randn(10)
    return state


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_pretrained_round_trip_into_one_channel(tmp_path: Path, suffix: str) -> None:
    source = ResNetFeatures(in_channels=3, **TINY)
    for bn in [m for m in source.modules() if isinstance(m, torch.nn.BatchNorm2d)]:
        torch.nn.init.uniform_(bn.running_mean, -0.5, 0.5)
        torch.nn.init.uniform_(bn.running_var, 0.5, 2.0)
    state = _torchvision_style(source)
    path = tmp_path / f"resnet{suffix}"
    if suffix == ".safetensors":
        safetensors.torch.save_file(state, str(path))
    else:
        torch.save({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, path)  # old format

    target = ResNetFeatures(in_channels=1, **TINY)
    ignored = load_pretrained_backbone(target, path)

    assert ignored == ["fc.bias", "fc.weight"]
    loaded = target.state_dict()
    torch.testing.assert_close(loaded["conv1.weight"], state["conv1.weight"].sum(dim=1, keepdim=True))
    for name, tensor in loaded.items():
        if name != "conv1.weight" and name in state:
            torch.testing.assert_close(tensor, state[name], msg=name)
    grey = torch.rand(2, 1, 64, 64)
    with torch.no_grad():  # a grey image gives what the 3-channel net gives for it replicated on 3 channels
        torch.testing.assert_close(target.eval()(grey), source.eval()(grey.expand(2, 3, 64, 64)))


def test_pretrained_missing_key_and_shape_mismatch_raise_data_error(tmp_path: Path) -> None:
    state = _torchvision_style(ResNetFeatures(in_channels=3, **TINY))
    del state["layer3.0.bn2.weight"]
    path = tmp_path / "missing.safetensors"
    safetensors.torch.save_file(state, str(path))
    target = ResNetFeatures(**TINY)
    before = {name: tensor.clone() for name, tensor in target.state_dict().items()}
    with pytest.raises(DataError, match=r"missing\.safetensors.*layer3\.0\.bn2\.weight"):
        load_pretrained_backbone(target, path)
    for name, tensor in target.state_dict().items():
        torch.testing.assert_close(tensor, before[name])  # unchanged

    wider = tmp_path / "wider.safetensors"
    safetensors.torch.save_file(_torchvision_style(ResNetFeatures(in_channels=3, depth=10, base_width=8)), str(wider))
    with pytest.raises(DataError, match=r"wider\.safetensors.*conv1\.weight.*shape"):
        load_pretrained_backbone(target, wider)
    with pytest.raises(DataError, match="not found"):
        load_pretrained_backbone(target, tmp_path / "absent.safetensors")
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(DataError, match="expected a"):
        load_pretrained_backbone(target, tmp_path / "weights.bin")
    (tmp_path / "broken.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(DataError, match="cannot read"):
        load_pretrained_backbone(target, tmp_path / "broken.safetensors")


def test_adapt_input_conv_formulas() -> None:
    weight = torch.arange(2 * 3 * 1 * 1, dtype=torch.float32).reshape(2, 3, 1, 1)  # out 0: 0,1,2 · out 1: 3,4,5
    assert adapt_input_conv(weight, 3) is weight
    torch.testing.assert_close(adapt_input_conv(weight, 1).flatten(), torch.tensor([3.0, 12.0]))
    two = adapt_input_conv(weight, 2)  # w[:, j mod 3] · 3/2
    torch.testing.assert_close(two.reshape(2, 2), torch.tensor([[0.0, 1.5], [4.5, 6.0]]))
