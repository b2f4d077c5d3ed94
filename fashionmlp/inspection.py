"""Pictures of a trained model: what its first layer learned, where it goes wrong, how well calibrated it is.

`inspect_run` writes RUN_DIR/inspect/: weights.png, mistakes.png, per_class.png, calibration.png,
summary.json, and a TensorBoard log (the four pictures, and the penultimate layer's activations of 2,000
test images for the projector). The module is not called `inspect`: a fashionmlp/inspect.py shadows the
standard library's `inspect` whenever fashionmlp/ itself is on sys.path (`python fashionmlp/cli.py` then
fails inside typer).
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from fashionmlp.data import CLASSES, TensorSplit, load_data
from fashionmlp.engine import predict_proba
from fashionmlp.errors import UserError
from fashionmlp.models import SmallCNN
from fashionmlp.plots import percent
from fashionmlp.savedrun import load_run
from fashionmlp.tracking import write_json

DPI = 100
EMBEDDING_IMAGES = 2000  # test images in the projector (the first ones: the test set's classes are balanced)
EMBEDDING_TAG = "penultimate"
N_MISTAKES = 24  # 4 rows of 6
MAX_UNITS = 144  # first-layer units drawn (12x12): wider layers show their first 144
N_PAIRS = 8  # most confused class pairs listed
N_BINS = 10  # reliability diagram: equal-width confidence bins over [0, 1]
FILES = ("weights.png", "mistakes.png", "per_class.png", "calibration.png", "summary.json")
SIZES = {"weights_mlp": (10, 10.6), "weights_cnn": (9.5, 12.5), "mistakes": (11, 8.6), "per_class": (12, 5),
         "calibration": (6.5, 7)}  # inches; at DPI 100 a file is 100x these in pixels


# ---------------------------------------------------------------- numbers


@torch.inference_mode()
def predict_with_features(model: nn.Module, x: torch.Tensor, batch_size: int = 2000, tta: bool = False
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 1, 28, 28) -> (N, 10) class probabilities and (N, D) penultimate activations, the input of the
    last layer (both networks end with the classifier's Linear). With `tta` the probabilities are averaged
    with the mirrored images' (train.tta: flip); the activations stay the images' own."""
    model.eval()
    last = list(model.modules())[-1]
    if not isinstance(last, nn.Linear):
        raise TypeError(f"expected the model to end with nn.Linear, got {type(last).__name__}")
    captured: list[torch.Tensor] = []
    hook = last.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0].float().cpu()))
    try:
        probs = [torch.softmax(model(x[i:i + batch_size]).float(), dim=1).cpu() for i in range(0, len(x), batch_size)]
    finally:
        hook.remove()
    if tta:
        probs = [predict_proba(model, x, batch_size, tta=True).float().cpu()]
    return torch.cat(probs), torch.cat(captured)


@dataclass(frozen=True)
class Reliability:
    """Per confidence bin (lower, upper]: how many predictions, their accuracy and mean confidence."""

    edges: list[float]
    counts: list[int]
    accuracy: list[float | None]  # None for an empty bin
    confidence: list[float | None]
    ece: float


def reliability(confidence: Sequence[float], correct: Sequence[bool], bins: int = N_BINS) -> Reliability:
    """Bin predictions by confidence into `bins` equal-width bins, (0, 1/bins], ..., and compute the expected
    calibration error: ECE = sum over bins of (n_b / N) * |accuracy_b - mean confidence_b| (Guo et al., 2017)."""
    conf = np.asarray(confidence, dtype=np.float64)
    hit = np.asarray(correct, dtype=np.float64)
    if conf.shape != hit.shape or conf.ndim != 1:
        raise ValueError(f"confidence {conf.shape} and correct {hit.shape} must be 1-D and of equal length")
    # right-closed bins: a confidence of exactly 0.5 belongs to (0.4, 0.5]; 0 joins the first bin
    which = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    hits = np.bincount(which, weights=hit, minlength=bins)
    confs = np.bincount(which, weights=conf, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc, mean_conf = hits / counts, confs / counts
    n = max(len(conf), 1)
    ece = float(sum(c / n * abs(a - m) for c, a, m in zip(counts, acc, mean_conf) if c))
    return Reliability([i / bins for i in range(bins + 1)], counts.tolist(),
                       [float(a) if c else None for c, a in zip(counts, acc)],
                       [float(m) if c else None for c, m in zip(counts, mean_conf)], ece)


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool], bins: int = N_BINS) -> float:
    return reliability(confidence, correct, bins).ece


