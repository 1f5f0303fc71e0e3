"""Weights (safetensors) and ONNX export from :mod:`medtrain.engine.export`, checked against torch outputs."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from medtrain.engine import export
from medtrain.engine.export import export_onnx, load_safetensors, save_safetensors
from medtrain.errors import CheckpointError


class ConvNet(torch.nn.Module):
    """Small 2-D classifier with batch norm; returns logits."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.norm = torch.nn.BatchNorm2d(4)
        self.fc = torch.nn.Linear(4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.norm(self.conv(x))).mean(dim=(2, 3)))


class TwoHeads(torch.nn.Module):
    """MLP taking two inputs and returning a dict of two outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Linear(5, 8)
        self.logits = torch.nn.Linear(8, 2)
        self.score = torch.nn.Linear(8, 1)

    def forward(self, x: torch.Tensor, extra: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = torch.relu(self.body(x)) + extra
        return {"logits": self.logits(hidden), "score": self.score(hidden)}


class Tied(torch.nn.Module):
    """Encoder/decoder sharing one weight matrix."""

    def __init__(self) -> None:
        super().__init__()
        self.encode = torch.nn.Linear(4, 4, bias=False)
        self.decode = torch.nn.Linear(4, 4, bias=False)
        self.decode.weight = self.encode.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class CallCounter(torch.nn.Module):
    """Returns a different value on each call, so the traced graph cannot match later torch runs."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x + float(self.calls)


def _conv_net(seed: int = 0) -> ConvNet:
    torch.manual_seed(seed)
    model = ConvNet()
    model.norm.running_mean.uniform_(-0.5, 0.5)
    model.norm.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _ort_run(path: Path, feeds: dict[str, torch.Tensor]) -> list[np.ndarray]:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {name: tensor.numpy() for name, tensor in feeds.items()})


# ---------------------------------------------------------------------------------------------- safetensors


@pytest.mark.parametrize("factory", [_conv_net, TwoHeads, Tied])
def test_safetensors_round_trip_gives_identical_outputs(tmp_path: Path, factory: type[torch.nn.Module]) -> None:
    torch.manual_seed(1)
    source, target = factory().eval(), factory().eval()
    target.load_state_dict(
        {k: torch.randn_like(v) if v.is_floating_point() else v + 1 for k, v in target.state_dict().items()}
    )
    path = save_safetensors(source, tmp_path / "w.safetensors", metadata={"recipe": "demo"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]  # no temporary file left
    assert load_safetensors(target, path) == {"recipe": "demo"}
    inputs = {
        ConvNet: (torch.randn(2, 1, 8, 8),),
        TwoHeads: (torch.randn(2, 5), torch.randn(2, 8)),
        Tied: (torch.randn(2, 4),),
    }[type(source)]
    with torch.no_grad():
        expected, actual = source(*inputs), target(*inputs)
    if isinstance(expected, dict):
        assert expected.keys() == actual.keys()
        assert all(torch.equal(expected[key], actual[key]) for key in expected)
    else:
        assert torch.equal(expected, actual)
    if isinstance(target, Tied):
        assert target.decode.weight is target.encode.weight


def test_load_safetensors_names_missing_and_unexpected_keys(tmp_path: Path) -> None:
    path = save_safetensors(_conv_net(), tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError) as error:
        load_safetensors(TwoHeads(), path)
    message = str(error.value)
    assert "missing keys [body.bias, body.weight," in message
    assert "unexpected keys [conv.bias, conv.weight, fc.bias," in message
    with pytest.raises(CheckpointError, match=r"other shapes.*fc\.weight \(3, 4\) vs model \(5, 4\)"):
        load_safetensors(ConvNet(classes=5), path)


def test_load_safetensors_non_strict_keeps_missing_weights(tmp_path: Path) -> None:
    source, target = _conv_net(0), _conv_net(1)
    del source.fc
    path = save_safetensors(source, tmp_path / "w.safetensors")
    fc_before = target.fc.weight.detach().clone()
    load_safetensors(target, path, strict=False)
    assert torch.equal(target.conv.weight, source.conv.weight)
    assert torch.equal(target.fc.weight, fc_before)


@pytest.mark.parametrize("damage", ["missing", "garbage", "truncated"])
def test_load_safetensors_rejects_missing_or_corrupt_files(tmp_path: Path, damage: str) -> None:
    path = save_safetensors(_conv_net(), tmp_path / "w.safetensors")
    if damage == "missing":
        path.unlink()
    elif damage == "garbage":
        path.write_bytes(b"\x00not a safetensors file at all")
    else:
        path.write_bytes(path.read_bytes()[:-10])
    pattern = "weights file not found" if damage == "missing" else "cannot read safetensors file"
    with pytest.raises(CheckpointError, match=pattern):
        load_safetensors(ConvNet(), path)


def test_save_safetensors_rejects_non_string_metadata(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="metadata"):
        save_safetensors(_conv_net(), tmp_path / "w.safetensors", metadata={"epoch": 3})  # type: ignore[dict-item]


# ---------------------------------------------------------------------------------------------- ONNX


@pytest.mark.parametrize("example_batch", [1, 3])
def test_export_onnx_conv_net_has_a_dynamic_batch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, example_batch: int
) -> None:
    model = _conv_net().train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    path = tmp_path / "out" / "model.onnx"
    with caplog.at_level(logging.INFO, logger=export.__name__):
        result = export_onnx(
            model,
            (torch.randn(example_batch, 1, 8, 8),),
            path,
            input_names=["image"],
            output_names=["logits"],
        )
    assert result == path
    assert [p.name for p in path.parent.iterdir()] == ["model.onnx"]  # single file, no temporary left
    assert "with the dynamo exporter" in caplog.text
    assert model.training and model.norm.training  # modes restored
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # BN stats untouched
    model.eval()
    for batch in (1, 5):
        image = torch.randn(batch, 1, 8, 8)
        (logits,) = _ort_run(path, {"image": image})
        with torch.no_grad():
            np.testing.assert_allclose(logits, model(image).numpy(), rtol=1e-4, atol=1e-5)


