"""Shared fixtures: tiny Fashion-MNIST-format IDX files (made by tests/helpers.py) and configs that point at them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from hypothesis import settings

from helpers import cli, run_dir_of, tiny_config, write_dataset

# The same generated examples on every run: a property test that fails, fails every time.
# (HYPOTHESIS_PROFILE=explore draws new examples, to hunt for failures on purpose.)
settings.register_profile("fashionmlp", derandomize=True, print_blob=True)
settings.register_profile("explore", max_examples=500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fashionmlp"))

REAL_DATA_CANDIDATES = [os.environ.get("FASHIONMLP_DATA_DIR"),
                        str(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fashion-mnist")]
TRAIN_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")


def pytest_collection_modifyitems(items):
    """Tests that use the real data carry the `realdata` marker (so `-m "not realdata"` leaves them out)."""
    for item in items:
        if "real_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.realdata)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("fmnist"))


@pytest.fixture
def write_config(tmp_path, tiny_data):
    """write_config(**sections) -> path of a YAML config based on tiny_config."""

    def write(name: str = "cfg.yaml", **sections) -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(tiny_config(tiny_data, **sections)))
        return path

    return write


@pytest.fixture(scope="session")
def real_data() -> Path:
    for candidate in REAL_DATA_CANDIDATES:
        if candidate and all((Path(candidate) / f).is_file() for f in TRAIN_FILES):
            return Path(candidate)
    pytest.skip("real Fashion-MNIST files not found (set FASHIONMLP_DATA_DIR)")


@pytest.fixture(scope="module")
def good_run(tmp_path_factory, tiny_data) -> Path:
    """A finished one-epoch run on the tiny data, one per test module (tests may add files to it)."""
    tmp = tmp_path_factory.mktemp("good")
    path = tmp / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tiny_data, train={"epochs": 1})))
    return run_dir_of(cli("train", "--config", path, "--runs-dir", tmp))
