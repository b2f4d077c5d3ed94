"""Using a saved run: re-evaluate it on the test set, and predict classes of test images or image files."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fashionmlp.data import CLASSES, TensorSplit, load_data, normalize
from fashionmlp.engine import evaluate, predict_proba
from fashionmlp.errors import UserError
from fashionmlp.plots import confusion_matrix, prediction_grid
from fashionmlp.savedrun import load_run
from fashionmlp.tracking import write_json


@dataclass
class EvaluationReport:
    loss: float
    accuracy: float
    per_class: list[float]
    confusion: list[list[int]]
    figure_path: Path
    text: str


def per_class_accuracy(confusion: list[list[int]]) -> list[float]:
    cm = np.asarray(confusion, dtype=np.float64)
    return (cm.diagonal() / np.maximum(cm.sum(axis=1), 1)).tolist()


def format_confusion(confusion: list[list[int]]) -> str:
    short = [c.split("/")[0][:7] for c in CLASSES]
    lines = ["true \\ predicted".ljust(16) + "".join(f"{s:>8}" for s in short)]
    for name, row in zip(CLASSES, confusion):
        lines.append(f"{name:<16}" + "".join(f"{v:>8}" for v in row))
    return "\n".join(lines)


def evaluate_run(run_dir: Path, *, checkpoint: str = "best", data_dir: str | Path | None = None,
                 device: str | None = None) -> EvaluationReport:
    """Evaluate a run's checkpoint on the test set; writes confusion_matrix.png and evaluation-<ckpt>.json."""
    run = load_run(run_dir, checkpoint, device)
    data = load_data(run.cfg, data_dir)
    result = evaluate(run.model, TensorSplit.from_split(data.test, run.device), run.cfg.train.eval_batch_size)
    per_class = per_class_accuracy(result["confusion"])
    figure_path = Path(run_dir) / "confusion_matrix.png"
    title = f"{Path(run_dir).name} ({checkpoint}.pt, epoch {run.epoch}): test accuracy {result['accuracy']:.2%}"
    confusion_matrix(result["confusion"], title).savefig(figure_path, dpi=110)
    write_json(Path(run_dir) / f"evaluation-{checkpoint}.json",
               {"checkpoint": checkpoint, "epoch": run.epoch, "test_loss": result["loss"],
                "test_accuracy": result["accuracy"], "per_class_accuracy": dict(zip(CLASSES, per_class)),
                "confusion": result["confusion"]})
    lines = [f"run {run_dir}  checkpoint {checkpoint}.pt (epoch {run.epoch})  {len(data.test.labels)} test images",
             f"test loss {result['loss']:.4f}   test accuracy {result['accuracy']:.2%}", "",
             "per-class accuracy:"]
    lines += [f"  {name:<12} {acc:7.2%}" for name, acc in zip(CLASSES, per_class)]
    lines += ["", "confusion matrix (rows: true class, columns: predicted):", format_confusion(result["confusion"])]
    return EvaluationReport(result["loss"], result["accuracy"], per_class, result["confusion"], figure_path,
                            "\n".join(lines))


def read_image(path: Path, invert: bool = False, warn: Callable[[str], None] = print) -> np.ndarray:
    """An image file -> (28, 28) uint8 grayscale; other sizes are resized with a warning."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise UserError(f"--image {str(path)!r}: no such file")
    try:
        with Image.open(path) as img:
            img.load()
            gray = img.convert("L")
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(f"--image {str(path)!r}: not an image file PIL can read ({exc.__class__.__name__})") from None
    if gray.size != (28, 28):
        warn(f"warning: {path} is {gray.size[0]}x{gray.size[1]}; resized to 28x28 (Fashion-MNIST's size)")
        gray = gray.resize((28, 28), Image.Resampling.BILINEAR)
    array = np.asarray(gray, dtype=np.uint8)
    return 255 - array if invert else array


def top_k(probs: torch.Tensor, k: int = 3) -> list[list[tuple[str, float]]]:
    values, indices = probs.topk(k, dim=1)
    return [[(CLASSES[i], float(p)) for p, i in zip(v, ix)] for v, ix in zip(values.tolist(), indices.tolist())]


def predict_run(run_dir: Path, *, indices: list[int], image: Path | None = None, invert: bool = False,
                grid: Path | None = None, checkpoint: str = "best", data_dir: str | Path | None = None,
                device: str | None = None, warn: Callable[[str], None] = print) -> str:
    """Top-3 predictions as text; optionally a 16-image grid picture of the test set."""
    run = load_run(run_dir, checkpoint, device)
    lines = []
    if image is not None:
        pixels = read_image(image, invert, warn)
        x = normalize(torch.from_numpy(pixels[None].copy())).to(run.device)
        lines.append(_format_top(f"{image}", top_k(predict_proba(run.model, x))[0]))
    if indices or grid is not None:
        test = load_data(run.cfg, data_dir).test
        bad = [i for i in indices if not 0 <= i < len(test.labels)]
        if bad:
            raise UserError(f"--index {bad[0]}: out of range; allowed: 0 to {len(test.labels) - 1}")
        if indices:
            x = normalize(torch.from_numpy(test.images[indices])).to(run.device)
            for i, top in zip(indices, top_k(predict_proba(run.model, x))):
                lines.append(_format_top(f"test image {i} (true: {CLASSES[test.labels[i]]})", top))
        if grid is not None:
            chosen = list(range(min(16, len(test.labels))))
            probs = predict_proba(run.model, normalize(torch.from_numpy(test.images[chosen])).to(run.device)).cpu()
            figure = prediction_grid(test.images[chosen], test.labels[chosen].tolist(), probs.argmax(1).tolist(),
                                     probs.max(1).values.tolist())
            try:
                figure.savefig(grid, dpi=100)
            except OSError as exc:
                raise UserError(f"--grid {str(grid)!r}: cannot be written ({exc.strerror or exc})") from None
            lines.append(f"grid of {len(chosen)} test images saved to {grid}")
    return "\n".join(lines)


def _format_top(what: str, top: list[tuple[str, float]]) -> str:
    return f"{what}: " + ", ".join(f"{name} {p:.1%}" for name, p in top)
