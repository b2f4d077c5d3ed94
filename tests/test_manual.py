"""fashionmlp.manual: NumPy functions and MLP against closed forms, finite differences and torch.autograd."""

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fashionmlp import manual as M
from fashionmlp.config import config_from_dict
from fashionmlp.data import load_fashion_mnist
from fashionmlp.manual.check import run_checks
from fashionmlp.manual.train import DEFAULTS, train_numpy

from helpers import cli

FD_TOL, AUTOGRAD_TOL = 1e-7, 1e-10


def test_import_needs_only_numpy():
    code = "import sys; from fashionmlp import manual; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------- closed forms


def test_closed_form_values():
    assert M.softmax(np.array([3.0, 3.0, 3.0, 3.0])) == pytest.approx([0.25] * 4)
    assert M.sigmoid(np.array(0.0)) == 0.5
    p = M.softmax(np.array([[1.0, 2.0, 0.5]]), axis=1)
    assert M.cross_entropy(np.array([[1.0, 2.0, 0.5]]), np.array([1])) == pytest.approx(-np.log(p[0, 1]))
    assert M.stable_logistic_loss(np.array([1.0]), np.array([0.0])) == pytest.approx(np.log(2))
    assert M.margin_logistic_loss(np.array([-1.0]), np.array([2.0])) == pytest.approx(np.log1p(np.exp(2.0)))
    assert M.logistic_loss(np.array([1.0, 0.0]), np.array([0.8, 0.3])) == pytest.approx(
        -(np.log(0.8) + np.log(0.7)) / 2)
    assert M.relu_grad(np.array([-1.0, 0.0, 2.0])).tolist() == [0.0, 0.0, 1.0]
    assert M.tanh_grad(np.array(0.0)) == 1.0 and M.sigmoid_grad(np.array(0.0)) == 0.25
    assert M.cross_entropy_grad(np.zeros((2, 4)), np.array([0, 3])) == pytest.approx(
        (np.full((2, 4), 0.25) - np.eye(4)[[0, 3]]) / 2)


def test_int_and_one_hot_labels_agree():
    z = np.random.default_rng(0).normal(size=(5, 4))
    y = np.array([0, 3, 1, 1, 2])
    assert M.cross_entropy(z, y) == pytest.approx(M.cross_entropy(z, M.one_hot(y, 4)))
    assert np.allclose(M.cross_entropy_grad(z, y), M.cross_entropy_grad(z, M.one_hot(y, 4)))


def test_extreme_inputs_are_finite_and_silent():
    z = np.array([-1e10, -1e3, -30.0, 0.0, 30.0, 1e3, 1e10])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any overflow/invalid RuntimeWarning fails the test
        with np.errstate(all="raise", under="ignore"):
            s = M.sigmoid(z)
            assert s[0] == 0.0 and s[-1] == 1.0 and np.all(np.isfinite(M.sigmoid_grad(z)))
            assert M.stable_logistic_loss(np.array([1.0, 0.0]), np.array([1e10, -1e10])) == 0.0
            assert M.stable_logistic_loss(np.array([0.0]), np.array([1e10])) == 1e10
            assert M.margin_logistic_loss(np.array([1.0]), np.array([-1e10])) == 1e10
            big = np.array([[1e10, 0.0, -1e10]])
            assert M.softmax(big).tolist() == [[1.0, 0.0, 0.0]]
            assert np.all(np.isfinite(M.log_softmax(big)))
            assert M.cross_entropy(big, np.array([2])) == 2e10
            assert M.logistic_loss(np.array([0.0]), M.sigmoid(np.array([1e10]))) == pytest.approx(-np.log(1e-12))


def test_naive_logistic_loss_is_wrong_where_the_stable_one_is_right():
    z, y = np.array([100.0]), np.array([0.0])
    assert M.stable_logistic_loss(y, z) == pytest.approx(100.0)
    assert M.logistic_loss(y, M.sigmoid(z)) < 30  # clipped: the naive form cannot see past log(1e-12)


# ---------------------------------------------------------------- random shapes and seeds

heads = st.sampled_from(["softmax", "sigmoid", "margin", "identity"])


