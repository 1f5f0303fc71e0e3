"""LR schedules and optimizers from :mod:`medtrain.engine.optim` against hand-computed values.

Every case uses a base LR of 1.0 and 4 optimizer steps per epoch, so expected LRs are the schedule's
multiplier: ``t`` counts optimizer steps for per-step schedules and epochs for per-epoch ones.
"""

from __future__ import annotations

import io
import math
from typing import Any

import lightning as L
import pytest
import torch
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torch.utils.data import DataLoader, TensorDataset

from medtrain.config.schema import OptimConfig, SchedulerConfig
from medtrain.engine.optim import build_lr_scheduler, build_optimizer

STEPS_PER_EPOCH = 4
OPTIM = OptimConfig(name="adamw", lr=1.0)

# (scheduler config, max_epochs, interval, {t: expected LR}); comments give the formula behind a value.
CASES = [
    pytest.param(
        {"name": "cosine", "min_lr": 0.1},
        4,
        "step",
        # 0.1 + 0.9 * 0.5 * (1 + cos(pi * t / 16))
        {0: 1.0, 4: 0.8681980515339464, 8: 0.55, 16: 0.1},
        id="cosine",
    ),
    pytest.param(
        # warmup = max(2 steps, 1 epoch * 4) = 4 steps; then T' = 16 - 4 = 12
        {"name": "cosine", "min_lr": 0.1, "warmup_epochs": 1, "warmup_steps": 2, "warmup_start_factor": 0.1},
        4,
        "step",
        {0: 0.1, 2: 0.55, 4: 1.0, 10: 0.55, 16: 0.1},
        id="cosine-warmup",
    ),
    pytest.param(
        # T_0 = 1 epoch = 4 steps, T_1 = 8: restarts at t = 4 and 12
        {"name": "cosine_warm_restarts", "restart_epochs": 1, "restart_mult": 2, "min_lr": 0.0},
        4,
        "step",
        {0: 1.0, 2: 0.5, 4: 1.0, 6: 0.8535533905932737, 8: 0.5, 12: 1.0},
        id="restarts",
    ),
    pytest.param(
        {
            "name": "cosine_warm_restarts",
            "restart_epochs": 1,
            "restart_mult": 1,
            "min_lr": 0.2,
            "warmup_steps": 2,
            "warmup_start_factor": 0.5,
        },
        4,
        "step",
        {0: 0.5, 1: 0.75, 2: 1.0, 4: 0.6, 6: 1.0, 8: 0.6, 10: 1.0},
        id="restarts-warmup",
    ),
    pytest.param(
        # initial 1/10, final 1/10/100; peak at pct_start * 16 - 1 = 3, end at 15
        {"name": "onecycle", "pct_start": 0.25, "div_factor": 10.0, "final_div_factor": 100.0},
        4,
        "step",
        # t=1: 1 + (0.1 - 1) / 2 * (1 + cos(pi / 3)); t=9: halfway from 1 to 0.001
        {0: 0.1, 1: 0.325, 3: 1.0, 9: 0.5005, 15: 0.001},
        id="onecycle",
    ),
    pytest.param(
        {"name": "none", "warmup_steps": 4, "warmup_start_factor": 0.2},
        4,
        "step",
        {0: 0.2, 1: 0.4, 2: 0.6, 4: 1.0, 15: 1.0},
        id="none-warmup",
    ),
    pytest.param(
        {"name": "poly", "power": 2.0},
        4,
        "epoch",
        # (1 - e / 4) ** 2
        {0: 1.0, 1: 0.5625, 2: 0.25, 3: 0.0625, 4: 0.0},
        id="poly",
    ),
    pytest.param(
        {"name": "poly", "power": 0.9},
        4,
        "epoch",
        # nnU-Net default exponent: 0.75 ** 0.9, 0.5 ** 0.9
        {0: 1.0, 1: 0.7718895067235705, 2: 0.5358867312681466},
        id="poly-nnunet",
    ),
    pytest.param(
        # warmup ceil(3 steps / 4) = 1 epoch, then (1 - (e - 1) / 4) ** 2
        {"name": "poly", "power": 2.0, "warmup_steps": 3, "warmup_start_factor": 0.1},
        5,
        "epoch",
        {0: 0.1, 1: 1.0, 2: 0.5625, 3: 0.25, 4: 0.0625, 5: 0.0},
        id="poly-warmup",
    ),
    pytest.param(
        {"name": "step", "step_epochs": 2, "gamma": 0.5},
        5,
        "epoch",
        {0: 1.0, 1: 1.0, 2: 0.5, 3: 0.5, 4: 0.25},
        id="step",
    ),
    pytest.param(
        {"name": "step", "step_epochs": 2, "gamma": 0.5, "warmup_epochs": 2, "warmup_start_factor": 0.5},
        5,
        "epoch",
        {0: 0.5, 1: 0.75, 2: 1.0, 3: 1.0, 4: 0.5},
        id="step-warmup",
    ),
    pytest.param(
        # constant metric: best after step 1, bad epochs 1, 2 > patience -> halve; again; then floor 0.3
        {"name": "plateau", "plateau_patience": 1, "plateau_factor": 0.5, "min_lr": 0.3},
        6,
        "epoch",
        {0: 1.0, 1: 1.0, 2: 1.0, 3: 0.5, 4: 0.5, 5: 0.3},
        id="plateau",
    ),
    pytest.param(
        # 2 warmup epochs ignore the metric; plateau: best after step 3, reduce after step 4
        {
            "name": "plateau",
            "plateau_patience": 0,
            "plateau_factor": 0.5,
            "warmup_epochs": 2,
            "warmup_start_factor": 0.5,
        },
        5,
        "epoch",
        {0: 0.5, 1: 0.75, 2: 1.0, 3: 1.0, 4: 0.5},
        id="plateau-warmup",
    ),
]


