"""Checkpoints: model, optimizer, progress and every RNG, as tensors and plain Python types only.

Plain contents let `torch.load(..., weights_only=True)` read a checkpoint from anyone without running code.
Writes are atomic (tracking.atomic_write), so a crash never leaves a torn file.
"""

from __future__ import annotations

import hashlib
import random
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from fashionmlp.errors import UserError
from fashionmlp.tracking import atomic_write

FORMAT = "fashionmlp-checkpoint"
VERSION = 1


def rng_state(data_generator: torch.Generator, torch_generator: torch.Generator | None = None) -> dict[str, Any]:
    """Every generator that affects training, in plain types. `torch_generator` stands in for torch's global one
    (a member of a population draws its dropout masks from its own). NumPy's, Python's and CUDA's are the
    process's: a population's members share them (nothing in training draws from NumPy's or Python's; CUDA's
    would be a run's dropout on a GPU, which a member does not draw from)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state() if torch_generator is None else torch_generator.get_state(),
        "data": data_generator.get_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], data_generator: torch.Generator,
                torch_generator: torch.Generator | None = None) -> None:
    """Put back what rng_state saved (torch's global generator's state into `torch_generator` when given)."""
    if torch_generator is None:
        torch.set_rng_state(state["torch"])
    else:
        torch_generator.set_state(state["torch"])
    data_generator.set_state(state["data"])
    np_state = state["numpy"]
    np.random.set_state((np_state["kind"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, epoch: int,
                    global_step: int, config: dict, history: list[dict], step_losses: list[float],
                    best: dict, data_generator: torch.Generator, ema: AveragedModel | None = None,
                    torch_generator: torch.Generator | None = None) -> None:
    """`model` holds the weights that are evaluated: the EMA's when there is one; the trained weights and the
    EMA's update count then go under "ema", for resume."""
    state = {
        "format": FORMAT, "version": VERSION, "epoch": epoch, "global_step": global_step, "config": config,
        "model": model.state_dict() if ema is None else ema.module.state_dict(),
        "optimizer": optimizer.state_dict(), "history": history,
        "step_losses": torch.tensor(step_losses, dtype=torch.float64), "best": best,
        "rng": rng_state(data_generator, torch_generator),
    }
    if ema is not None:
        state["ema"] = {"trained_weights": model.state_dict(), "n_averaged": ema.n_averaged.cpu()}
    atomic_write(path, lambda fh: torch.save(_own_storage(state), fh))


