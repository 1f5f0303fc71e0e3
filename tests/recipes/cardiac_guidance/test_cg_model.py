"""cardiac-guidance model: dreamer shapes and training for both token types, stop-gradient, loss, GuidanceNet, ONNX."""

from __future__ import annotations

from pathlib import Path

import onnxruntime
import pytest
import torch

from medtrain.engine.export import export_onnx
from medtrain.recipes.cardiac_guidance.model import CardiacDreamer, DreamerLoss, DreamerOutput, GuidanceNet

SMALL = {
    "image_size": 64,
    "backbone_depth": 10,
    "base_width": 8,
    "d_model": 32,
    "num_heads": 2,
    "num_layers": 1,
    "head_hidden": 16,
}
TOKENS = {"channel": 64, "spatial": 4}  # 8·base_width channels; ⌈64/32⌉² positions


pytestmark = pytest.mark.usefixtures("seeded_one_thread")


def _batch(size: int = 3, image_size: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (
        torch.rand(size, 1, image_size, image_size),
        torch.randn(size, 6),
        torch.rand(size, 1, image_size, image_size),
    )


@pytest.mark.parametrize("token_type", ["channel", "spatial"])
def test_dreamer_shapes(token_type: str) -> None:
    model = CardiacDreamer(token_type=token_type, **SMALL)
    ft1, action, ft2 = _batch()
    tokens = TOKENS[token_type]
    assert model.num_tokens == tokens
    out = model(ft1, action, ft2)
    assert out.at1.shape == out.at2.shape == (3, 6)
    assert out.imagined.shape == (3, tokens, 32)
    assert out.target_tokens is not None and out.target_tokens.shape == (3, tokens, 32)
    assert model(ft1, action).target_tokens is None
    assert model.encode(ft1).shape == (3, tokens, 32)
    with pytest.raises(ValueError, match="images"):
        model.encode(torch.rand(3, 1, 32, 32))
    with pytest.raises(ValueError, match="action"):
        model.imagine(model.encode(ft1), torch.randn(3, 5))


def test_imagined_tokens_depend_on_the_action() -> None:
    model = CardiacDreamer(**SMALL).eval()
    ft1, action, _ = _batch()
    with torch.no_grad():
        tokens = model.encode(ft1)
        assert not torch.allclose(model.imagine(tokens, action), model.imagine(tokens, -action))


@pytest.mark.parametrize("token_type", ["channel", "spatial"])
def test_both_token_types_train(token_type: str) -> None:
    model = CardiacDreamer(token_type=token_type, dropout=0.0, **SMALL)
    criterion = DreamerLoss(lambda_t2_action=1.0, lambda_latent=0.5)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    ft1, action, ft2 = _batch(8)
    at1, at2 = torch.randn(8, 6), torch.randn(8, 6)
    losses, main = [], []
    for _ in range(30):
        terms = criterion(model(ft1, action, ft2), at1, at2)
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
        losses.append(terms["loss"].item())
        main.append(terms["main_task_loss"].item())
    assert losses[-1] < 0.5 * losses[0], losses
    assert main[-1] < 0.6 * main[0], main


def test_latent_target_gets_no_gradient() -> None:
    model = CardiacDreamer(dropout=0.0, **SMALL).eval()  # eval: BatchNorm uses running stats → repeatable
    ft1, action, ft2 = _batch()
    ft2.requires_grad_(True)
    out = model(ft1, action, ft2)
    assert out.target_tokens is not None and out.target_tokens.requires_grad is False
    DreamerLoss()(out, torch.zeros(3, 6), torch.zeros(3, 6))["latent_loss"].backward()
    assert ft2.grad is None
    with_target = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    assert any(name.startswith("encoder.backbone") for name in with_target)

    model.zero_grad()
    constant = model.encode(ft2).detach().clone()  # the same target, a constant by construction
    plain = model(ft1, action)
    torch.nn.functional.mse_loss(plain.imagined, constant).backward()
    without = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    assert with_target.keys() == without.keys()
    for name, grad in with_target.items():
        torch.testing.assert_close(grad, without[name], msg=name)


@pytest.mark.parametrize("token_type", ["channel", "spatial"])
def test_main_task_on_ft2_trains_the_encoder_through_ft2(token_type: str) -> None:
    """``ft2_grad``: one encoder pass over [ft1; ft2]; ``at2_from_ft2 = guide(encode(ft2))`` with gradient, the
    latent target still without; in eval mode (BatchNorm on running statistics) the same numbers as separately."""
    model = CardiacDreamer(token_type=token_type, dropout=0.0, backbone_last_stride=1, **SMALL).eval()
    ft1, action, ft2 = _batch()
    ft2.requires_grad_(True)
    out = model(ft1, action, ft2, ft2_grad=True)
    assert out.at2_from_ft2 is not None and out.at2_from_ft2.shape == (3, 6)
    assert out.target_tokens is not None and out.target_tokens.requires_grad is False
    assert out.imagined.shape == (3, {"channel": 64, "spatial": 16}[token_type], 32)  # 64 px → 4×4 at stride 16
    with torch.no_grad():
        torch.testing.assert_close(out.at2_from_ft2, model.guide(model.encode(ft2)))
        torch.testing.assert_close(out.at1, model(ft1, action).at1)
    assert model(ft1, action, ft2).at2_from_ft2 is None  # without ft2_grad: ft2 only as the latent target
    DreamerLoss(lambda_ft2_action=1.0)(out, torch.zeros(3, 6), torch.zeros(3, 6))["ft2_task_loss"].backward()
    assert ft2.grad is not None and float(ft2.grad.abs().sum()) > 0


def _output(target: torch.Tensor | None, at2_from_ft2: torch.Tensor | None = None) -> DreamerOutput:
    return DreamerOutput(
        at1=torch.tensor([[0.0, 2.0]]),
        at2=torch.tensor([[1.0, 1.0]]),
        imagined=torch.tensor([[[1.0, 2.0]]]),
        target_tokens=target,
        at2_from_ft2=at2_from_ft2,
    )


AT1, AT2 = torch.tensor([[0.5, 0.0]]), torch.tensor([[1.0, 0.0]])


@pytest.mark.parametrize(
    ("kwargs", "target", "expected"),
    [
        # main: d = (-0.5, 2), β=1 → (0.5·0.25, 2 − 0.5) → mean 0.8125; aux: d = (0, 1) → (0, 0.5) → 0.25
        # latent: MSE((1, 2), (0, 0)) = 2.5
        ({}, None, {"main_task_loss": 0.8125, "aux_loss": 0.25, "latent_loss": 0.0, "loss": 1.0625}),
        (
            {"lambda_t2_action": 2.0, "lambda_latent": 0.1},
            torch.zeros(1, 1, 2),
            {"main_task_loss": 0.8125, "aux_loss": 0.25, "latent_loss": 2.5, "loss": 0.8125 + 0.5 + 0.25},
        ),
        (
            {"lambda_t2_action": 2.0, "lambda_latent": 0.1, "primary_task_only": True},
            torch.zeros(1, 1, 2),
            {"main_task_loss": 0.8125, "aux_loss": 0.25, "latent_loss": 2.5, "loss": 0.8125},
        ),
        # β = 0.5: main d = (-0.5, 2) → (0.5 − 0.25, 2 − 0.25) → 1.0; aux d = (0, 1) → (0, 0.75) → 0.375
        ({"beta": 0.5}, None, {"main_task_loss": 1.0, "aux_loss": 0.375, "latent_loss": 0.0, "loss": 1.375}),
        # main task on ft2: at2_from_ft2 = (1, 3) vs at2 = (1, 0): d = (0, 3) → (0, 2.5) → 1.25
        ({"lambda_ft2_action": 0.4}, "ft2", {"ft2_task_loss": 1.25, "loss": 0.8125 + 0.25 + 0.4 * 1.25}),
        ({"lambda_ft2_action": 0.4, "primary_task_only": True}, "ft2", {"ft2_task_loss": 1.25, "loss": 0.8125}),
        ({"lambda_ft2_action": 0.4}, None, {"ft2_task_loss": 0.0, "loss": 1.0625}),
    ],
)
def test_dreamer_loss_table(kwargs: dict, target: torch.Tensor | str | None, expected: dict[str, float]) -> None:
    output = _output(None, torch.tensor([[1.0, 3.0]])) if target == "ft2" else _output(target)
    terms = DreamerLoss(**kwargs)(output, AT1, AT2)
    assert set(terms) == {"loss", "main_task_loss", "aux_loss", "latent_loss", "ft2_task_loss"}
    for name, value in expected.items():
        assert terms[name].dim() == 0
        assert terms[name].item() == pytest.approx(value), name


def test_guidance_net_denormalises_and_shares_modules() -> None:
    dreamer = CardiacDreamer(**SMALL).eval()
    mean, std = [1.0, -2.0, 3.0, 0.0, 10.0, -5.0], [2.0, 0.5, 1.0, 3.0, 0.1, 4.0]
    net = GuidanceNet(dreamer, mean, std).eval()
    assert net.encoder is dreamer.encoder and net.head is dreamer.head
    keys = set(net.state_dict())
    assert {"mean", "std"} <= keys and not any(key.startswith("transformer") for key in keys)
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        normalised = dreamer.guide(dreamer.encode(x))
        torch.testing.assert_close(net(x), normalised * torch.tensor(std) + torch.tensor(mean))
        dreamer.head.mlp[-1].bias.add_(1.0)  # a change to the dreamer is a change to the net
        torch.testing.assert_close(net(x), (normalised + 1.0) * torch.tensor(std) + torch.tensor(mean))
    with pytest.raises(ValueError, match="6 values"):
        GuidanceNet(dreamer, mean[:5], std)
    with pytest.raises(ValueError, match="positive"):
        GuidanceNet(dreamer, mean, [0.0, *std[1:]])


def test_guidance_net_exports_to_onnx(tmp_path: Path) -> None:
    dreamer = CardiacDreamer(**SMALL)
    net = GuidanceNet(dreamer, [0.5] * 6, [2.0] * 6)
    x = torch.rand(2, 1, 64, 64)
    path = export_onnx(net, (x,), tmp_path / "guidance.onnx", input_names=["image"], output_names=["action"])
    assert net.training  # modes restored
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (x, torch.rand(5, 1, 64, 64)):
        (onnx_out,) = session.run(["action"], {"image": batch.numpy()})
        with torch.no_grad():
            expected = net.eval()(batch)
        torch.testing.assert_close(torch.from_numpy(onnx_out), expected, rtol=1e-3, atol=1e-4)