def confident_mistakes(probs: np.ndarray, labels: np.ndarray, k: int = N_MISTAKES) -> np.ndarray:
    """Indices of the `k` wrong predictions with the highest confidence, most confident first."""
    predicted, confidence = probs.argmax(1), probs.max(1)
    wrong = np.flatnonzero(predicted != labels)
    order = np.argsort(-confidence[wrong], kind="stable")  # ties keep the test set's order
    return wrong[order[:k]]


def confused_pairs(confusion: np.ndarray, k: int = N_PAIRS) -> list[dict]:
    """The `k` class pairs most often mistaken for each other, both directions counted (rows: true class)."""
    cm = np.asarray(confusion, dtype=np.int64)
    pairs = []
    for a in range(len(cm)):
        for b in range(a + 1, len(cm)):
            total = int(cm[a, b] + cm[b, a])
            if total:
                pairs.append({"classes": [CLASSES[a], CLASSES[b]], "total": total,
                              "first_as_second": int(cm[a, b]), "second_as_first": int(cm[b, a])})
    pairs.sort(key=lambda p: -p["total"])  # stable: equal totals keep class order
    return pairs[:k]


def confusion_of(labels: np.ndarray, predicted: np.ndarray, n_classes: int = len(CLASSES)) -> np.ndarray:
    """(10, 10) counts; rows are true classes, columns predicted ones."""
    return np.bincount(labels * n_classes + predicted, minlength=n_classes ** 2).reshape(n_classes, n_classes)


# ---------------------------------------------------------------- figures (pure: numbers in, Figure out)


def grid_shape(n: int, max_cols: int | None = None) -> tuple[int, int]:
    """Rows and columns of a near-square grid holding n tiles."""
    cols = max(1, math.ceil(math.sqrt(n)))
    if max_cols:
        cols = min(cols, max_cols)
    return math.ceil(n / cols), cols


def mosaic(tiles: np.ndarray, cols: int) -> np.ndarray:
    """(n, h, w) -> one (rows*(h+1)-1, cols*(w+1)-1) image with a 1-pixel NaN gap between tiles."""
    n, h, w = tiles.shape
    rows = math.ceil(n / cols)
    out = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), np.nan)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        out[r * (h + 1): r * (h + 1) + h, c * (w + 1): c * (w + 1) + w] = tile
    return out


def _cmap(name: str):
    from matplotlib import colormaps

    return colormaps[name].with_extremes(bad="white")  # the NaN gaps of a mosaic


def mlp_weights_figure(weights: np.ndarray, title: str = "") -> Figure:
    """First-layer units of an MLP, (units, 784) -> one 28x28 image per unit in a near-square grid, on one
    diverging colour scale centred at 0 (red: the pixel raises the unit's input, blue: lowers it).

    The scale ends at the 99th percentile of |w|: the few largest weights would otherwise wash out the rest.
    """
    units = len(weights)
    rows, cols = grid_shape(units)
    limit = float(np.percentile(np.abs(weights), 99)) or 1.0
    # fixed margins, no layout engine: constrained layout takes seconds to place 100 axes
    fig = Figure(figsize=SIZES["weights_mlp"])
    axes = fig.subplots(rows, cols, squeeze=False, gridspec_kw=dict(left=0.01, right=0.84, bottom=0.01,
                                                                     top=0.925, wspace=0.08, hspace=0.2))
    image = None
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k < units:
            image = ax.imshow(weights[k].reshape(28, 28), cmap="RdBu_r", vmin=-limit, vmax=limit,
                              interpolation="nearest")
            ax.set_title(f"unit {k}", fontsize=6 if cols >= 10 else 8, pad=1)
    fig.colorbar(image, cax=fig.add_axes((0.87, 0.3, 0.02, 0.4)), extend="both",
                 label="weight on a normalized pixel\n(scale clipped at the 99th percentile of |w|)")
    fig.suptitle(title, y=0.99, va="top")
    return fig


