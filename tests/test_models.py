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
    # The first layer's backward computes only the weight gradient (its input, the image, needs none).
    first, rest = 2 * 784 * 100, 2 * (100 * 100 + 100 * 10)
    assert train_flops_per_sample(MLP((100, 100))) == 2 * first + 3 * rest
    conv1, conv2 = 2 * (28 * 28 * 16 * 9), 2 * (14 * 14 * 32 * 16 * 9)
    assert train_flops_per_sample(SmallCNN((16, 32), (128,))) == \
        2 * conv1 + 3 * (conv2 + 2 * (32 * 49 * 128 + 128 * 10))


def _textbook_order(cnn: SmallCNN) -> torch.nn.Sequential:
    """The same modules (shared weights) as conv -> activation -> pool in both blocks."""
    layers = list(cnn)
    for i, layer in enumerate(layers[:-1]):
        if isinstance(layer, torch.nn.MaxPool2d) and not isinstance(layers[i + 1], torch.nn.Conv2d | torch.nn.Flatten):
            layers[i], layers[i + 1] = layers[i + 1], layers[i]
    return torch.nn.Sequential(*layers)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("inputs", ["random", "constant"])  # a constant image makes every pooling window a tie
def test_cnn_pool_before_relu_is_bit_identical_to_the_textbook_order(inputs, channels_last):
    torch.manual_seed(0)
    cnn = SmallCNN()
    if channels_last:  # as `train` runs the CNN on the CPU
        cnn = cnn.to(memory_format=torch.channels_last)
    kinds = [type(m).__name__ for m in cnn][:6]
    assert kinds == ["Conv2d", "MaxPool2d", "ReLU", "Conv2d", "MaxPool2d", "ReLU"]
    textbook = _textbook_order(cnn)
    assert [type(m).__name__ for m in textbook][:6] == ["Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "MaxPool2d"]
    x = torch.randn(64, 1, 28, 28) if inputs == "random" else torch.full((64, 1, 28, 28), 0.5)
    y = torch.randint(0, 10, (64,))
    grads = []
    for model in (cnn, textbook):
        model.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (loss_a, grads_a), (loss_b, grads_b) = grads
    assert torch.equal(loss_a, loss_b)
    assert all(torch.equal(a, b) for a, b in zip(grads_a, grads_b))
    assert any(g.abs().sum() > 0 for g in grads_a)


def test_cnn_keeps_the_textbook_order_for_non_monotone_activations():
    kinds = [type(m).__name__ for m in SmallCNN(activation="gelu")][:6]
    assert kinds == ["Conv2d", "GELU", "MaxPool2d", "Conv2d", "GELU", "MaxPool2d"]


@pytest.mark.parametrize("model", [
    {"name": "mlp"},
    {"name": "mlp", "hidden": [300, 7, 50], "activation": "gelu", "dropout": 0.2, "batchnorm": True},
    {"name": "mlp", "hidden": [20], "activation": "tanh"},
    {"name": "cnn"},
    {"name": "cnn", "channels": [8, 24], "hidden": [64, 32], "batchnorm": True, "activation": "sigmoid"},
], ids=["mlp", "mlp-deep-bn", "mlp-tanh", "cnn", "cnn-bn"])
def test_the_memory_estimate_counts_what_a_forward_pass_makes(model):
    """device._model_size follows the layers' shapes by hand; a forward pass with hooks on the meta device (slow
    to load, hence not used by the package) counts the same."""
    from fashionmlp.config import config_from_dict
    from fashionmlp.device import _model_size

    cfg = config_from_dict({"model": model}).model
    with torch.device("meta"):
        net = build_model(cfg).eval()
    counted = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: counted.append(out[0].numel()))
             for m in net.modules() if not list(m.children())]
    net(torch.empty((1, 1, 28, 28), device="meta"))
    for hook in hooks:
        hook.remove()
    assert _model_size(cfg) == (sum(p.numel() for p in net.parameters()), sum(counted))
