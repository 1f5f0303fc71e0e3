"""Test set-up: the test-only ``toy`` recipe is registered through the plugin variable, for this process and
for the CLI subprocesses the tests start."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
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


@pytest.fixture()
def seeded_one_thread() -> Iterator[None]:
    """``torch.manual_seed(0)`` and one intra-op thread for the test (restored after): small models run faster on
    one thread than on two contended ones on a 2-core machine. Use with ``pytest.mark.usefixtures``."""
    import torch

    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
