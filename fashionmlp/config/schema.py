"""The run configuration's schema: frozen dataclasses, one per section, with each key's default and rules.

The rules (choices, ge, gt, le, lt) sit in each field's metadata; `config.rules` applies them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu")
MODELS = ("mlp", "cnn")
# Each network's own defaults, filled in where the config leaves them out (the study's networks).
MODEL_DEFAULTS: dict[str, dict[str, tuple[int, ...]]] = {
    "mlp": {"hidden": (100, 100)},  # 784-100-100-10
    "cnn": {"hidden": (128,)},  # conv 16, conv 32, then 1568-128-10
}
OPTIMIZERS = ("sgd", "nesterov", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle")
DECAY_PARAMS = ("all", "weights")
TTA = ("none", "flip")
LOADERS = ("fast", "torchvision")
PRECISIONS = ("fp32", "bf16", "fp64")
TEACHER_CHECKPOINTS = ("auto", "best", "last")


def _spec(default: Any, **rules: Any) -> Any:
    """A dataclass field with validation rules (choices, ge, gt, lt, le) kept in its metadata."""
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: tuple(default), metadata=rules)
    return field(default=default, metadata=rules)


@dataclass(frozen=True)
class DataConfig:
    dir: str | None = _spec(None)  # folder with the four .gz files (or torchvision's FashionMNIST/raw)
    verify_md5: bool = _spec(True)  # false accepts other IDX files (e.g. small synthetic ones)
    download: bool = _spec(True)  # try torchvision's mirrors when files are missing
    val_size: int = _spec(0, ge=0)  # images carved from the training set for validation
    subset: int | None = _spec(None, ge=1)  # use only the first N training images
    loader: str = _spec("fast", choices=LOADERS)  # fast: tensors in memory; torchvision: DataLoader
    num_workers: int = _spec(0, ge=0, le=256)  # DataLoader worker processes (torchvision loader only)
    shift: int = _spec(0, ge=0, le=27)  # augmentation: random translation by up to N pixels per image (0: off)
    flip: bool = _spec(False)  # augmentation: mirror each image left-right with probability 1/2


@dataclass(frozen=True)
class ModelConfig:
    name: str = _spec("mlp", choices=MODELS)
    hidden: tuple[int, ...] | None = _spec(None, ge=1, le=2**24)  # MLP widths; CNN classifier (MODEL_DEFAULTS)
    activation: str = _spec("relu", choices=ACTIVATIONS)
    channels: tuple[int, ...] = _spec((16, 32), ge=1, le=2**24)  # CNN: output channels of the two conv blocks
    dropout: float = _spec(0.0, ge=0.0, lt=1.0)  # after each hidden activation (0: none)
    batchnorm: bool = _spec(False)  # BatchNorm before each hidden activation (the layer before it loses its bias)


@dataclass(frozen=True)
class OptimConfig:
    name: str = _spec("sgd", choices=OPTIMIZERS)
    lr: float = _spec(0.01, gt=0.0)
    momentum: float = _spec(0.0, ge=0.0, lt=1.0)  # sgd/nesterov only
    weight_decay: float = _spec(0.0, ge=0.0)
    betas: tuple[float, ...] = _spec((0.9, 0.999), ge=0.0, lt=1.0)  # adam/adamw only
    decay_params: str = _spec("all", choices=DECAY_PARAMS)  # weights: no decay on biases and BatchNorm
    schedule: str = _spec("constant", choices=SCHEDULES)  # lr set before every optimizer step (optim.lr_at)
    warmup: float = _spec(0.0, ge=0.0, lt=1.0)  # fraction of all steps spent ramping the lr up linearly to lr


@dataclass(frozen=True)
class TrainConfig:
    # the upper bounds: past them a run folder was made and the run crashed (a step count of 0 or too large for a
    # float, torch's samplers' 2^63); a batch larger than the data set is the whole set, which 2^31 - 1 also is
    epochs: int = _spec(20, ge=1, le=1_000_000)
    batch_size: int = _spec(128, ge=1, le=2**31 - 1)
    eval_batch_size: int = _spec(2000, ge=1, le=2**31 - 1)  # evaluation has no backward pass: big batches are cheap
    threads: int = _spec(0, ge=0, le=1024)  # CPU intra-op threads; 0 = one per core that other work does not keep busy
    channels_last: bool = _spec(True)  # CNN on CPU: faster (scripts/bench.py measures both layouts)
    deterministic: bool = _spec(True)  # CUDA: deterministic kernels (same numbers every run); the CPU always is
    precision: str = _spec("fp32", choices=PRECISIONS)  # bf16: autocast forward passes; fp64: float64 throughout
    label_smoothing: float = _spec(0.0, ge=0.0, lt=1.0)  # weight of the uniform target in the training loss
    ema: float = _spec(0.0, ge=0.0, lt=1.0)  # decay of an average of the weights, evaluated and saved (0: off)
    tta: str = _spec("none", choices=TTA)  # flip: evaluate on the mean softmax of each image and its mirror
    patience: int | None = _spec(None, ge=1)  # stop after N epochs without a better val accuracy (null: never)


@dataclass(frozen=True)
class DistillConfig:
    teacher: str | None = _spec(None)  # a run folder whose model teaches this one (null: no distillation)
    temperature: float = _spec(4.0, ge=0.01, le=100.0)  # T: both softmaxes of the KL term at temperature T
    alpha: float = _spec(0.5, ge=0.0, le=1.0)  # loss = alpha T^2 KL(teacher_T || student_T) + (1 - alpha) CE
    checkpoint: str = _spec("auto", choices=TEACHER_CHECKPOINTS)  # auto: best with a validation split, else last
    fingerprint: str | None = _spec(None)  # SHA-256 of the teacher's weights: set, they must match (runs record it)


@dataclass(frozen=True)
class RunConfig:
    name: str | None = _spec(None)  # run folder prefix (one folder name); default "<model>_<optimizer>"
    seed: int = _spec(0, ge=0, le=2**32 - 1)  # NumPy's seeds are 32-bit
    device: str = _spec("auto")  # auto | cpu | cuda | cuda:N
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    @property
    def run_name(self) -> str:
        return self.name or f"{self.model.name}_{self.optimizer.name}"

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))


def _plain(value: Any) -> Any:
    """Tuples -> lists, recursively, so the dict round-trips through YAML and weights_only checkpoints."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