def _own_storage(tree: Any) -> Any:
    """`tree` with each tensor that is a view into a larger one copied out: torch.save writes a tensor's whole
    storage, and a population member's weights are views of the stacked weights of every member (its checkpoint
    held them all: 5.1 MB instead of 1.2 MB for the study's MLP, and the other members' weights)."""
    if isinstance(tree, torch.Tensor):
        whole = tree.untyped_storage().nbytes() > tree.numel() * tree.element_size()
        return tree.detach().clone() if whole else tree
    if isinstance(tree, dict):
        return {k: _own_storage(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_own_storage(v) for v in tree)
    return tree


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint safely (weights_only); anything that is not one of ours is a UserError."""
    if not path.is_file():
        raise UserError(f"no checkpoint at {str(path)!r}")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickles before refusing them: one line is enough
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors of every kind: the file is not a checkpoint we can trust
        # a pickle of code read as merely damaged ("UnpicklingError"); torch's weights-only refusal cannot tell the
        # two apart (a pickle's first opcode already stops it), so the line names both
        if "Weights only load failed" in str(exc):
            raise UserError(f"{path}: not a readable fashionmlp checkpoint: damaged, or it holds Python objects "
                            "beyond tensors and numbers, which are never loaded (they could run code)") from None
        raise UserError(f"{path}: not a readable fashionmlp checkpoint ({exc.__class__.__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path}: not a fashionmlp checkpoint")
    if state.get("version") != VERSION:
        raise UserError(f"{path}: checkpoint format version {state.get('version')!r}, this fashionmlp reads {VERSION}")
    check_layout(state, path, ("epoch", "global_step", "config", "model", "ema"))
    return state


def check_layout(state: dict, path: Path, keys: tuple[str, ...]) -> None:
    """The fields `keys` of a checkpoint, each of its type (an absent "ema" is no average): a file from someone
    else with one changed is refused in one line before anything uses it, not met as a traceback deep in evaluate
    or resume. Loading checks what every reader needs; resume checks the training state too (RESUME_KEYS)."""
    for key in keys:
        fits, what = _LAYOUT[key]
        if (key in state or key != "ema") and not fits(state.get(key)):
            raise UserError(f"{path}: not a fashionmlp checkpoint as this one writes them: its {key!r} is not "
                            f"{what} (got {type(state.get(key)).__name__})")


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _tensors(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())


RESUME_KEYS = ("optimizer", "history", "step_losses", "best", "rng")
_LAYOUT: dict[str, tuple[Callable[[Any], bool], str]] = {
    "epoch": (_whole, "a whole number >= 0"),
    "global_step": (_whole, "a whole number >= 0"),
    "config": (lambda v: isinstance(v, dict), "a mapping"),
    "model": (lambda v: _tensors(v) and bool(v), "a mapping of names to tensors"),
    "optimizer": (lambda v: isinstance(v, dict) and isinstance(v.get("state"), dict)
                  and isinstance(v.get("param_groups"), list), "an optimizer's state"),
    "history": (lambda v: isinstance(v, list) and all(isinstance(row, dict) and _whole(row.get("epoch")) and isinstance(
        row.get("seconds"), (int, float)) and isinstance(row.get("train_loss"), (int, float)) for row in v),
        "a list of epochs (each with its epoch, seconds and train_loss)"),
    "step_losses": (lambda v: isinstance(v, torch.Tensor) and v.dim() == 1, "a tensor of losses"),
    "best": (lambda v: isinstance(v, dict), "a mapping"),
    "rng": (lambda v: isinstance(v, dict) and all(isinstance(v.get(k), t) for k, t in (
        ("torch", torch.Tensor), ("data", torch.Tensor), ("numpy", dict), ("python", dict)))
        and {"kind", "keys", "pos", "has_gauss", "cached_gaussian"} <= set(v["numpy"])
        and isinstance(v["numpy"]["keys"], torch.Tensor)
        and {"version", "internal", "gauss_next"} <= set(v["python"]), "generator states"),
    "ema": (lambda v: isinstance(v, dict) and _tensors(v.get("trained_weights"))
            and isinstance(v.get("n_averaged"), torch.Tensor), "an average's state"),
}


def load_model_state(model: torch.nn.Module, state: dict, path: Path) -> None:
    """Load weights, turning a shape/key mismatch into a one-line UserError."""
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise UserError(f"{path}: checkpoint does not fit the configured model ({detail})") from None


def make_ema(model: torch.nn.Module, decay: float) -> AveragedModel | None:
    """The exponential moving average of `model`'s weights and BatchNorm statistics (None when decay is 0)."""
    if not decay:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def load_training_state(model: torch.nn.Module, ema: AveragedModel | None, state: dict, path: Path) -> None:
    """Put a checkpoint's trained weights into `model` and its average into `ema`, as save_checkpoint split them."""
    if (ema is None) != ("ema" not in state):
        made, now = ("with", "without") if "ema" in state else ("without", "with")
        raise UserError(f"{path}: checkpoint was made {made} train.ema and config.yaml asks to resume {now} it; "
                        "resume needs the config the run was made with")
    if ema is None:
        load_model_state(model, state["model"], path)
        return
    load_model_state(model, state["ema"]["trained_weights"], path)
    load_model_state(ema.module, state["model"], path)
    ema.n_averaged.copy_(state["ema"]["n_averaged"])


def state_digest(state: dict[str, torch.Tensor], layout: bool = False) -> str:
    """SHA-256 over a model state's names and values (with `layout`, each tensor's dtype and shape too): the
    run's initial-weights fingerprint, and a teacher's (distill.fingerprint)."""
    digest = hashlib.sha256()
    for key, tensor in state.items():
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode() if layout else key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
