"""Training the NumPy MLP on Fashion-MNIST with minibatch SGD, optionally in lockstep with a torch twin."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from fashionmlp.config import RunConfig
from fashionmlp.data import FashionMNIST, epoch_order, normalize
from fashionmlp.errors import ConfigError
from fashionmlp.manual.crosscheck import torch_forward, torch_loss
from fashionmlp.manual.functional import cross_entropy
from fashionmlp.manual.mlp import MLP


@dataclass
class ManualEpoch:
    epoch: int
    train_loss: float
    test_loss: float
    test_accuracy: float
    seconds: float
    max_step_loss_diff: float | None = None  # |loss_numpy - loss_torch|, largest over the epoch's steps
    max_param_diff: float | None = None  # max |θ_numpy - θ_torch| after the epoch


@dataclass
class TorchTwin:
    """The same network as torch float64 tensors, trained by torch.optim.SGD from the same start."""

    net: MLP
    lr: float
    params: dict[str, torch.Tensor] = field(init=False)
    optimizer: torch.optim.Optimizer = field(init=False)

    def __post_init__(self) -> None:
        self.params = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True)
                       for k, v in self.net.params().items()}
        self.optimizer = torch.optim.SGD(self.params.values(), lr=self.lr)

    def step(self, X: np.ndarray, y: np.ndarray) -> float:
        logits = torch_forward(self.net, torch.from_numpy(X), self.params)
        loss = torch_loss(self.net.output, logits, torch.from_numpy(y))
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def max_diff(self, net: MLP) -> float:
        return max(float(np.max(np.abs(p - self.params[k].detach().numpy()))) for k, p in net.params().items())


# What configs/manual_mlp.yaml says, for when no --config is given.
DEFAULTS = {"name": "manual_mlp", "model": {"name": "mlp", "hidden": [100, 100], "activation": "relu"},
            "optimizer": {"name": "sgd", "lr": 0.1}, "train": {"epochs": 10, "batch_size": 128}}


def check_manual_config(cfg: RunConfig) -> None:
    if cfg.model.name != "mlp" or cfg.optimizer.name != "sgd" or cfg.optimizer.momentum or cfg.optimizer.weight_decay:
        raise ConfigError("manual train runs plain minibatch SGD on an MLP: set model.name: mlp, optimizer.name: sgd, "
                          "optimizer.momentum: 0 and optimizer.weight_decay: 0")
    if cfg.model.activation not in ("relu", "sigmoid", "tanh"):
        raise ConfigError(f"model.activation: {cfg.model.activation!r} is not available in NumPy; "
                          "allowed: relu, sigmoid, tanh")


def _as_arrays(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> float64 (N, 784), normalized exactly like the torch path."""
    return normalize(torch.from_numpy(images)).reshape(len(images), -1).double().numpy()


def evaluate_numpy(net: MLP, X: np.ndarray, y: np.ndarray, batch: int = 2000) -> tuple[float, float]:
    """Mean cross-entropy and accuracy, one forward pass per batch."""
    loss, correct = 0.0, 0
    for i in range(0, len(y), batch):
        z, labels = net.logits(X[i:i + batch]), y[i:i + batch]
        loss += float(cross_entropy(z, labels)) * len(z)
        correct += int(np.sum(np.argmax(z, axis=1) == labels))
    return loss / len(y), correct / len(y)


def train_numpy(cfg: RunConfig, data: FashionMNIST, *, crosscheck: bool = False) -> Iterator[ManualEpoch]:
    """Yield one ManualEpoch per epoch of minibatch SGD; batches come from the same seeded order as `train`."""
    check_manual_config(cfg)
    X, y = _as_arrays(data.train.images), data.train.labels
    X_test, y_test = _as_arrays(data.test.images), data.test.labels
    net = MLP([784, *cfg.model.hidden, 10], hidden=cfg.model.activation, output="softmax", seed=cfg.seed)
    twin = TorchTwin(net, cfg.optimizer.lr) if crosscheck else None
    generator = torch.Generator().manual_seed(cfg.seed)
    bs = cfg.train.batch_size
    for epoch in range(1, cfg.train.epochs + 1):
        start = time.perf_counter()
        order = epoch_order(len(y), generator).numpy()
        total, worst = 0.0, 0.0
        for i in range(0, len(y), bs):
            idx = order[i:i + bs]
            loss, grads = net.loss_and_grads(X[idx], y[idx])
            net.sgd_step(grads, cfg.optimizer.lr)
            total += float(loss) * len(idx)
            if twin is not None:
                worst = max(worst, abs(float(loss) - twin.step(X[idx], y[idx])))
        seconds = time.perf_counter() - start
        test_loss, test_acc = evaluate_numpy(net, X_test, y_test)
        yield ManualEpoch(epoch, total / len(y), test_loss, test_acc, seconds,
                          worst if twin else None, twin.max_diff(net) if twin else None)
