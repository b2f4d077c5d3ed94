"""Where a run computes: the device, the CPU threads, the process's memory settings and the model's layout.

Each of these changes process-wide state, so they are called at the entry points (train, resume, evaluate,
predict, the benchmark), never on import.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import time

import torch
from torch import nn

from fashionmlp.config import ModelConfig, RunConfig
from fashionmlp.errors import UserError
from fashionmlp.models import build_model


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when available, else cpu; an explicit CUDA request on a machine without it is a UserError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"device: {name!r} requested but CUDA is not available on this machine "
                            f"(torch {torch.__version__}); use cpu or auto (--device cpu, or --set device=cpu)")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise UserError(f"device: {name!r} does not exist; this machine has {torch.cuda.device_count()} "
                            "CUDA device(s): cuda:0 .. cuda:N-1")
    return torch.device(name)


CUBLAS_WORKSPACE = ":4096:8"  # what cuBLAS needs to be deterministic (torch's reproducibility notes)


def deterministic_cuda(cfg: RunConfig, device: torch.device) -> None:
    """On CUDA, deterministic kernels unless train.deterministic is false: cuBLAS's workspace setting (read when
    cuBLAS starts, so before the first matrix multiply), no cuDNN autotuning, and torch's deterministic
    algorithms (warn_only: an op without a deterministic kernel warns rather than stopping a run)."""
    if device.type != "cuda":
        return
    if cfg.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.backends.cudnn.benchmark = not cfg.train.deterministic
    torch.backends.cudnn.deterministic = cfg.train.deterministic
    torch.use_deterministic_algorithms(cfg.train.deterministic, warn_only=True)


def set_threads(threads: int = 0) -> int:
    """Intra-op threads: `threads`, or (0) auto_threads(); returns the count now in use."""
    threads = threads or auto_threads()[0]
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def _cpu_times(cpus: set[int]) -> tuple[float, float]:
    """(busy, total) jiffies of the given CPUs since boot, from /proc/stat (Linux)."""
    busy = total = 0.0
    with open("/proc/stat") as fh:
        for line in fh:
            name, *fields = line.split()
            if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
                continue
            values = [float(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
            total += sum(values)
            busy += sum(values) - values[3] - values[4]
    return busy, total


def busy_cores(cpus: set[int], seconds: float = 0.2) -> float:
    """How many of `cpus` other processes kept busy over the next `seconds` (this process sleeps meanwhile);
    0 where /proc/stat cannot be read."""
    try:
        busy0, total0 = _cpu_times(cpus)
        time.sleep(seconds)
        busy1, total1 = _cpu_times(cpus)
    except (OSError, ValueError):
        return 0.0
    return len(cpus) * (busy1 - busy0) / (total1 - total0) if total1 > total0 else 0.0


def auto_threads() -> tuple[int, str | None]:
    """train.threads 0: one thread per core this process may use that other work does not keep busy (at least
    one), and why, when fewer than the cores. A core shared with another busy process makes two threads wait
    for each other at every operation: measured on 2 cores beside one busy process, the MLP's epoch took
    1.0-2.2 s on 2 threads and 0.5 s on 1; alone, 0.38 s on 2 threads (docs/performance.md)."""
    cpus = os.sched_getaffinity(0)
    busy = int(busy_cores(cpus) + 0.5)
    threads = max(1, len(cpus) - busy)
    if threads == len(cpus):
        return threads, None
    return threads, (f"{busy} of {len(cpus)} cores were busy with other work: training on {threads} thread(s) "
                     "(train.threads: N chooses; results repeat bit for bit at one thread count; the count is "
                     "recorded with them)")


def oversubscribed(threads: int) -> str | None:
    """Why `threads` is too many, when it is more than the cores this process may use (1024 on 2 cores trained
    70-270 times slower, without a word); None otherwise."""
    cores = len(os.sched_getaffinity(0))
    if threads <= cores:
        return None
    return (f"train.threads {threads} is more than the {cores} CPU core(s) this process may use: threads beyond "
            "them wait for each other at every operation (0 chooses)")


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's malloc.h


def keep_freed_memory() -> None:
    """Make glibc's malloc keep freed blocks of up to 32 MiB for reuse instead of handing them back to the OS.

    Every training step frees and re-allocates the same few MB of activations; by default glibc returns such
    blocks to the OS and the next step pays a page fault per 4 KiB touched (tests/test_reliability.py counts
    them; scripts/bench.py measures the effect). Peak memory is unchanged. A no-op where the C library is
    not glibc.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (musl, macOS, Windows)
        return
    mallopt(_M_MMAP_THRESHOLD, 32 * 2**20)  # glibc's largest allowed value
    mallopt(_M_TRIM_THRESHOLD, 2**30)


def uses_channels_last(cfg: RunConfig, device: torch.device) -> bool:
    """The CNN on a CPU trains faster in channels_last (scripts/bench.py measures both layouts)."""
    return cfg.model.name == "cnn" and cfg.train.channels_last and device.type == "cpu"


def dtype_of(cfg: RunConfig) -> torch.dtype:
    """The floating-point type of the weights and images: float64 with train.precision fp64, else float32 (bf16
    autocasts the forward pass of float32 weights)."""
    return torch.float64 if cfg.train.precision == "fp64" else torch.float32


