"""CUDA: deterministic by default, so two runs agree and a resumed run equals a straight one, as on the CPU.

The settings are checked everywhere (they are torch flags, set for a CUDA device whether or not one is here);
the runs themselves need a GPU and are skipped without one.
"""

from __future__ import annotations

import os

import pytest
import torch

from fashionmlp.config import config_from_dict
from fashionmlp.device import CUBLAS_WORKSPACE, deterministic_cuda

from helpers import cli, run_dir_of, tiny_config

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


@pytest.fixture
def restore_flags(monkeypatch):
    """The flags are process-wide: put them back after the test."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before[2], before[3]


@pytest.mark.parametrize("deterministic", [True, False])
def test_a_cuda_run_asks_for_deterministic_kernels_unless_told_not_to(tiny_data, restore_flags, deterministic):
    cfg = config_from_dict(tiny_config(tiny_data, train={"deterministic": deterministic}))
    deterministic_cuda(cfg, torch.device("cuda"))
    assert torch.are_deterministic_algorithms_enabled() == deterministic
    assert torch.backends.cudnn.deterministic == deterministic and torch.backends.cudnn.benchmark != deterministic
    assert os.environ.get("CUBLAS_WORKSPACE_CONFIG") == (CUBLAS_WORKSPACE if deterministic else None)


def test_a_cpu_run_changes_no_cuda_setting(tiny_data, restore_flags):
    before = torch.are_deterministic_algorithms_enabled()
    deterministic_cuda(config_from_dict(tiny_config(tiny_data)), torch.device("cpu"))
    assert torch.are_deterministic_algorithms_enabled() == before and "CUBLAS_WORKSPACE_CONFIG" not in os.environ


def _weights(run) -> dict:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True, map_location="cpu")["model"]


@needs_cuda
@pytest.mark.parametrize("model", [{"name": "mlp", "hidden": [32, 32]},
                                   {"name": "cnn", "channels": [4, 8], "hidden": [16], "batchnorm": True}])
def test_two_cuda_runs_agree_and_resume_is_exact(write_config, tmp_path, model):
    path = write_config(device="cuda", model=model, train={"epochs": 3}, data={"shift": 1, "flip": True})
    first = run_dir_of(cli("train", "--config", path, "--runs-dir", tmp_path / "a"))
    second = run_dir_of(cli("train", "--config", path, "--runs-dir", tmp_path / "b"))
    part = run_dir_of(cli("train", "--config", path, "--runs-dir", tmp_path / "c", "--epochs", 2))
    assert cli("train", "--resume", part, "--epochs", 3).exit_code == 0
    a, b, c = (_weights(r) for r in (first, second, part))
    for key in a:
        assert torch.equal(a[key], b[key]), key  # two runs: the same numbers
        assert torch.equal(a[key], c[key]), key  # stopped and resumed: the same numbers
