"""CNNAutoencoder of the ultrasound-ae recipe: shapes for any depth, embedding, sequence mode, loss, training, ONNX."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from medtrain.recipes.ultrasound_ae.model import AutoencoderLoss, CNNAutoencoder, stage_lengths

SMALL = {"embedding_dim": 16, "widths": (8, 8, 16, 16), "pool_length": 2}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("depth", [130, 97, 64, 1, 2, 7, 16, 17, 200, 1300])
def test_reconstruction_has_the_input_shape_for_any_depth(depth: int) -> None:
    model = CNNAutoencoder(depth=depth)
    x = torch.randn(2, 3, depth, 5)
    recon, z = model(x)
    assert recon.shape == x.shape
    assert z.shape == (2, 256)
    assert model.decode(z).shape == x.shape


@pytest.mark.parametrize(("channels", "pulses", "depth"), [(1, 1, 50), (2, 3, 33), (4, 8, 130), (3, 5, 9)])
def test_reconstruction_shape_for_other_channels_and_pulses(channels: int, pulses: int, depth: int) -> None:
    model = CNNAutoencoder(channels=channels, depth=depth, pulses=pulses, **SMALL)
    x = torch.randn(3, channels, depth, pulses)
    recon, z = model(x)
    assert recon.shape == x.shape
    assert z.shape == (3, 16)


def test_forward_reconstructs_the_input_depth_and_decode_any_depth() -> None:
    model = CNNAutoencoder(depth=130, **SMALL).eval()
    x = torch.randn(2, 3, 97, 5)
    recon, z = model(x)
    assert recon.shape == x.shape
    assert model.decode(z).shape == (2, 3, 130, 5)
    assert model.decode(z, 131).shape == (2, 3, 131, 5)
    torch.testing.assert_close(model.decode(z, 97), recon)


def test_default_architecture_and_bad_inputs() -> None:
    model = CNNAutoencoder()
    assert model.encoder.widths == (32, 64, 128, 512)
    assert len(model.encoder.stages) == 4
    assert stage_lengths(130, 4) == [130, 65, 33, 17, 9]
    assert stage_lengths(1, 4) == [1, 1, 1, 1, 1]
    with pytest.raises(ValueError, match="expected tokens"):
        model(torch.randn(2, 3, 130, 4))
    with pytest.raises(ValueError, match="expected tokens"):
        model(torch.randn(3, 130, 5))
    with pytest.raises(ValueError, match="expected embeddings"):
        model.decode(torch.randn(2, 255))
    with pytest.raises(ValueError, match="depth"):
        model.decode(torch.randn(2, 256), 0)
    with pytest.raises(ValueError, match="widths"):
        CNNAutoencoder(widths=())


def test_embedding_is_layer_normalised() -> None:
    model = CNNAutoencoder()  # training mode: BatchNorm normalises with batch statistics
    z = model.encode(torch.randn(5, 3, 130, 5) * 7 + 3)
    assert z.shape == (5, 256)
    # at initialisation the LayerNorm affine is the identity: each embedding has mean 0 and (biased) std 1
    torch.testing.assert_close(model.encoder.norm.weight, torch.ones(256))
    torch.testing.assert_close(model.encoder.norm.bias, torch.zeros(256))
    torch.testing.assert_close(z.mean(-1), torch.zeros(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(-1, unbiased=False), torch.ones(5), atol=1e-3, rtol=0)


def test_sequence_mode_encodes_each_token_on_its_own() -> None:
    model = CNNAutoencoder(depth=64, **SMALL).eval()
    x = torch.randn(2, 10, 3, 64, 5)
    recon, z = model.forward_sequence(x)
    assert recon.shape == x.shape
    assert z.shape == (2, 10, 16)
    torch.testing.assert_close(model.encode_sequence(x), z)
    for b in range(2):
        for t in (0, 4, 9):
            token_recon, token_z = model(x[b, t : t + 1])
            torch.testing.assert_close(token_z[0], z[b, t], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(token_recon[0], recon[b, t], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="sequences"):
        model.forward_sequence(x[0])


def test_loss_matches_a_hand_computation() -> None:
    recon, target, z = torch.randn(4, 3, 10, 5), torch.randn(4, 3, 10, 5), torch.randn(4, 6)
    diff = (recon - target).numpy().astype(np.float64)
    mse, l1 = (diff**2).mean(), np.abs(diff).mean()
    penalty = (z.numpy().astype(np.float64) ** 2).sum(axis=1).mean()

    terms = AutoencoderLoss()(recon, target, z)
    assert set(terms) == {"loss", "mse", "l1", "embedding_l2"}
    assert all(value.dim() == 0 for value in terms.values())
    assert terms["mse"].item() == pytest.approx(mse, rel=1e-5)
    assert terms["l1"].item() == pytest.approx(l1, rel=1e-5)
    assert terms["embedding_l2"].item() == pytest.approx(penalty, rel=1e-5)
    assert terms["loss"].item() == pytest.approx(0.8 * mse + 0.2 * l1 + 0.001 * penalty, rel=1e-5)

    custom = AutoencoderLoss(mse_weight=0.5, l1_weight=1.5, embedding_l2=0.1)(recon, target, z)
    assert custom["loss"].item() == pytest.approx(0.5 * mse + 1.5 * l1 + 0.1 * penalty, rel=1e-5)
    # sequence embeddings [B, T, E]: the squared norm is averaged over B·T
    seq = AutoencoderLoss()(recon, target, z.reshape(2, 2, 6))
    assert seq["embedding_l2"].item() == pytest.approx(penalty, rel=1e-5)
    no_z = AutoencoderLoss()(recon, target)
    assert no_z["embedding_l2"].item() == 0.0
    assert no_z["loss"].item() == pytest.approx(0.8 * mse + 0.2 * l1, rel=1e-5)
    with pytest.raises(ValueError, match="shape"):
        AutoencoderLoss()(recon, target[:, :, :9], z)
    with pytest.raises(ValueError, match="≥ 0"):
        AutoencoderLoss(mse_weight=-1.0)


def test_gradient_reaches_every_parameter() -> None:
    model = CNNAutoencoder(depth=40)
    x = torch.randn(4, 3, 40, 5)
    recon, z = model(x)
    AutoencoderLoss()(recon, x, z)["loss"].backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_overfits_a_fixed_batch() -> None:
    # white-noise tokens have no structure to exploit: the MSE falls only by memorising the batch; it crosses
    # 20 % of its initial value after about 55 steps (several seeds) and is about 8 % after 80
    model = CNNAutoencoder(depth=64)
    x = torch.randn(8, 3, 64, 5)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = AutoencoderLoss()
    mses: list[float] = []
    for _ in range(100):
        recon, z = model(x)
        terms = loss_fn(recon, x, z)
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
        mses.append(terms["mse"].item())
        if mses[-1] < 0.2 * mses[0]:
            break
    assert mses[-1] < 0.2 * mses[0], f"MSE {mses[0]:.4f} → {mses[-1]:.4f} after {len(mses)} steps"
    assert len(mses) > 10  # the threshold is not met by chance at the start


def test_encoder_exports_to_onnx_with_a_dynamic_batch(tmp_path: Path) -> None:
    model = CNNAutoencoder().eval()
    encoder = model.encoder_module()
    path = tmp_path / "encoder.onnx"
    noisy = logging.getLogger("torch.onnx._internal.exporter._registration")  # "torchvision is not installed"
    level = noisy.level
    noisy.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                encoder,
                (torch.randn(2, 3, 130, 5),),
                dynamo=True,
                dynamic_shapes=({0: torch.export.Dim("batch")},),  # one dict per positional input
                verbose=False,
            )
    finally:
        noisy.setLevel(level)
    program.save(path)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for batch in (1, 3):
        x = torch.randn(batch, 3, 130, 5)
        (onnx_z,) = session.run(None, {name: x.numpy()})
        with torch.no_grad():
            torch_z = model.encode(x).numpy()
        assert onnx_z.shape == (batch, 256)
        np.testing.assert_allclose(onnx_z, torch_z, atol=1e-4, rtol=0)


def test_augment_tokens_gain_is_a_raw_gain_and_shift_moves_depth() -> None:
    from medtrain.recipes.ultrasound_ae.data import augment_tokens

    x = torch.arange(2 * 2 * 6 * 1, dtype=torch.float32).reshape(2, 2, 6, 1)
    zero = torch.tensor([0.5, -2.5])
    generator = torch.Generator().manual_seed(0)
    gained = augment_tokens(x, zero=zero, gain=0.5, shift=0, generator=generator)
    ratio = (gained - zero.view(1, 2, 1, 1)) / (x - zero.view(1, 2, 1, 1))  # one factor per token and channel
    factors = ratio[..., 0, 0]
    np.testing.assert_allclose(ratio.numpy(), factors[..., None, None].expand_as(ratio).numpy(), rtol=1e-5)
    assert ((factors >= 0.5) & (factors <= 1.5)).all() and factors.unique().numel() == 4

    shifted = augment_tokens(x, zero=zero, gain=0.0, shift=2, generator=torch.Generator().manual_seed(1))
    for token in range(2):
        column = shifted[token, 0, :, 0]
        k = int(x[token, 0, 0, 0] + 2 - column[2])  # the value at depth 2 came from depth 2 - k
        assert -2 <= k <= 2
        expected = x[token, :, (torch.arange(6) - k).clamp(0, 5), :]
        assert torch.equal(shifted[token], expected)
    assert torch.equal(augment_tokens(x, zero=zero, gain=0.0, shift=0), x)


def test_embedding_map_adds_umap_when_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.machinery
    import sys
    import types

    from medtrain.recipes.ultrasound_ae import plots

    embeddings = np.random.default_rng(0).standard_normal((40, 6)).astype(np.float32)
    labels = np.arange(40) % 5
    assert plots.plot_embedding_map(embeddings, labels, tmp_path / "without.png").stat().st_size > 5_000

    calls = []

    class FakeUMAP:
        def __init__(self, **options: object) -> None:
            calls.append(options)

        def fit_transform(self, data: np.ndarray) -> np.ndarray:
            return data[:, :2]

    fake = types.ModuleType("umap")
    fake.__spec__ = importlib.machinery.ModuleSpec("umap", None)
    fake.UMAP = FakeUMAP  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "umap", fake)
    assert plots.plot_embedding_map(embeddings, labels, tmp_path / "with.png").stat().st_size > 5_000
    assert calls == [{"n_components": 2, "n_neighbors": 15, "random_state": 0}]
