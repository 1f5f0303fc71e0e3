"""What the network predicts: the targets read from label files and the auxiliary targets derived from them,
resolved from the config and the dataset into one :class:`TargetSpec` each.

Label encodings (what a batch holds for a target, ``[C, *spatial]``):

* ``softmax`` — class indices ``0 … out_channels − 1`` in one channel (``int64``);
* ``sigmoid`` — ``out_channels`` binary channels; a one-channel label file with ``out_channels`` K > 1 holds
  values ``0 … K`` and channel ``k`` is ``label == k + 1``;
* ``none`` (regression) and auxiliary targets — real values, ``out_channels`` channels.

Every target also has a loss mask ``[1, *spatial]`` (1 = the loss sees this voxel).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from medtrain.config.errors import ConfigError
from medtrain.recipes.volume_seg.aux_targets import aux_channels
from medtrain.recipes.volume_seg.schema import AuxiliaryTaskConfig, LossTerm, TargetConfig, VolumeSegConfig

Kind = Literal["binary", "multiclass", "regression", "vector"]

#: deep-supervision interpolation of a target's labels: nearest for classes, linear for real values
DS_MODE = {"binary": "label", "multiclass": "label", "regression": "regression", "vector": "regression"}

DEFAULT_LOSSES: dict[str, tuple[LossTerm, ...]] = {
    "sigmoid": (LossTerm(name="DiceBCELoss"),),
    "softmax": (LossTerm(name="DiceCELoss"),),
    "none": (LossTerm(name="MaskedMSELoss"),),
    "distance_transform": (LossTerm(name="MaskedSmoothL1Loss"),),
    "surface_normals": (LossTerm(name="CosineSimilarityLoss"),),
    "structure_tensor": (LossTerm(name="MaskedMSELoss"),),
    "inplane_direction": (LossTerm(name="MaskedMSELoss"),),
}


@dataclass(frozen=True)
class TargetSpec:
    """One output head: its channels, activation, kind (for metrics and plots), losses and weight; auxiliary
    targets carry their task config and source target."""

    name: str
    out_channels: int
    activation: Literal["sigmoid", "softmax", "none"]
    kind: Kind
    losses: tuple[LossTerm, ...]
    weight: float
    aux: AuxiliaryTaskConfig | None = None

    @property
    def source(self) -> str | None:
        """The target an auxiliary target is derived from (None for label targets)."""
        return self.aux.source_target if self.aux is not None else None

    @property
    def is_segmentation(self) -> bool:
        return self.kind in ("binary", "multiclass")

    def to_dict(self) -> dict[str, object]:
        """JSON summary for plan.json and model.json."""
        return {
            "out_channels": self.out_channels,
            "activation": self.activation,
            "kind": self.kind,
            "weight": self.weight,
            "source": self.source,
            "aux_type": self.aux.type if self.aux is not None else None,
            "losses": [term.model_dump() for term in self.losses],
        }


def _label_target(name: str, target: TargetConfig, in_channels: int, default_losses: Sequence[str]) -> TargetSpec:
    out_channels = target.out_channels or in_channels
    if target.activation == "softmax" and out_channels < 2:
        raise ConfigError(
            f"data.targets.{name}: a softmax target needs out_channels ≥ 2 (the number of classes incl. background),"
            f" got {out_channels}"
        )
    losses = target.losses or tuple(LossTerm(name=loss) for loss in default_losses) or DEFAULT_LOSSES[target.activation]
    kind: Kind = {"sigmoid": "binary", "softmax": "multiclass", "none": "regression"}[target.activation]  # type: ignore[assignment]
    return TargetSpec(name, out_channels, target.activation, kind, losses, target.weight)


def _aux_target(name: str, task: AuxiliaryTaskConfig, spatial_dims: int) -> TargetSpec:
    channels = aux_channels(task.type, spatial_dims)
    kind: Kind = "regression" if channels == 1 else "vector"
    return TargetSpec(name, channels, "none", kind, task.losses or DEFAULT_LOSSES[task.type], task.loss_weight, task)


def resolve_targets(
    cfg: VolumeSegConfig, discovered: Sequence[str], *, in_channels: int, spatial_dims: int
) -> dict[str, TargetSpec]:
    """Label targets (``data.targets`` in their order, else the discovered names sorted) with defaults filled
    in, then the auxiliary targets; raises :class:`ConfigError` for an auxiliary task whose source is not a
    binary label target."""
    configured: Mapping[str, TargetConfig] = cfg.data.targets or {name: TargetConfig() for name in sorted(discovered)}
    specs = {name: _label_target(name, target, in_channels, cfg.loss.losses) for name, target in configured.items()}
    for name, task in cfg.auxiliary_tasks.items():
        source = specs.get(task.source_target)
        if source is None:
            known = ", ".join(specs)
            raise ConfigError(f"auxiliary_tasks.{name}.source_target '{task.source_target}' is not a target ({known})")
        if source.activation == "none":
            raise ConfigError(f"auxiliary_tasks.{name}: source target '{source.name}' is a regression target")
        specs[name] = _aux_target(name, task, spatial_dims)
    return specs
