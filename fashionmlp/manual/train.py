"""Training the NumPy MLP on Fashion-MNIST with minibatch SGD, optionally in lockstep with a torch twin."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from fashionmlp.config import RunConfig
from fashionmlp.data import FashionMNIST, epoch_order, normalize
from fashionmlp.device import auto_threads, oversubscribed
from fashionmlp.errors import ConfigError
from fashionmlp.manual.crosscheck import largest, torch_forward, torch_loss
from fashionmlp.manual.functional import cross_entropy
from fashionmlp.manual.mlp import MLP
from fashionmlp.optim import lr_at


@dataclass
class ManualEpoch:
    epoch: int
    lr: float  # the learning rate of the epoch's last step (optimizer.schedule and warmup, per step)
    train_loss: float
    test_loss: float
    test_accuracy: float
    seconds: float
    val_loss: float | None = None  # on data.val_size images carved from the training set (None without them)
    val_accuracy: float | None = None
    max_step_loss_diff: float | None = None  # |loss_numpy - loss_torch|, largest over the epoch's steps
    max_param_diff: float | None = None  # max |θ_numpy - θ_torch| after a step, largest over the epoch's steps
    max_grad_diff: float | None = None  # max |∇_numpy - ∇_torch| / max |∇_torch| per tensor, over the steps
    diverged_step: int | None = None  # 1-based step whose loss was not finite: training stopped there


@dataclass
class TorchTwin:
    """The same network as torch float64 tensors, stepped by torch.optim.SGD from the NumPy network's weights of
    the moment: each step is compared from equal weights, so the differences are one step's, which a correct
    implementation keeps near 1e-15 (two whole training paths drift apart as SGD amplifies rounding: at lr 0.4
    on 6,000 images by 6.6e-8 after 6 epochs, and a fixed tolerance on that failed healthy runs)."""

    net: MLP
    lr: float
    params: dict[str, torch.Tensor] = field(init=False)
    optimizer: torch.optim.Optimizer = field(init=False)
    grads: dict[str, np.ndarray] = field(init=False, default_factory=dict)  # of the last step

    def __post_init__(self) -> None:
        self.params = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True)
                       for k, v in self.net.params().items()}
        self.optimizer = torch.optim.SGD(self.params.values(), lr=self.lr)

    def step(self, X: np.ndarray, y: np.ndarray, lr: float) -> float:
        """One SGD step from the NumPy network's current weights (before its own step); the loss."""
        with torch.no_grad():
            for k, p in self.net.params().items():
                self.params[k].copy_(torch.from_numpy(p))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        logits = torch_forward(self.net, torch.from_numpy(X), self.params)
        loss = torch_loss(self.net.output, logits, torch.from_numpy(y))
        self.optimizer.zero_grad()
        loss.backward()
        self.grads = {k: p.grad.detach().numpy().copy() for k, p in self.params.items()}
        self.optimizer.step()
        return loss.item()

    def max_grad_diff(self, grads: dict[str, np.ndarray]) -> float:
        """max |∇_numpy - ∇_torch| relative to each tensor's largest |∇_torch|, for the step just taken: a wrong
        gradient shows whatever the lr (the weights after a step differ by lr x the error: at lr 1e-8 a doubled
        dW1 moved them by 1.5e-9, at the tolerance)."""
        return max(largest(np.abs(g - self.grads[k])) / max(largest(np.abs(self.grads[k])), 1e-300)
                   for k, g in grads.items())

    def max_diff(self, net: MLP) -> float:
        """max |θ_numpy - θ_torch| / max(1, |θ_numpy|) after both took the same step from equal weights."""
        return max(largest(np.abs(p - self.params[k].detach().numpy()) / np.maximum(1.0, np.abs(p)))
                   for k, p in net.params().items())


# The most one step of the NumPy MLP and of its torch float64 twin, from equal weights, may differ (in the loss,
# relative to max(1, |loss|); in the weights after it, relative to max(1, |weight|)) before the crosscheck
# fails: they agree to ~1e-15; a wrong update rule (biases not updated, lr x2) differed by 1e-2 or more, and was
# only printed
CROSSCHECK_TOL = 1e-9


EVAL_BATCH = 2000  # images per forward pass when evaluating