def test_export_onnx_dict_outputs_follow_output_names(tmp_path: Path) -> None:
    torch.manual_seed(2)
    model = TwoHeads().eval()
    path = export_onnx(
        model,
        (torch.randn(1, 5), torch.randn(1, 8)),
        tmp_path / "heads.onnx",
        input_names=["x", "extra"],
        output_names=["score", "logits"],
    )
    x, extra = torch.randn(4, 5), torch.randn(4, 8)
    score, logits = _ort_run(path, {"x": x, "extra": extra})
    with torch.no_grad():
        expected = model(x, extra)
    np.testing.assert_allclose(score, expected["score"].numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(logits, expected["logits"].numpy(), rtol=1e-4, atol=1e-5)


def test_export_onnx_falls_back_to_torchscript(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_export = torch.onnx.export

    def no_dynamo(*args: object, dynamo: bool, **kwargs: object) -> object:
        if dynamo:
            raise RuntimeError("dynamo export unavailable\nsecond line")
        return real_export(*args, dynamo=dynamo, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", no_dynamo)
    model = _conv_net()
    with caplog.at_level(logging.INFO, logger=export.__name__):
        path = export_onnx(
            model, (torch.randn(2, 1, 8, 8),), tmp_path / "m.onnx", input_names=["image"], output_names=["y"]
        )
    assert "(RuntimeError: dynamo export unavailable); using the TorchScript exporter" in caplog.text
    assert "with the torchscript exporter" in caplog.text
    image = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        np.testing.assert_allclose(_ort_run(path, {"image": image})[0], model(image).numpy(), rtol=1e-4, atol=1e-5)


def test_export_onnx_mismatch_raises_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"ONNX output 'y' differs from torch at batch size [12]: max abs diff"):
        export_onnx(CallCounter(), (torch.zeros(2, 3),), tmp_path / "m.onnx", input_names=["x"], output_names=["y"])
    assert list(tmp_path.iterdir()) == []


def test_export_onnx_rejects_inconsistent_arguments(tmp_path: Path) -> None:
    model, image = _conv_net(), torch.randn(2, 1, 8, 8)
    with pytest.raises(ValueError, match="input_names"):
        export_onnx(model, (image,), tmp_path / "m.onnx", input_names=["a", "b"], output_names=["y"])
    with pytest.raises(ValueError, match="one common first axis"):
        export_onnx(
            TwoHeads(),
            (torch.randn(2, 5), torch.randn(3, 8)),
            tmp_path / "m.onnx",
            input_names=["x", "e"],
            output_names=["logits", "score"],
        )
    with pytest.raises(ValueError, match="returns 1 outputs"):
        export_onnx(model, (image,), tmp_path / "m.onnx", input_names=["image"], output_names=["a", "b"])
    assert list(tmp_path.iterdir()) == []