def _labels(rng, output, batch, k):
    if output == "softmax":
        return rng.integers(0, k, batch)
    if output == "sigmoid":
        return rng.integers(0, 2, (batch, k)).astype(np.float64)
    if output == "margin":
        return rng.choice([-1.0, 1.0], (batch, k))
    return rng.normal(size=(batch, k))


def assert_agrees_with_differences(net, X, y):
    from fashionmlp.manual.gradcheck import network_losses

    _, grads = net.loss_and_grads(X, y)
    grads["X"] = net.input_grad(X, y)
    points = {**net.params(), "X": X}
    for name, loss in network_losses(net, X, y).items():
        np.testing.assert_allclose(grads[name], M.numerical_grad(loss, points[name]), rtol=FD_TOL, atol=1e-11,
                                   err_msg=name)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), depth=st.integers(1, 3), width=st.integers(2, 7), batch=st.integers(1, 6),
       fan_in=st.integers(1, 6), k=st.integers(1, 5), hidden=st.sampled_from(["sigmoid", "tanh", "relu"]),
       output=heads, bias=st.booleans())
def test_networks_match_finite_differences_and_autograd(seed, depth, width, batch, fan_in, k, hidden, output, bias):
    rng = np.random.default_rng(seed)
    if output == "softmax":
        k = max(k, 2)
    net = M.MLP([fan_in] + [width] * depth + [k], hidden, output, bias=bias, seed=seed)
    if bias:  # nonzero biases keep ReLU pre-activations off the kink at exactly 0
        net = M.MLP.from_weights(net.weights, [rng.normal(0, 0.1, b.shape) for b in net.biases], hidden, output)
    X = rng.normal(size=(batch, fan_in))
    y = _labels(rng, output, batch, k)
    if hidden == "relu":  # a kink within the step would make any finite difference disagree
        zs, _ = net._forward(X)
        if min(np.min(np.abs(z)) for z in zs[:-1]) < 1e-4:
            return
    fd = M.check_network(net, X, y)
    assert set(fd) == set(net.params()) | {"X"}
    if max(fd.values()) >= FD_TOL:
        # cs231n's relative error cannot resolve entries near 1e-7 (differences of f carry ~1e-14 of noise):
        # then every entry must still agree to 1e-7 relative or 1e-11 absolute.
        assert_agrees_with_differences(net, X, y)
    diffs = M.crosscheck(net, X, y)
    assert max(d["rel"] for d in diffs.values()) < AUTOGRAD_TOL, diffs


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), rows=st.integers(1, 5), cols=st.integers(2, 6), scale=st.sampled_from([0.1, 0.5, 1.5]))
def test_functions_match_finite_differences(seed, rows, cols, scale):
    # (saturated inputs, |z| >> 5, have gradients far below what differences of f can resolve: see the
    # all-extreme rows of the check suite for those)
    rng = np.random.default_rng(seed)
    z, w = rng.normal(0, scale, (rows, cols)), rng.normal(size=(rows, cols))
    assert M.gradcheck(lambda v: (np.sum(w * M.softmax(v)), M.softmax_backward(M.softmax(z), w)), z) < FD_TOL
    assert M.gradcheck(lambda v: (np.sum(w * M.log_softmax(v)), M.log_softmax_backward(z, w)), z) < FD_TOL
    assert M.gradcheck(lambda v: (np.sum(w * M.tanh(v)), w * M.tanh_grad(z)), z) < FD_TOL
    y = rng.integers(0, cols, rows)
    assert M.gradcheck(lambda v: (M.cross_entropy(v, y), M.cross_entropy_grad(z, y)), z) < FD_TOL
    yb = rng.integers(0, 2, (rows, cols)).astype(float)
    assert M.gradcheck(lambda v: (M.stable_logistic_loss(yb, v), M.stable_logistic_loss_grad(yb, z)), z) < FD_TOL
    ypm = 2 * yb - 1
    assert M.gradcheck(lambda v: (M.margin_logistic_loss(ypm, v), M.margin_logistic_loss_grad(ypm, z)), z) < FD_TOL
    zt = torch.tensor(z, requires_grad=True)
    torch.nn.functional.cross_entropy(zt, torch.tensor(y)).backward()
    assert M.relative_error(M.cross_entropy_grad(z, y), zt.grad.numpy()) < AUTOGRAD_TOL


