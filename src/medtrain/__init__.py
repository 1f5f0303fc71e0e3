"""medtrain: one engine, one config system and one CLI for medical and scientific training recipes.

The Python API mirrors the CLI::

    import medtrain
    result = medtrain.train("my.yaml", overrides=["trainer.max_epochs=5"])
    metrics = medtrain.evaluate(result.best_checkpoint)
    predictor = medtrain.load_predictor(result.run_dir)

Heavy imports (torch, lightning) happen on first use of these functions, not on ``import medtrain``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["RunResult", "__version__", "evaluate", "load_predictor", "train"]

if TYPE_CHECKING:
    from medtrain.api import RunResult, evaluate, load_predictor, train


def __getattr__(name: str) -> Any:
    if name in {"train", "evaluate", "load_predictor", "RunResult"}:
        from medtrain import api

        return getattr(api, name)
    raise AttributeError(f"module 'medtrain' has no attribute {name!r}")