# What configs/manual_mlp.yaml says, for when no --config is given.
DEFAULTS = {"name": "manual_mlp", "model": {"name": "mlp", "hidden": [100, 100], "activation": "relu"},
            "optimizer": {"name": "sgd", "lr": 0.1}, "train": {"epochs": 10, "batch_size": 128}}


def check_manual_raw(raw: dict) -> None:
    """What manual train cannot run, refused before the config's own rules: those pointed at a fix it refuses in
    turn (activation 'RELU': "allowed: ..., gelu"; train.patience: "set data.val_size too"; optimizer.name nesterov:
    "needs momentum, e.g. 0.9")."""
    def given(section: str, key: str):
        part = raw.get(section)
        return part.get(key) if isinstance(part, dict) else None

    activation, patience = given("model", "activation"), given("train", "patience")
    optimizer = given("optimizer", "name")
    if activation is not None and activation not in ("relu", "sigmoid", "tanh"):
        raise ConfigError(f"model.activation: {activation!r} is not available in manual train (NumPy); allowed: "
                          "relu, sigmoid, tanh")
    if patience is not None:
        raise ConfigError(f"train.patience: {patience!r} is not supported by manual train (it does not stop early); "
                          "allowed: null")
    if optimizer is not None and optimizer != "sgd":
        raise ConfigError(f"optimizer.name: {optimizer!r} is not supported by manual train (plain minibatch SGD); "
                          "allowed: sgd")


def check_manual_config(cfg: RunConfig) -> None:
    """Refuse, in one line, every config value that the NumPy trainer would otherwise ignore or crash on.

    Applied: seed, data.dir/verify_md5/download/subset/val_size, model.hidden/activation, optimizer.lr/schedule/warmup,
    train.epochs/batch_size/eval_batch_size. Accepted because they do not concern an MLP trained with SGD
    (`train` ignores them too): model.channels, optimizer.betas, train.channels_last, distill.* without a teacher;
    `name` labels nothing here.
    """
    if cfg.model.name != "mlp" or cfg.optimizer.name != "sgd" or cfg.optimizer.momentum or cfg.optimizer.weight_decay:
        raise ConfigError("manual train runs plain minibatch SGD on an MLP: set model.name: mlp, optimizer.name: sgd, "
                          "optimizer.momentum: 0 and optimizer.weight_decay: 0")
    if cfg.model.activation not in ("relu", "sigmoid", "tanh"):
        raise ConfigError(f"model.activation: {cfg.model.activation!r} is not available in NumPy; "
                          "allowed: relu, sigmoid, tanh")
    unsupported = [  # (key, value, whether manual train can run it, what it can run, why)
        ("model.dropout", cfg.model.dropout, cfg.model.dropout == 0, "0", "the NumPy MLP has no dropout"),
        ("device", cfg.device, cfg.device in ("auto", "cpu"), "auto, cpu", "NumPy runs on the CPU"),
        ("data.loader", cfg.data.loader, cfg.data.loader == "fast", "fast", "the NumPy trainer makes its own batches"),
        ("data.num_workers", cfg.data.num_workers, cfg.data.num_workers == 0, "0", "it uses no DataLoader"),
        ("train.precision", cfg.train.precision, cfg.train.precision == "fp32", "fp32",
         "torch's precision: the NumPy MLP always computes in float64, whatever this says"),
        ("model.batchnorm", cfg.model.batchnorm, not cfg.model.batchnorm, "false", "the NumPy MLP has no BatchNorm"),
        ("data.shift", cfg.data.shift, cfg.data.shift == 0, "0", "the NumPy trainer does not augment"),
        ("data.flip", cfg.data.flip, not cfg.data.flip, "false", "the NumPy trainer does not augment"),
        ("train.label_smoothing", cfg.train.label_smoothing, cfg.train.label_smoothing == 0, "0",
         "the NumPy MLP trains on plain cross-entropy"),
        ("train.ema", cfg.train.ema, cfg.train.ema == 0, "0", "it keeps no average of the weights"),
        ("train.tta", cfg.train.tta, cfg.train.tta == "none", "none", "it evaluates each image once"),
        ("train.patience", cfg.train.patience, cfg.train.patience is None, "null", "it does not stop early"),
        ("distill.teacher", cfg.distill.teacher, cfg.distill.teacher is None, "null",
         "the NumPy MLP learns from the labels alone"),
    ]
    for key, value, ok, allowed, why in unsupported:
        if not ok:
            shown = str(value).lower() if isinstance(value, bool) else repr(value)  # as YAML spells it
            raise ConfigError(f"{key}: {shown} is not supported by manual train ({why}); allowed: {allowed}")
    sizes = [784, *cfg.model.hidden, 10]
    n_params = sum(m * n + n for m, n in zip(sizes[:-1], sizes[1:]))
    # float64 weights, their gradients and the updated weights of a step; each layer's outputs, activations and
    # their gradients for the larger of a training and an evaluation batch (the activations made the guard
    # short by 2.4x: 0.73 GiB said, 1.76 GiB used for hidden [40000]); the images as float64
    # (a batch is at most the training set, an evaluation batch the test set: train.batch_size 1e8 was refused
    # for 470 GiB, and train.eval_batch_size was not counted)
    rows = max(min(cfg.train.batch_size, 60_000), min(cfg.train.eval_batch_size, 10_000))
    need = 8 * (3 * n_params + 3 * rows * sum(sizes[1:]) + 70_000 * 784)
    memory = _physical_memory()
    if memory is not None and need > memory:
        small = 8 * (3 * n_params + 3 * EVAL_BATCH * sum(sizes[1:]) + 70_000 * 784)
        what = (f"model.hidden: {list(cfg.model.hidden)} makes {n_params:.3g} parameters, which need" if small > memory
                else f"train.batch_size {cfg.train.batch_size} and train.eval_batch_size {cfg.train.eval_batch_size}:"
                     f" a batch of {rows:,} images needs")
        raise ConfigError(f"{what} about {need / 2**30:,.1f} GiB in float64 with their gradients and a batch's "
                          f"activations; this machine has {memory / 2**30:,.1f} GiB")


