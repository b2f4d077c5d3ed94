"""The repository itself: what building the package leaves behind is ignored by git."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", ["build/lib/fashionmlp/cli.py", "dist/fashionmlp-0.1.0-py3-none-any.whl",
                                  "fashionmlp.egg-info/PKG-INFO", "runs/x/summary.json", "data/a.gz"])
def test_build_and_run_outputs_are_ignored(path):
    """`pip install .` / `pip wheel .` write build/ (and dist/) into the source tree."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    result = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT)
    assert result.returncode == 0, f"{path} is not ignored by .gitignore"
