import pytest
import torch

from fashionmlp.config import load_config
from fashionmlp.models import MLP, SmallCNN, build_model, n_params, train_flops_per_sample


@pytest.mark.parametrize("overrides,params", [
    (["model.name=mlp"], 784 * 100 + 100 + 100 * 100 + 100 + 100 * 10 + 10),
    (["model.name=cnn", "model.hidden=[128]"], (9 * 16 + 16) + (9 * 16 * 32 + 32) + (32 * 49 * 128 + 128) + 1290),
])
def test_shapes_and_sizes(overrides, params):
    model = build_model(load_config(None, overrides).model)
    assert model(torch.zeros(7, 1, 28, 28)).shape == (7, 10)
    assert n_params(model) == params


def test_mlp_layout_and_activation():
    model = MLP((100, 100), "tanh")
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 100), (100, 100), (100, 10)]
    assert sum(isinstance(m, torch.nn.Tanh) for m in model) == 2


def test_flops_count():
    assert train_flops_per_sample(MLP((100, 100))) == 3 * 2 * (784 * 100 + 100 * 100 + 100 * 10)
    conv = 2 * (28 * 28 * 16 * 9) + 2 * (14 * 14 * 32 * 16 * 9)
    assert train_flops_per_sample(SmallCNN((16, 32), (128,))) == 3 * (conv + 2 * (32 * 49 * 128 + 128 * 10))