def _physical_memory() -> int | None:
    """Bytes of RAM, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def _as_arrays(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> float64 (N, 784), normalized exactly like the torch path."""
    return normalize(torch.from_numpy(images)).reshape(len(images), -1).double().numpy()


def evaluate_numpy(net: MLP, X: np.ndarray, y: np.ndarray, batch: int = EVAL_BATCH) -> tuple[float, float]:
    """Mean cross-entropy and accuracy, one forward pass per batch."""
    loss, correct = 0.0, 0
    for i in range(0, len(y), batch):
        z, labels = net.logits(X[i:i + batch]), y[i:i + batch]
        loss += float(cross_entropy(z, labels)) * len(z)
        correct += int(np.sum(np.argmax(z, axis=1) == labels))
    return loss / len(y), correct / len(y)


@contextmanager
def cpu_threads(threads: int) -> Iterator[None]:
    """NumPy's BLAS on `threads` threads (blas_threads) and torch, the twin, on one meanwhile. On 2 cores (Zen 4)
    an epoch of the training set with the twin took 8.7-9.4 s with both libraries' thread pools on both cores
    (waiting for each other), 3.6-3.9 s with torch on one; 6,000 images beside a busy process, 3.0 s against
    0.4 s."""
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=threads, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(before)


def blas_threads(cfg: RunConfig) -> tuple[int, str | None]:
    """NumPy's BLAS threads for `cfg` (train.threads; 0: the cores other work leaves free), and what the user
    should know about them (fewer than the cores, or more), as `train` says it."""
    if cfg.train.threads:
        return cfg.train.threads, oversubscribed(cfg.train.threads)
    threads, lowered = auto_threads()
    return threads, lowered and (f"NumPy's BLAS on {threads} thread(s): the other cores were busy with other work "
                                 "(train.threads: N chooses)")


def train_numpy(cfg: RunConfig, data: FashionMNIST, *, crosscheck: bool = False,
                threads: int | None = None) -> Iterator[ManualEpoch]:
    """Yield one ManualEpoch per epoch of minibatch SGD (on cpu_threads: `threads` BLAS threads, default
    blas_threads' count); batches come from the same seeded order as `train`.

    A step whose loss is not finite (the learning rate is too high) ends training: its epoch is yielded with
    `diverged_step` set and nan metrics.
    """
    check_manual_config(cfg)
    with cpu_threads(threads or blas_threads(cfg)[0]):
        yield from _train_numpy(cfg, data, crosscheck)