def cnn_weights_figure(filters: np.ndarray, images: np.ndarray, labels: Sequence[int], maps1: np.ndarray,
                       maps2: np.ndarray, title: str = "") -> Figure:
    """The first conv layer's filters, (c1, 1, k, k), and for one test image per class (rows) the feature maps
    of both conv blocks, (n, c1, 14, 14) and (n, c2, 7, 7), as mosaics of 8 maps per row."""
    n = len(images)
    fig = Figure(figsize=SIZES["weights_cnn"], layout="constrained")
    grid = fig.add_gridspec(n + 1, 3, width_ratios=[1, 4, 2], height_ratios=[1.3] + [1] * n)
    limit = float(np.abs(filters).max()) or 1.0
    ax = fig.add_subplot(grid[0, 1:])
    shown = ax.imshow(mosaic(filters[:, 0], min(16, len(filters))), cmap=_cmap("RdBu_r"), vmin=-limit, vmax=limit)
    ax.set_title(f"first conv layer: {len(filters)} filters ({filters.shape[-2]}x{filters.shape[-1]} weights; "
                 "red +, blue -)", fontsize=9)
    ax.set_axis_off()
    fig.colorbar(shown, ax=ax, fraction=0.03, pad=0.01)
    for row in range(n):
        ax = fig.add_subplot(grid[row + 1, 0])
        ax.imshow(images[row], cmap="gray_r")
        ax.set_ylabel(CLASSES[labels[row]], fontsize=8, rotation=0, ha="right", va="center")
        ax.set_xticks([])
        ax.set_yticks([])
        for col, maps, name in ((1, maps1, "block 1"), (2, maps2, "block 2")):
            ax = fig.add_subplot(grid[row + 1, col])
            top = float(np.abs(maps[row]).max()) or 1.0
            signed = bool((maps[row] < 0).any())  # ReLU maps are >= 0; tanh/GELU ones are not
            ax.imshow(mosaic(maps[row], 8), cmap=_cmap("RdBu_r" if signed else "magma"),
                      vmin=-top if signed else 0, vmax=top)
            ax.set_axis_off()
            if row == 0:
                ax.set_title(f"{name}: {maps.shape[1]} feature maps, {maps.shape[2]}x{maps.shape[3]}",
                             fontsize=9)
    fig.suptitle(f"{title}\nrows: the first test image of each class; the maps of one block for one image "
                 "share a colour scale, from 0 (black) to their maximum", fontsize=10)
    return fig