def prepare_model(cfg: RunConfig, device: torch.device) -> torch.nn.Module:
    """The config's model, freshly initialized from torch's global generator (in float32, then cast for fp64),
    on `device` in its best layout."""
    model = build_model(cfg.model).to(device, dtype_of(cfg))
    if uses_channels_last(cfg, device):
        model = model.to(memory_format=torch.channels_last)
    return model


def memory_needed(cfg: RunConfig, n_images: int, n_train: int | None = None) -> int:
    """Bytes a training run needs at its peak, estimated without allocating anything (a model on the meta device):
    parameters with their gradients, up to two optimizer states and the EMA's average, the activations of one
    training batch (kept for backward, and their gradients), those of one evaluation batch (two with flip TTA),
    and the images as float32 tensors."""
    per_model, shared = memory_parts(cfg, n_images, n_train)
    return per_model + shared


_SAME_SHAPE = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.Dropout, nn.BatchNorm1d, nn.BatchNorm2d)


@functools.lru_cache(maxsize=64)
def _model_size(model_cfg: ModelConfig) -> tuple[int, int]:
    """(parameters, activation values per image) of a model: built on the meta device (no memory, any width),
    its layers' output shapes followed by hand. A forward pass on the meta device would give the same count but
    loads torch's meta kernels first (1.1 s, on every command that checks memory)."""
    with torch.device("meta"):
        model = build_model(model_cfg)
    n_params = sum(p.numel() for p in model.parameters())
    shape, per_sample = (1, 28, 28), 0
    for layer in (m for m in model.modules() if not list(m.children())):  # models.py's are nn.Sequential
        if isinstance(layer, nn.Flatten):
            shape = (math.prod(shape),)
        elif isinstance(layer, nn.Linear):
            shape = (layer.out_features,)
        elif isinstance(layer, (nn.Conv2d, nn.MaxPool2d)):
            size = [_out_size(n, layer, i) for i, n in enumerate(shape[1:])]
            shape = (layer.out_channels if isinstance(layer, nn.Conv2d) else shape[0], *size)
        elif not isinstance(layer, _SAME_SHAPE):
            raise TypeError(f"memory estimate: no output shape known for {type(layer).__name__}")
        per_sample += math.prod(shape)
    return n_params, per_sample


def _out_size(n: int, layer: nn.Module, axis: int) -> int:
    """An output side of a convolution or pooling layer (torch's formula, floor mode)."""
    def of(value):
        return value[axis] if isinstance(value, tuple) else value
    kernel, stride, padding, dilation = (of(layer.kernel_size), of(layer.stride), of(layer.padding),
                                         of(layer.dilation))
    return (n + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def memory_parts(cfg: RunConfig, n_images: int, n_train: int | None = None) -> tuple[int, int]:
    """memory_needed in two parts: what each model trained at once needs (its weights, gradients, optimizer
    states, EMA, one training batch's activations, its share of an evaluation batch), and what models of one
    population share (the images)."""
    n_params, per_sample = _model_size(cfg.model)
    n_train = n_images if n_train is None else n_train
    batch, eval_batch = min(cfg.train.batch_size, n_train), min(cfg.train.eval_batch_size, n_images)
    copies = 4 + (1 if cfg.train.ema else 0)  # weights, gradients, two optimizer states (+ the EMA's average)
    eval_batch *= 2 if cfg.train.tta == "flip" else 1  # each image and its mirror in one forward pass
    per_model = copies * n_params + 2 * per_sample * batch + per_sample * eval_batch
    size = 8 if cfg.train.precision == "fp64" else 4
    return size * per_model, size * n_images * 28 * 28


USABLE = 0.9  # of a device's memory that a run or population may take (the rest: the process, the system)


def memory_total(device: torch.device) -> tuple[int, str]:
    """The memory of `device` in bytes, and how to name it."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory, f"{device}'s"
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this machine's"


def check_memory(cfg: RunConfig, device: torch.device, n_images: int, n_train: int) -> None:
    """Refuse, before a run folder exists, a model and batch size that cannot fit in this machine's memory."""
    total, what = memory_total(device)
    need = memory_needed(cfg, n_images, n_train)
    if need > USABLE * total:
        widths = f"model.hidden {list(cfg.model.hidden)}" + (
            f", model.channels {list(cfg.model.channels)}" if cfg.model.name == "cnn" else "")
        raise UserError(f"{widths} at train.batch_size {min(cfg.train.batch_size, n_train)} need about "
                        f"{need / 2**30:,.1f} GiB (weights, gradients, optimizer state, one batch's activations), "
                        f"{more_than_usable(device)}; use smaller widths or batches")


def more_than_usable(device: torch.device) -> str:
    """ "more than the 9.0 GiB it may use (90% of this machine's 10.0 GiB)": the limit the checks hold to."""
    total, what = memory_total(device)
    return (f"more than the {USABLE * total / 2**30:,.1f} GiB it may use ({USABLE:.0%} of {what} "
            f"{total / 2**30:,.1f} GiB)")


def largest_population(cfg: RunConfig, device: torch.device, n_images: int, n_train: int) -> int:
    """How many models of `cfg`'s shape fit in the device's memory when trained at once (0: not even one)."""
    per_model, shared = memory_parts(cfg, n_images, n_train)
    total, _ = memory_total(device)
    return max(0, int((USABLE * total - shared) // per_model))
