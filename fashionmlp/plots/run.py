"""The figures of one run: its loss curve, its confusion matrix, and a grid of predictions."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from fashionmlp.data import CLASSES
from fashionmlp.plots.common import fit, legend_below, literal_text, percent, plain_log_labels, smooth, whole_epochs


@literal_text
def loss_curve(history: list[dict], step_losses: Sequence[float], title: str = "", train_note: str = "",
               distilled: bool = False, result_epoch: int | None = None, stopped_after: int | None = None) -> Figure:
    """Train/test loss per epoch, per-step train loss (smoothed), test accuracy on a second axis.

    `train_note` says how the training loss differs from the test loss's plain cross-entropy on the test images
    (e.g. "label smoothing 0.1, augmented images"), so a reader does not take the gap for overfitting's opposite.
    `result_epoch`: with early stopping, the epoch whose weights the run ends with (marked where it is not the
    last: the last point read as the result); `stopped_after`: the epoch early stopping ended the run after.
    """
    note = f", {train_note}" if train_note else ""
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.add_subplot()
    epochs = [row["epoch"] for row in history]
    if step_losses and epochs:
        steps_per_epoch = len(step_losses) / max(epochs)
        x = (np.arange(len(step_losses)) + 1) / steps_per_epoch
        window = int(steps_per_epoch // 10)  # a tenth of an epoch
        if window >= 2:
            ax.plot(x, step_losses, color="tab:blue", alpha=0.15, linewidth=0.6, label="train loss (per step)")
            ax.plot(x, smooth(step_losses, window), color="tab:blue", alpha=0.5, linewidth=0.8,
                    label="train loss (smoothed)")
        else:  # under 20 steps an epoch there is nothing to smooth: the "smoothed" line was the raw one over it
            ax.plot(x, step_losses, color="tab:blue", alpha=0.5, linewidth=0.8, label="train loss (per step)")
    ax.plot(epochs, [r["train_loss"] for r in history], "o-", color="tab:blue",
            label=f"train loss (epoch{note})")
    if history and "test_loss" in history[0]:
        ax.plot(epochs, [r["test_loss"] for r in history], "s-", color="tab:orange", label="test loss")
    if history and "val_loss" in history[0]:
        ax.plot(epochs, [r["val_loss"] for r in history], "d-", color="tab:purple", label="validation loss")
    ax.set_xlabel("epoch")
    whole_epochs(ax.xaxis)
    # distilled: the training loss mixes the KL term to the teacher with the cross-entropy the test loss is
    ax.set_ylabel("loss (test: cross-entropy)" if distilled else "cross-entropy loss")
    if all(math.isfinite(r["train_loss"]) and r["train_loss"] > 0 for r in history) and history:
        ax.set_yscale("log")
        plain_log_labels(ax.yaxis)
    ax2 = ax.twinx()
    if history and "test_accuracy" in history[0]:
        # a colour per split (train blue, test orange, validation purple), losses solid, accuracies dashed: test
        # accuracy green beside validation red was a pair a red-green colour-blind reader cannot tell apart
        ax2.plot(epochs, [100 * r["test_accuracy"] for r in history], "^--", color="tab:orange",
                 label="test accuracy")
    if history and "val_accuracy" in history[0]:  # what a sweep scores and best.pt follows
        ax2.plot(epochs, [100 * r["val_accuracy"] for r in history], "v--", color="tab:purple",
                 label="validation accuracy")
    accuracies = [r[k] for r in history for k in ("test_accuracy", "val_accuracy") if k in r]
    if accuracies and min(accuracies) < 0.2:  # near chance: an axis of 10-14% drew a wiggle there as learning
        ax2.axhline(10, color="gray", linestyle=":", linewidth=1, label="chance (10%)")
        ax2.set_ylim(0, max(30.0, 100 * max(accuracies) + 5))  # from 0: a flat line at chance looks flat
    ax2.set_ylabel("accuracy (%)" if history and "val_accuracy" in history[0] else "test accuracy (%)")
    if result_epoch is not None and epochs and result_epoch != epochs[-1]:
        ax.axvline(result_epoch, color="black", linestyle="--", linewidth=1,
                   label=f"the run's result: epoch {result_epoch} (best validation accuracy; its weights restored"
                         + (f", stopped early after epoch {stopped_after})" if stopped_after else ")"))
    legend_below(fig, max_cols=3, wrap=60)  # a distilled run's note with smoothing and augmentation is long
    ax.set_title(fit(title, fig))
    ax.grid(alpha=0.3)
    return fig


@literal_text
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
    ax.set_title(fit(title, fig, share=0.8))
    return fig


@literal_text
def prediction_grid(images: np.ndarray, true: Sequence[int], predicted: Sequence[int],
                    confidence: Sequence[float], title: str = "") -> Figure:
    """A 4x4 grid of (28, 28) images titled 'predicted (p) / true', wrong ones in red; `title` names the model (a
    grid without one could not be told from another run's)."""
    fig = Figure(figsize=(8, 9), layout="constrained")
    if title:
        fig.suptitle(fit(title, fig), fontsize=11)
    for k in range(min(16, len(images))):
        ax = fig.add_subplot(4, 4, k + 1)
        ax.imshow(images[k], cmap="gray", vmin=0, vmax=255)  # as the model sees it: light clothes on black
        ok = predicted[k] == true[k]
        ax.set_title(f"{CLASSES[predicted[k]]} ({percent(confidence[k], 0)})\ntrue: {CLASSES[true[k]]}", fontsize=8,
                     color="black" if ok else "red")
        ax.axis("off")
    return fig