def test_gradcheck_catches_a_wrong_gradient():
    z = np.random.default_rng(1).normal(size=(3, 4))
    assert M.gradcheck(lambda v: (np.sum(M.sigmoid(v)), M.sigmoid(z)), z) > 0.1  # σ is not σ'
    big = np.random.default_rng(1).normal(size=(100, 50))
    assert M.gradcheck(lambda v: (np.sum(v ** 2), 2 * big), big, max_entries=100) < FD_TOL  # sampled


def test_mlp_api():
    net = M.MLP(sizes=[784, 100, 100, 10], hidden="relu", output="softmax", bias=True, seed=0)
    assert net.n_params == 784 * 100 + 100 + 100 * 100 + 100 + 100 * 10 + 10
    X = np.random.default_rng(0).normal(size=(3, 784))
    probs = net.forward(X)
    assert probs.shape == (3, 10) and np.allclose(probs.sum(1), 1)
    loss, grads = net.loss_and_grads(X, np.array([1, 2, 3]))
    assert list(grads) == ["W1", "b1", "W2", "b2", "W3", "b3"]
    assert all(grads[k].shape == p.shape for k, p in net.params().items())
    assert net.input_grad(X, np.array([1, 2, 3])).shape == X.shape
    before = {k: p.copy() for k, p in net.params().items()}
    net.sgd_step(grads, 0.5)
    for k, p in net.params().items():
        assert np.allclose(p, before[k] - 0.5 * grads[k])
    assert net.loss(X, np.array([1, 2, 3])) < loss
    copy = M.MLP.from_weights(net.weights, None, "tanh", "identity")
    assert copy.biases is None and copy.n_params == sum(w.size for w in net.weights)
    with pytest.raises(ValueError):
        M.MLP.from_weights([np.zeros((3, 4)), np.zeros((5, 2))])


def test_lockstep_training_with_torch(tiny_data):
    cfg = config_from_dict({**DEFAULTS, "model": {"hidden": [20, 20]}, "train": {"epochs": 2, "batch_size": 32}})
    data = load_fashion_mnist(tiny_data, verify_md5=False, allow_download=False)
    epochs = list(train_numpy(cfg, data, crosscheck=True))
    assert len(epochs) == 2
    assert max(e.max_step_loss_diff for e in epochs) < 1e-9
    assert epochs[-1].max_param_diff < 1e-9
    assert epochs[-1].train_loss < epochs[0].train_loss


def test_check_suite_passes_every_row():
    rows = run_checks()
    assert len(rows) >= 20 and all(r.passed for r in rows), [r for r in rows if not r.passed]
    names = " ".join(r.check for r in rows)
    for needed in ("sigmoid", "relu", "tanh", "softmax", "stable_logistic_loss", "margin", "cross_entropy",
                   "4-5-5", "tanh hidden", "±1 labels"):
        assert needed in names


def test_manual_cli(tiny_data, tmp_path):
    result = cli("manual", "check")
    assert result.exit_code == 0 and "20 passed, 0 failed" in result.stdout
    result = cli("manual", "train", "--epochs", 1, "--crosscheck", "--data-dir", tiny_data,
                 "--set", "data.verify_md5=false", "--set", "model.hidden=[16]")
    assert result.exit_code == 0, result.output
    assert "final test accuracy" in result.stdout and "largest per-step loss difference" in result.stdout
    bad = cli("manual", "train", "--set", "optimizer.name=adam")
    assert bad.exit_code == 2 and "plain minibatch SGD" in bad.stderr


def test_manual_check_fails_loudly(monkeypatch):
    import fashionmlp.manual.check as check

    monkeypatch.setattr(check.F, "sigmoid_grad", lambda z: check.F.sigmoid(z))  # a classic mistake
    result = cli("manual", "check")
    assert result.exit_code == 1 and "FAIL" in result.stdout


def test_manual_training_on_real_data(real_data):
    cfg = config_from_dict({**DEFAULTS, "train": {"epochs": 1, "batch_size": 128}})
    data = load_fashion_mnist(real_data, allow_download=False)
    (epoch,) = list(train_numpy(cfg, data))
    assert epoch.test_accuracy > 0.80