def mistakes_figure(images: np.ndarray, true: Sequence[int], predicted: Sequence[int], confidence: Sequence[float],
                    indices: Sequence[int], title: str = "") -> Figure:
    """Wrong predictions in a 4x6 grid, each titled with the test index, the true and the predicted class."""
    fig = Figure(figsize=SIZES["mistakes"], layout="constrained")
    axes = fig.subplots(4, 6, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k < len(images):
            ax.imshow(images[k], cmap="gray_r")
            ax.set_title(f"#{indices[k]}  true: {CLASSES[true[k]]}\npredicted: {CLASSES[predicted[k]]} "
                         f"({percent(confidence[k])})", fontsize=8)
    if not len(images):
        axes.flat[0].text(0, 0.5, "no wrong predictions", fontsize=12)
    fig.suptitle(title)
    return fig


def per_class_figure(accuracy: Sequence[float], pairs: list[dict], overall: float | None = None,
                     title: str = "") -> Figure:
    """Left: accuracy per class as bars; right: the most confused pairs with their counts in each direction."""
    fig = Figure(figsize=SIZES["per_class"], layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=[1, 1.3])
    y = np.arange(len(CLASSES))
    values = 100 * np.asarray(accuracy, dtype=np.float64)
    left.barh(y, values, color="tab:blue")
    for yi, v in zip(y, values):  # inside a long bar in white, after a short one in black
        inside = v >= 15
        left.text(v - 1 if inside else v + 1, yi, f"{v:.1f}%", ha="right" if inside else "left", va="center",
                  color="white" if inside else "black", fontsize=8)
    if overall is not None:
        left.axvline(100 * overall, color="black", linestyle="--", linewidth=1)
    left.set_yticks(y, CLASSES, fontsize=9)
    left.invert_yaxis()
    left.set_xlim(0, 100)
    left.set_xlabel("test accuracy of the class (%)")
    left.set_title("accuracy per class" + ("" if overall is None else f" (dashed: all classes, {overall:.2%})"))
    left.grid(axis="x", alpha=0.3)
    if pairs:
        totals = [p["total"] for p in pairs]
        y = np.arange(len(pairs))
        right.barh(y, totals, color="tab:orange")
        right.set_yticks(y, [f"{p['classes'][0]} / {p['classes'][1]}" for p in pairs], fontsize=9)
        for yi, p in zip(y, pairs):
            a, b = p["classes"]
            right.text(p["total"], yi, f" {p['total']}  ({a} → {b}: {p['first_as_second']}, "
                       f"{b} → {a}: {p['second_as_first']})", va="center", fontsize=8)
        right.set_xlim(0, max(totals) * 2.4)  # room for the text right of the longest bar
        right.invert_yaxis()
    else:
        right.text(0.5, 0.5, "no confusions", ha="center", transform=right.transAxes)
        right.set_yticks([])
    right.set_xlabel("test images mistaken, both directions (true → predicted)")
    right.set_title(f"most confused pairs (top {len(pairs)})")
    right.grid(axis="x", alpha=0.3)
    fig.suptitle(title)
    return fig


def calibration_figure(rel: Reliability, title: str = "") -> Figure:
    """Reliability diagram: accuracy vs confidence per bin against the diagonal, the gap shaded; below, how
    many predictions fall in each bin (log scale)."""
    fig = Figure(figsize=SIZES["calibration"], layout="constrained")
    top, bottom = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    edges = np.asarray(rel.edges)
    width = np.diff(edges)
    lower = edges[:-1]
    filled = [i for i, c in enumerate(rel.counts) if c]
    acc = np.array([rel.accuracy[i] for i in filled])
    conf = np.array([rel.confidence[i] for i in filled])
    top.bar(lower[filled], acc, width=width[filled], align="edge", color="tab:blue", edgecolor="white",
            label="accuracy in the bin")
    # the gap, over or under the accuracy: hatched outline only, so it reads the same over blue and white
    top.bar(lower[filled], conf - acc, bottom=acc, width=width[filled], align="edge", facecolor="none",
            edgecolor="tab:red", hatch="//", linewidth=1, label="gap to the bin's mean confidence")
    top.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_title(f"{title}\nexpected calibration error (ECE) {rel.ece:.2%}", fontsize=10)
    top.legend(loc="upper left", fontsize=8)
    top.text(0.02, 0.8, "bars below the diagonal: over-confident (the confidence\nexceeds the accuracy); above it: "
             "under-confident",
             transform=top.transAxes, va="top", fontsize=8, color="dimgray")
    top.grid(alpha=0.3)
    bottom.bar(lower, np.maximum(rel.counts, 0), width=width, align="edge", color="gray", edgecolor="white")
    if any(rel.counts):
        bottom.set_yscale("log")
    bottom.set_xlabel(f"confidence (probability of the predicted class), {len(rel.counts)} bins")
    bottom.set_ylabel("predictions")
    bottom.grid(alpha=0.3)
    return fig


# ---------------------------------------------------------------- a saved run


@dataclass
class InspectReport:
    out_dir: Path
    summary: dict
    notes: list[str] = field(default_factory=list)  # e.g. that best.pt was chosen on the test set

    @property
    def text(self) -> str:
        s = self.summary
        worst = min(s["per_class_accuracy"].items(), key=lambda kv: kv[1])
        lines = [f"run {s['run']}  checkpoint {s['checkpoint']}.pt (epoch {s['epoch']})  "
                 f"{s['test_images']} test images",
                 f"test accuracy {s['test_accuracy']:.2%}   expected calibration error {s['ece']:.2%}   "
                 f"weakest class {worst[0]} ({worst[1]:.1%})"]
        if s["confused_pairs"]:
            p = s["confused_pairs"][0]
            lines.append(f"most confused pair: {p['classes'][0]} / {p['classes'][1]} ({p['total']} test images)")
        lines.append(f"pictures: {', '.join(f for f in FILES if f.endswith('.png'))} and summary.json in "
                     f"{self.out_dir}")
        lines.append(f"TensorBoard (images and the projector of {s['embedding']['images']} test images): "
                     f"tensorboard --logdir {self.out_dir}")
        return "\n".join(lines)


def check_writable_folder(out_dir: Path) -> None:
    """Refuse, before any work, a folder for the pictures that is a file or cannot be written."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{str(out_dir)!r} is a file, not a folder; inspect writes its pictures into a folder of "
                        "that name: move the file away")
    where = out_dir if out_dir.exists() else out_dir.parent
    if not os.access(where, os.W_OK | os.X_OK):
        raise UserError(f"{str(where)!r} cannot be written (no write permission); inspect writes its pictures "
                        f"into {str(out_dir)!r}")


def _feature_maps(model: nn.Module, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Outputs of the two conv blocks of a SmallCNN: (n, c1, 14, 14) and (n, c2, 7, 7)."""
    with torch.inference_mode():
        layers = list(model)  # slicing a SmallCNN would try to build a new SmallCNN
        # two blocks before the Flatten: conv, pool, act (or conv, act, pool; with BatchNorm conv, pool, BN, act)
        per_block = next(i for i, m in enumerate(layers) if isinstance(m, nn.Flatten)) // 2
        first = nn.Sequential(*layers[:per_block])(x)
        second = nn.Sequential(*layers[per_block:2 * per_block])(first)
    return first.float().cpu().numpy(), second.float().cpu().numpy()


def inspect_run(run_dir: Path, *, checkpoint: str | None = None, data_dir: str | Path | None = None,
                device: str | None = None, embedding_images: int = EMBEDDING_IMAGES,
                echo: Callable[[str], None] = lambda line: None) -> InspectReport:
    """Draw a saved run's model into RUN_DIR/inspect/ and its TensorBoard log; returns the numbers shown.
    `echo` is told of each stage (for progress)."""
    run_dir = Path(run_dir)
    run = load_run(run_dir, checkpoint, device)
    checkpoint = run.name
    out_dir = run_dir / "inspect"
    check_writable_folder(out_dir)
    test = load_data(run.cfg, data_dir).test
    echo(f"inspect: scoring {len(test.labels):,} test images with {checkpoint}.pt (epoch {run.epoch})")
    split = TensorSplit.from_split(test, run.device)
    probs_t, features = predict_with_features(run.model, split.x, run.cfg.train.eval_batch_size,
                                              run.cfg.train.tta == "flip")
    probs = probs_t.double().numpy()
    labels = test.labels
    predicted, confidence = probs.argmax(1), probs.max(1)
    correct = predicted == labels
    rel = reliability(confidence, correct)
    confusion = confusion_of(labels, predicted)
    per_class = (confusion.diagonal() / np.maximum(confusion.sum(1), 1)).tolist()
    pairs = confused_pairs(confusion)
    wrong = confident_mistakes(probs, labels)
    name = f"{run_dir.name} ({checkpoint}.pt, epoch {run.epoch})"

    if isinstance(run.model, SmallCNN):
        firsts = [int(np.flatnonzero(labels == c)[0]) for c in range(len(CLASSES)) if (labels == c).any()]
        maps1, maps2 = _feature_maps(run.model, split.x[firsts])
        conv = next(m for m in run.model.modules() if isinstance(m, nn.Conv2d))
        weights = cnn_weights_figure(conv.weight.detach().float().cpu().numpy(), test.images[firsts],
                                     labels[firsts].tolist(), maps1, maps2, f"What the CNN learned: {name}")
    else:
        linear = next(m for m in run.model.modules() if isinstance(m, nn.Linear))
        units = linear.weight.shape[0]
        which = f"{units} units" if units <= MAX_UNITS else f"the first {MAX_UNITS} of {units} units"
        weights = mlp_weights_figure(linear.weight[:MAX_UNITS].detach().float().cpu().numpy(),
                                     f"What the MLP's first layer learned: {which}, each unit's 784 input "
                                     f"weights as a 28x28 image\n{name}")
    figures = {
        "weights": weights,
        "mistakes": mistakes_figure(test.images[wrong], labels[wrong].tolist(), predicted[wrong].tolist(),
                                    confidence[wrong].tolist(), wrong.tolist(),
                                    f"The {len(wrong)} most confident mistakes (of {int((~correct).sum())}), "
                                    f"most confident first: {name}"),
        "per_class": per_class_figure(per_class, pairs, float(correct.mean()), f"Per class: {name}"),
        "calibration": calibration_figure(rel, f"Reliability diagram: {name}"),
    }
    n_embed = min(embedding_images, len(labels))
    summary = {
        "run": str(run_dir), "checkpoint": checkpoint, "epoch": run.epoch, "model": run.cfg.model.name,
        "test_images": len(labels), "test_accuracy": float(correct.mean()), "ece": rel.ece,
        "calibration_bins": [{"lower": lo, "upper": hi, "count": c, "accuracy": a, "confidence": m}
                             for lo, hi, c, a, m in zip(rel.edges[:-1], rel.edges[1:], rel.counts, rel.accuracy,
                                                        rel.confidence)],
        "per_class_accuracy": dict(zip(CLASSES, per_class)),
        "confused_pairs": pairs,
        "mistakes": [{"index": int(i), "true": CLASSES[labels[i]], "predicted": CLASSES[predicted[i]],
                      "confidence": float(confidence[i])} for i in wrong],
        "embedding": {"images": n_embed, "dimensions": int(features.shape[1]), "tag": EMBEDDING_TAG,
                      "layer": "input of the last Linear layer (the penultimate layer's activations)"},
    }
    echo(f"inspect: drawing {', '.join(f'{key}.png' for key in figures)}")
    try:
        out_dir.mkdir(exist_ok=True)
        for key, figure in figures.items():
            figure.savefig(out_dir / f"{key}.png", dpi=DPI)
    except OSError as exc:
        raise UserError(f"{str(out_dir)!r} cannot be written: {exc.strerror or exc}") from None
    write_json(out_dir / "summary.json", summary)
    echo(f"inspect: writing the TensorBoard log and the projector ({n_embed:,} images)")
    _tensorboard(out_dir, list(figures), features[:n_embed], labels[:n_embed], predicted[:n_embed],
                 test.images[:n_embed], run.global_step)
    return InspectReport(out_dir, summary, run.notes)


def _tensorboard(out_dir: Path, pictures: list[str], features: torch.Tensor, labels: np.ndarray,
                 predicted: np.ndarray, images: np.ndarray, step: int) -> None:
    """A fresh log in out_dir (the previous inspection's is removed, so TensorBoard shows one, not a mix): the
    saved pictures, read back rather than drawn twice, and the embedding with labels and an image sprite."""
    from PIL import Image
    from torch.utils.tensorboard import SummaryWriter

    for old in out_dir.glob("events.out.tfevents.*"):
        old.unlink()
    (out_dir / "projector_config.pbtxt").unlink(missing_ok=True)
    for old in out_dir.glob("[0-9][0-9][0-9][0-9][0-9]"):  # add_embedding's <step:05d>/<tag>/ folders
        if old.is_dir():
            shutil.rmtree(old)
    writer = SummaryWriter(log_dir=str(out_dir))
    try:
        for key in pictures:
            with Image.open(out_dir / f"{key}.png") as png:
                writer.add_image(f"inspect/{key}", np.asarray(png.convert("RGB")), step, dataformats="HWC")
        metadata = [[CLASSES[t], CLASSES[p], "yes" if t == p else "no"] for t, p in zip(labels, predicted)]
        # the sprite shows the images as stored: light clothes on black, in [0, 1]
        sprite = torch.from_numpy(images).unsqueeze(1).float().div(255)
        writer.add_embedding(features, metadata=metadata, metadata_header=["label", "predicted", "correct"],
                             label_img=sprite, global_step=step, tag=EMBEDDING_TAG)
    finally:
        writer.close()
