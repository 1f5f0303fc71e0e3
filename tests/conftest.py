"""Test set-up: the test-only ``toy`` recipe is registered through the plugin variable, for this process and
for the CLI subprocesses the tests start."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
os.environ["MEDTRAIN_RECIPE_PLUGINS"] = "toyrecipe:ToyRecipe"
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
for name in [key for key in os.environ if key.startswith("MEDTRAIN_") and key != "MEDTRAIN_RECIPE_PLUGINS"]:
    del os.environ[name]


@pytest.fixture()
def toy_data(tmp_path: Path) -> Path:
    from toyrecipe import make_table

    return make_table(tmp_path / "data")


@pytest.fixture()
def toy_overrides(toy_data: Path, tmp_path: Path) -> list[str]:
    return [f"data.root={toy_data}", f"output_dir={tmp_path / 'runs'}"]