def _build(sched: dict[str, Any], max_epochs: int) -> tuple[torch.optim.Optimizer, dict[str, Any]]:
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(1))], OPTIM)
    config = build_lr_scheduler(
        optimizer,
        SchedulerConfig(**sched),
        steps_per_epoch=STEPS_PER_EPOCH,
        max_epochs=max_epochs,
        monitor="val_loss",
    )
    assert config is not None
    return optimizer, config


def _advance(optimizer: torch.optim.Optimizer, scheduler: Any, steps: int) -> list[float]:
    """LR seen at each of ``steps`` scheduler steps; plateau schedulers get a constant metric."""
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if isinstance(scheduler, ReduceLROnPlateau):
            scheduler.step(1.0)
        else:
            scheduler.step()
    return lrs


@pytest.mark.parametrize(("sched", "max_epochs", "interval", "expected"), CASES)
def test_schedule_matches_formula(
    sched: dict[str, Any], max_epochs: int, interval: str, expected: dict[int, float]
) -> None:
    optimizer, config = _build(sched, max_epochs)
    assert config["interval"] == interval
    assert (config["frequency"], config["name"]) == (1, "lr")
    lrs = _advance(optimizer, config["scheduler"], max(expected) + 1)
    assert {t: lrs[t] for t in expected} == pytest.approx(expected, abs=1e-12)


class _LrRecorder(L.LightningModule):
    """Linear(4, 1) that records the LR at the start of every training batch and logs a constant val_loss."""

    def __init__(self, sched: dict[str, Any], max_epochs: int) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.sched = SchedulerConfig(**sched)
        self.max_epochs = max_epochs
        self.lrs: list[float] = []

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        self.log("val_loss", 1.0)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self.lrs.append(self.trainer.optimizers[0].param_groups[0]["lr"])

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = build_optimizer(self.parameters(), OPTIM)
        scheduler = build_lr_scheduler(
            optimizer,
            self.sched,
            steps_per_epoch=STEPS_PER_EPOCH,
            max_epochs=self.max_epochs,
            monitor="val_loss",
        )
        return {"optimizer": optimizer, "lr_scheduler": scheduler}


