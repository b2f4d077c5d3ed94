"""Pure plotting functions: numbers in, matplotlib Figure out (no pyplot, so no global backend state)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from fashionmlp.data import CLASSES


def plural(n: int, word: str) -> str:
    """'1 epoch', '2 epochs'."""
    return f"{n} {word}" + ("" if n == 1 else "s")


def percent(p: float, digits: int = 2) -> str:
    """A probability as a percentage that reads 100% only when it is exactly 1, and 0% only when it is 0
    (0.99997 is '>99.99%', not '100.00%')."""
    text = f"{p:.{digits}%}"
    if p < 1 and text == f"{1:.{digits}%}":
        return f">{1 - 10 ** -(digits + 2):.{digits}%}"
    if p > 0 and text == f"{0:.{digits}%}":
        return f"<{10 ** -(digits + 2):.{digits}%}"
    return text


def smooth(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing moving average (the first points average what exists so far)."""
    v = np.asarray(values, dtype=np.float64)
    if window <= 1 or len(v) == 0:
        return v
    c = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def loss_curve(history: list[dict], step_losses: Sequence[float], title: str = "", train_note: str = "") -> Figure:
    """Train/test loss per epoch, per-step train loss (smoothed), test accuracy on a second axis.

    `train_note` says how the training loss differs from the test loss's plain cross-entropy on the test images
    (e.g. "label smoothing 0.1, augmented images"), so a reader does not take the gap for overfitting's opposite.
    """
    note = f", {train_note}" if train_note else ""
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.add_subplot()
    epochs = [row["epoch"] for row in history]
    if step_losses and epochs:
        steps_per_epoch = len(step_losses) / max(epochs)
        x = (np.arange(len(step_losses)) + 1) / steps_per_epoch
        ax.plot(x, step_losses, color="tab:blue", alpha=0.15, linewidth=0.6, label="train loss (per step)")
        ax.plot(x, smooth(step_losses, max(1, int(steps_per_epoch // 10))), color="tab:blue", alpha=0.5,
                linewidth=0.8, label="train loss (smoothed)")
    ax.plot(epochs, [r["train_loss"] for r in history], "o-", color="tab:blue", label=f"train loss (epoch{note})")
    if history and "test_loss" in history[0]:
        ax.plot(epochs, [r["test_loss"] for r in history], "s-", color="tab:orange", label="test loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy loss")
    if all(math.isfinite(r["train_loss"]) and r["train_loss"] > 0 for r in history) and history:
        ax.set_yscale("log")
    ax2 = ax.twinx()
    if history and "test_accuracy" in history[0]:
        ax2.plot(epochs, [100 * r["test_accuracy"] for r in history], "^--", color="tab:green",
                 label="test accuracy")
    ax2.set_ylabel("test accuracy (%)")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    fig.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="outside lower center", ncols=3, fontsize=8)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return fig


def confusion_matrix(confusion: list[list[int]], title: str = "") -> Figure:
    """Row-normalized confusion matrix with counts; rows are true classes."""
    cm = np.asarray(confusion, dtype=np.float64)
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig = Figure(figsize=(7.5, 6.5), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="fraction of the true class")
    ax.set_xticks(range(10), CLASSES, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(10), CLASSES, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(10):
        for j in range(10):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if rates[i, j] > 0.5 else "black")
    ax.set_title(title)
    return fig


def prediction_grid(images: np.ndarray, true: Sequence[int], predicted: Sequence[int],
                    confidence: Sequence[float]) -> Figure:
    """A 4x4 grid of (28, 28) images titled 'predicted (p) / true', wrong ones in red."""
    fig = Figure(figsize=(8, 9), layout="constrained")
    for k in range(min(16, len(images))):
        ax = fig.add_subplot(4, 4, k + 1)
        ax.imshow(images[k], cmap="gray", vmin=0, vmax=255)  # as the model sees it: light clothes on black
        ok = predicted[k] == true[k]
        ax.set_title(f"{CLASSES[predicted[k]]} ({percent(confidence[k], 0)})\ntrue: {CLASSES[true[k]]}", fontsize=8,
                     color="black" if ok else "red")
        ax.axis("off")
    return fig


def seed_spread(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column of a (seeds, epochs) array with nan gaps: the mean and the sample standard deviation (ddof 1,
    as the study's table reports it; nan where fewer than two seeds have a value)."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    count = finite.sum(axis=0)
    total = np.where(finite, values, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
        squares = np.where(finite, (values - mean) ** 2, 0.0).sum(axis=0)
        std = np.where(count > 1, np.sqrt(squares / (count - 1)), np.nan)
    return np.where(count > 0, mean, np.nan), std


def comparison(series: dict[str, dict], title: str) -> Figure:
    """Two panels: train loss (log) and test accuracy per epoch; one line per variant, mean ± std bands.

    series: name -> {"epochs": [...], "train_loss": (n_seeds, n_epochs) array, "test_accuracy": same,
    "status": str}. Arrays may hold nan where a diverged seed stopped. The bands are the mean ± the sample
    standard deviation over the seeds (ddof 1, as in summary.md), and say so in the legend.
    """
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(12, 5.4), layout="constrained")
    ax_loss, ax_acc = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    seeds = max((np.asarray(s["train_loss"]).shape[0] for s in series.values()), default=1)
    for k, (name, s) in enumerate(series.items()):
        color = f"C{k}"
        label = name if s["status"] == "completed" else f"{name} ({s['status']})"
        style = "-" if s["status"] == "completed" else "--"
        for ax, key, scale in ((ax_loss, "train_loss", 1.0), (ax_acc, "test_accuracy", 100.0)):
            values = np.asarray(s[key], dtype=np.float64) * scale
            mean, std = seed_spread(values)
            x = np.asarray(s["epochs"][: values.shape[1]])
            ax.plot(x, mean, style, marker="o", markersize=3, color=color, label=label)
            if values.shape[0] > 1 and np.isfinite(std).any():
                # never below the lowest seed: keeps the band positive on the log-scale loss panel
                low = np.maximum(mean - std, np.nanmin(np.where(np.isfinite(values), values, np.nan), axis=0))
                ax.fill_between(x, low, mean + std, color=color, alpha=0.2, linewidth=0)
            if s["status"] == "diverged":
                last = np.flatnonzero(np.isfinite(mean))
                if len(last):
                    ax.plot(x[last[-1]], mean[last[-1]], "x", color=color, markersize=12, markeredgewidth=2)
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel("training loss (cross-entropy, log scale)")
    ax_loss.set_title("Training loss")
    ax_acc.set_ylabel("test accuracy (%)")
    ax_acc.set_title("Test accuracy")
    ax_acc.axhline(10, color="gray", linestyle=":", linewidth=1, label="chance (10%)")
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.grid(alpha=0.3)
    handles, labels = ax_acc.get_legend_handles_labels()
    if seeds > 1:
        from matplotlib.patches import Patch

        handles.append(Patch(color="gray", alpha=0.3))
        labels.append(f"band: mean ± sample std over {seeds} seeds")
    # below the panels: inside, it covered the curves
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 6), fontsize=8)
    fig.suptitle(title)
    return fig