def _train_numpy(cfg: RunConfig, data: FashionMNIST, crosscheck: bool) -> Iterator[ManualEpoch]:
    X, y = _as_arrays(data.train.images), data.train.labels
    X_test, y_test = _as_arrays(data.test.images), data.test.labels
    X_val, y_val = (None, None) if data.val is None else (_as_arrays(data.val.images), data.val.labels)
    net = MLP([784, *cfg.model.hidden, 10], hidden=cfg.model.activation, output="softmax", seed=cfg.seed)
    twin = TorchTwin(net, cfg.optimizer.lr) if crosscheck else None
    generator = torch.Generator().manual_seed(cfg.seed)
    bs, eval_bs = cfg.train.batch_size, cfg.train.eval_batch_size
    steps = math.ceil(len(y) / bs)
    for epoch in range(1, cfg.train.epochs + 1):
        start = time.perf_counter()
        order = epoch_order(len(y), generator).numpy()
        total, worst, worst_weights, worst_grads = 0.0, 0.0, 0.0, 0.0
        # a diverging run overflows on its way to a non-finite loss: that loss is reported, not the warnings
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for step, i in enumerate(range(0, len(y), bs), start=1):
                idx = order[i:i + bs]
                lr = lr_at(cfg.optimizer, (epoch - 1) * steps + step - 1, steps * cfg.train.epochs)
                loss, grads = net.loss_and_grads(X[idx], y[idx])
                if not math.isfinite(loss):
                    nan = float("nan")
                    yield ManualEpoch(epoch, lr, nan, nan, nan, time.perf_counter() - start, diverged_step=step)
                    return
                if twin is not None:  # its step from the weights this step starts from
                    diff = abs(float(loss) - twin.step(X[idx], y[idx], lr)) / max(1.0, abs(float(loss)))
                    worst = math.inf if math.isnan(diff) else max(worst, diff)  # max() would drop a NaN
                    diff = twin.max_grad_diff(grads)
                    worst_grads = math.inf if math.isnan(diff) else max(worst_grads, diff)
                net.sgd_step(grads, lr)
                if twin is not None:  # every step's update: an epoch ending in a batch of 1 hid a wrong 1/B mean
                    diff = twin.max_diff(net)
                    worst_weights = math.inf if math.isnan(diff) else max(worst_weights, diff)
                total += float(loss) * len(idx)
            seconds = time.perf_counter() - start
            test_loss, test_acc = evaluate_numpy(net, X_test, y_test, eval_bs)
            val_loss, val_acc = (None, None) if X_val is None else evaluate_numpy(net, X_val, y_val, eval_bs)
        if not math.isfinite(test_loss):  # the epoch's last update overflowed the weights
            yield ManualEpoch(epoch, lr, total / len(y), test_loss, test_acc, seconds, val_loss, val_acc,
                              diverged_step=step)
            return
        yield ManualEpoch(epoch, lr, total / len(y), test_loss, test_acc, seconds, val_loss, val_acc,
                          worst if twin else None, worst_weights if twin else None, worst_grads if twin else None)


def describe(cfg: RunConfig, data: FashionMNIST, crosscheck: bool = False) -> str:
    """The first line of `manual train`: the network, the optimizer, the batch and the data."""
    val = f", {len(data.val.labels)} validation images" if data.val is not None else ""
    shape = ([cfg.optimizer.schedule] if cfg.optimizer.schedule != "constant" else []) + (
        [f"warm-up {cfg.optimizer.warmup:g} of the steps"] if cfg.optimizer.warmup else [])  # it was not said
    schedule = f" ({', '.join(shape)})" if shape else ""
    return (f"NumPy MLP {[784, *cfg.model.hidden, 10]} ({cfg.model.activation}), SGD lr {cfg.optimizer.lr:g}"
            f"{schedule}, batch {cfg.train.batch_size}, {len(data.train.labels)} training images{val}"
            + (", with a torch float64 twin" if crosscheck else ""))