@pytest.mark.filterwarnings("ignore:.*(does not have many workers|smaller than the logging interval|LeafSpec)")
@pytest.mark.parametrize(("sched", "max_epochs", "interval", "expected"), CASES)
def test_lightning_steps_at_the_schedule_cadence(
    sched: dict[str, Any], max_epochs: int, interval: str, expected: dict[int, float]
) -> None:
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(32, 4, generator=generator), torch.randn(32, 1, generator=generator))
    module = _LrRecorder(sched, max_epochs)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=max_epochs,
        enable_progress_bar=False,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, DataLoader(data, batch_size=8), DataLoader(data, batch_size=32))

    total_steps = STEPS_PER_EPOCH * max_epochs
    assert len(module.lrs) == total_steps
    if interval == "step":
        got = {t: module.lrs[t] for t in expected if t < total_steps}
    else:
        epochs = [module.lrs[e * STEPS_PER_EPOCH : (e + 1) * STEPS_PER_EPOCH] for e in range(max_epochs)]
        assert all(len(set(epoch)) == 1 for epoch in epochs), epochs
        got = {e: epochs[e][0] for e in expected if e < max_epochs}
    assert got == pytest.approx({t: expected[t] for t in got}, abs=1e-12)


@pytest.mark.parametrize(("sched", "max_epochs", "interval", "expected"), CASES)
def test_resume_continues_the_same_curve(
    sched: dict[str, Any], max_epochs: int, interval: str, expected: dict[int, float]
) -> None:
    steps = max(expected) + 1
    reference = _advance(*_reference(sched, max_epochs), steps)

    optimizer, config = _build(sched, max_epochs)
    _advance(optimizer, config["scheduler"], steps // 2)
    buffer = io.BytesIO()
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": config["scheduler"].state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    resumed_optimizer, resumed = _build(sched, max_epochs)
    resumed_optimizer.load_state_dict(state["optimizer"])
    resumed["scheduler"].load_state_dict(state["scheduler"])
    assert _advance(resumed_optimizer, resumed["scheduler"], steps - steps // 2) == reference[steps // 2 :]


def test_resume_with_more_epochs_follows_the_new_schedule() -> None:
    """The multipliers come from the config, not the checkpoint: extending a cosine run stretches the curve."""
    sched = {"name": "cosine", "min_lr": 0.0}
    optimizer, config = _build(sched, max_epochs=2)
    _advance(optimizer, config["scheduler"], 2 * STEPS_PER_EPOCH)  # the old schedule has ended: lr == min_lr
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    state = {"optimizer": optimizer.state_dict(), "scheduler": config["scheduler"].state_dict()}

    resumed_optimizer, resumed = _build(sched, max_epochs=4)
    resumed_optimizer.load_state_dict(state["optimizer"])
    resumed["scheduler"].load_state_dict(state["scheduler"])
    (lr,) = _advance(resumed_optimizer, resumed["scheduler"], 2)[1:]
    t, total = 2 * STEPS_PER_EPOCH + 1, 4 * STEPS_PER_EPOCH
    assert lr == pytest.approx(OPTIM.lr * 0.5 * (1 + math.cos(math.pi * t / total)))


def _reference(sched: dict[str, Any], max_epochs: int) -> tuple[torch.optim.Optimizer, Any]:
    optimizer, config = _build(sched, max_epochs)
    return optimizer, config["scheduler"]


def test_min_lr_is_absolute_for_every_param_group() -> None:
    groups = [
        {"params": [torch.nn.Parameter(torch.zeros(1))]},
        {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.1},
    ]
    optimizer = build_optimizer(groups, OptimConfig(lr=1.0))
    config = build_lr_scheduler(optimizer, SchedulerConfig(name="cosine", min_lr=0.05), steps_per_epoch=2, max_epochs=2)
    assert config is not None
    for _ in range(4):
        optimizer.step()
        config["scheduler"].step()
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([0.05, 0.05])


def test_onecycle_keeps_the_optimizer_momentum() -> None:
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(1))], OptimConfig(betas=(0.9, 0.999)))
    config = build_lr_scheduler(optimizer, SchedulerConfig(name="onecycle"), steps_per_epoch=4, max_epochs=2)
    assert config is not None
    _advance(optimizer, config["scheduler"], 5)
    assert optimizer.param_groups[0]["betas"] == (0.9, 0.999)


