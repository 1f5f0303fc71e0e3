"""The volume-seg recipe: how the shared engine builds its plan, data, task, prepare step, demo data and predictor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medtrain.engine.datamodule import MedtrainDataModule
from medtrain.io.atomic import atomic_write_json
from medtrain.recipes.volume_seg.data import VolumeSegDataModule, build_split_indices
from medtrain.recipes.volume_seg.dataset_plan import PREPARED_FILE, build_dataset_plan
from medtrain.recipes.volume_seg.predict import VolumeSegPredictor
from medtrain.recipes.volume_seg.schema import VolumeSegConfig
from medtrain.recipes.volume_seg.task import VolumeSegTask
from medtrain.registry import FlagAlias, Recipe, SyntheticData

_DATA_COMMANDS = ("train", "validate", "plan", "evaluate")
_PREPARE_TOO = (*_DATA_COMMANDS, "prepare")


def _alias(names: tuple[str, ...], key: str, help_text: str, *, switch: bool = False) -> FlagAlias:
    return FlagAlias(names, key, help_text, switch=switch, commands=_PREPARE_TOO)


def _with_data(cfg: VolumeSegConfig, **changes: Any) -> VolumeSegConfig:
    """``cfg`` with ``data.<key>`` replaced (configs are frozen)."""
    return cfg.model_copy(update={"data": cfg.data.model_copy(update=changes)})


class VolumeSegRecipe(Recipe):
    """nnU-Net-style auto-planned multi-task U-Net for 2-D/3-D volumes with masks and auxiliary targets."""

    name = "volume-seg"
    summary = "nnU-Net-style planned multi-task U-Net for 2-D/3-D volumes (targets, masks, auxiliary targets)"
    config_class = VolumeSegConfig
    #: seed 002's flags (``--batch-size`` is a generic shortcut, ``--config-path`` an alias of ``--config``)
    flag_aliases = (
        FlagAlias(
            ("-i", "--input"),
            "data.root",
            "dataset (images/, labels/, masks/) or prepared folder",
            commands=_DATA_COMMANDS,
        ),
        FlagAlias(("-o", "--output"), "output_dir", "where runs are written", commands=("train",)),
        _alias(("--format",), "data.format", "zarr, tif or nifti"),
        _alias(("--patch-size", "--patch_size"), "data.patch_size", "patch size, e.g. 192,192,192"),
        _alias(("--loss",), "loss.losses", "loss names for targets that list none, e.g. DiceBCELoss"),
        _alias(("--train-split", "--train_split"), "data.train_split", "fraction of volumes for training"),
        _alias(("--loss-on-label-only",), "loss.on_label_only", "loss only where labelled", switch=True),
        FlagAlias(("--from-nnunet",), "prepare.from_nnunet", "nnU-Net raw DatasetXXX folder", commands=("prepare",)),
        FlagAlias(("--nnunet-labels",), "prepare.nnunet_labels", "per_label or multiclass", commands=("prepare",)),
    )

    predict_options = (
        FlagAlias(("--overlap",), "overlap", "window overlap in [0, 1)", commands=("predict",)),
        FlagAlias(("--mirror-axes",), "mirror_axes", "test-time mirroring axes, e.g. 0,1,2", commands=("predict",)),
        FlagAlias(("--output-format", "--format"), "output_format", "zarr, tif or nifti", commands=("predict",)),
        FlagAlias(
            ("--save-probabilities",),
            "save_probabilities",
            "also write probabilities",
            switch=True,
            commands=("predict",),
        ),
        FlagAlias(("--chunk-size",), "chunk_size", "voxels per chunk, e.g. 128,256,256", commands=("predict",)),
        FlagAlias(("--window-batch-size",), "batch_size", "windows per forward pass", commands=("predict",)),
    )

    def build_datamodule(self, cfg: VolumeSegConfig) -> VolumeSegDataModule:
        return VolumeSegDataModule(cfg)

    def build_task(self, cfg: VolumeSegConfig, datamodule: VolumeSegDataModule) -> VolumeSegTask:
        return VolumeSegTask(cfg, datamodule)

    def load_predictor(self, model_dir: Path) -> VolumeSegPredictor:
        return VolumeSegPredictor(model_dir)

    def check_data(self, cfg: VolumeSegConfig) -> list[str]:
        """Check every image/label/mask pair, the targets, the split and the patch size against the volumes."""
        plan = build_dataset_plan(cfg)
        split = ", ".join(f"{name} {len(members)}" for name, members in plan.split.as_dict().items())
        return [
            f"dataset: {plan.dataset} ({len(plan.cases)} volumes, {plan.spatial_dims}-D, "
            f"{plan.in_channels} channel(s))",
            "targets: "
            + ", ".join(f"{name} ({spec.kind}, {spec.out_channels} ch)" for name, spec in plan.targets.items()),
            f"split by volume: {split}",
            f"patch {list(plan.patch_size)}, batch {plan.batch_size}, {plan.topology.n_stages} stages",
        ]

    def plan(self, cfg: VolumeSegConfig, datamodule: MedtrainDataModule | None = None) -> dict[str, Any]:
        if isinstance(datamodule, VolumeSegDataModule) and datamodule.plan is not None:
            return datamodule.plan.to_dict()
        return build_dataset_plan(cfg).to_dict()

    def prepare(self, cfg: VolumeSegConfig, input_dir: Path | None, output_dir: Path) -> Path:
        """Check the dataset and write its normalisation statistics, valid-patch indices, ``plan.json`` and
        ``prepared.json`` to ``output_dir`` (usable as ``data.root``). With ``--from-nnunet`` the nnU-Net raw
        dataset is first imported into ``output_dir`` in medtrain's layout and prepared in place."""
        from medtrain.errors import UsageError

        output_dir = Path(output_dir)
        if cfg.prepare.from_nnunet is not None:
            from medtrain.recipes.volume_seg.nnunet_import import import_nnunet

            dataset = import_nnunet(Path(cfg.prepare.from_nnunet), output_dir, mode=cfg.prepare.nnunet_labels)
            cfg = _with_data(cfg, root=dataset, cache_dir=output_dir / ".medtrain_cache")
        elif input_dir is None:
            raise UsageError("medtrain prepare volume-seg needs --input DATASET or --from-nnunet DatasetXXX")
        else:
            cfg = _with_data(cfg, root=Path(input_dir), cache_dir=output_dir)
        plan = build_dataset_plan(cfg)
        indices = build_split_indices(plan, cfg)
        atomic_write_json(output_dir / "plan.json", plan.to_dict())
        if cfg.prepare.from_nnunet is None:
            atomic_write_json(
                output_dir / PREPARED_FILE,
                {
                    "dataset": str(plan.dataset.resolve()),
                    "valid_patches": {split: len(index) for split, index in indices.items()},
                },
            )
        return output_dir

    def generate_synthetic(self, output: Path, *, seed: int) -> SyntheticData:
        from medtrain.recipes.volume_seg.synthetic import generate_volume_dataset

        root = output / "volumes"
        names = generate_volume_dataset(root, n_volumes=8, shape=(32, 64, 64), spatial_dims=3, seed=seed)
        return SyntheticData(
            root=root,
            predict_input=root / "images",
            overrides=(
                f"data.train_volumes=[{','.join(names[:5])}]",
                f"data.val_volumes=[{names[5]}]",
                f"data.test_volumes=[{','.join(names[6:])}]",
            ),
        )