@pytest.mark.parametrize(
    ("cfg", "cls", "expected"),
    [
        (
            OptimConfig(name="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4),
            torch.optim.SGD,
            {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4},
        ),
        (OptimConfig(name="sgd", momentum=0.9, nesterov=False), torch.optim.SGD, {"nesterov": False}),
        # Nesterov needs momentum: dropped rather than raising.
        (OptimConfig(name="sgd", momentum=0.0, nesterov=True), torch.optim.SGD, {"nesterov": False}),
        (
            OptimConfig(name="adamw", lr=3e-4, weight_decay=0.05, betas=(0.8, 0.99), eps=1e-6),
            torch.optim.AdamW,
            {"lr": 3e-4, "weight_decay": 0.05, "betas": (0.8, 0.99), "eps": 1e-6},
        ),
        (OptimConfig(name="adam", weight_decay=0.0), torch.optim.Adam, {"weight_decay": 0.0}),
    ],
)
def test_build_optimizer(cfg: OptimConfig, cls: type, expected: dict[str, Any]) -> None:
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(1))], cfg)
    assert type(optimizer) is cls
    assert {key: optimizer.param_groups[0][key] for key in expected} == expected


def test_build_optimizer_keeps_param_group_options() -> None:
    groups = [
        {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.5, "weight_decay": 0.0},
        {"params": [torch.nn.Parameter(torch.zeros(1))]},
    ]
    optimizer = build_optimizer(groups, OptimConfig(lr=0.01, weight_decay=0.1))
    assert [(g["lr"], g["weight_decay"]) for g in optimizer.param_groups] == [(0.5, 0.0), (0.01, 0.1)]


def test_none_without_warmup_builds_no_scheduler() -> None:
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(1))], OPTIM)
    cfg = SchedulerConfig(name="none")
    assert build_lr_scheduler(optimizer, cfg, steps_per_epoch=4, max_epochs=2) is None


def test_plateau_config_for_lightning() -> None:
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(1))], OPTIM)
    cfg = SchedulerConfig(name="plateau", warmup_epochs=1)
    config = build_lr_scheduler(optimizer, cfg, steps_per_epoch=4, max_epochs=3, monitor="val_dice", monitor_mode="max")
    assert config is not None
    assert isinstance(config["scheduler"], ReduceLROnPlateau)
    assert config["scheduler"].mode == "max"
    assert {k: v for k, v in config.items() if k != "scheduler"} == {
        "interval": "epoch",
        "frequency": 1,
        "name": "lr",
        "monitor": "val_dice",
        "strict": True,
    }


@pytest.mark.parametrize(
    ("sched", "kwargs", "match"),
    [
        ({"name": "onecycle", "warmup_steps": 1}, {}, "onecycle.*warmup"),
        ({"name": "onecycle", "warmup_epochs": 1}, {}, "onecycle.*warmup"),
        ({"name": "plateau"}, {}, "monitor"),
        ({"name": "cosine", "warmup_epochs": 2}, {}, "warmup of 8 steps"),
        ({"name": "poly", "warmup_steps": 5}, {}, "warmup of 2 epochs"),
        ({"name": "cosine"}, {"max_epochs": 0}, "max_epochs"),
    ],
)
def test_invalid_schedules_raise(sched: dict[str, Any], kwargs: dict[str, Any], match: str) -> None:
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(1))], OPTIM)
    kwargs = {"steps_per_epoch": 4, "max_epochs": 2} | kwargs
    with pytest.raises(ValueError, match=match):
        build_lr_scheduler(optimizer, SchedulerConfig(**sched), **kwargs)
