"""The optimizer study's figure: every variant's mean curve over the seeds, with a band of their spread."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from fashionmlp.plots.common import fit, legend_below, literal_text, plain_log_labels, plural, whole_epochs


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


def band_low(mean: np.ndarray, std: np.ndarray, values: np.ndarray, loss: bool) -> np.ndarray:
    """The lower edge of a mean ± std band: mean - std, except for a loss where that is 0 or below (a log axis
    cannot draw it; a loss's band went to -65.7), where it stops at the lowest seed. (It stopped there
    everywhere, accuracies too: with two seeds the lower edge was always the worse seed, not mean - std.)"""
    low = mean - std
    if not loss:
        return low
    if not values.size:
        return np.where(low > 0, low, mean)
    lowest = np.where(np.isfinite(values), values, np.inf).min(axis=0)  # nanmin warns of epochs no seed reached
    return np.where(low > 0, low, np.where(np.isfinite(lowest), lowest, np.nan))


def _band(ax, x: np.ndarray, mean: np.ndarray, std: np.ndarray, low: np.ndarray, color: str) -> bool:
    """The spread from `low` to mean + std; whether `low` stops above mean - std anywhere."""
    if len(x) == 1:  # one epoch: a band of one point has no width; the spread as an error bar
        ax.errorbar(x, mean, yerr=[mean - low, std], color=color, alpha=0.4, capsize=6)
    else:
        ax.fill_between(x, low, mean + std, color=color, alpha=0.2, linewidth=0)
    with np.errstate(invalid="ignore"):
        return bool(np.any(low > mean - std))


CUT_BAND = "a loss band that would reach 0 stops at the lowest seed"  # said beside a band where band_low cut it


def seeds_over(most: int, varies: bool) -> str:
    """What a mean ± std is over, as the picture's legend and TensorBoard's charts say it: 'N seeds', or, where
    runs stopped early or diverged, 'the seeds at each epoch (up to N)'."""
    return f"the seeds at each epoch (up to {most})" if varies else plural(most, "seed")


def _dodge(variants: int) -> float:
    """One epoch: every variant's error bar at x = 1 hid the others'; they stand this far apart around it."""
    return min(0.08, 0.6 / max(1, variants))


def _any_epoch_finished(series: dict[str, dict], axes) -> bool:
    """Whether any epoch finished; if none did, the panels say so (they were empty, under a legend explaining
    bars that were not there)."""
    if any(np.isfinite(np.asarray(s["test_accuracy"], dtype=np.float64)).any() for s in series.values()):
        return True
    every = {s["status"] for s in series.values()} == {"diverged"}
    for ax in axes:
        ax.text(0.5, 0.7, "no epoch finished:\nevery run diverged in its first epoch" if every else
                "no epoch finished", transform=ax.transAxes, ha="center", va="center", fontsize=11,
                bbox={"facecolor": "white", "edgecolor": "lightgray"})  # above the chance line
    return False


RING = {"marker": "o", "markersize": 9, "markerfacecolor": "none", "markeredgewidth": 1.5}  # a mean loses a seed


def _mark_fewer_seeds(ax, x: np.ndarray, mean: np.ndarray, values: np.ndarray, color: str) -> bool:
    """A ring on the mean curve at each epoch whose mean is over fewer seeds than the one before (a seed
    diverged or stopped early: the mean fell 2,000-fold where a diverged seed left it); whether any."""
    count = np.isfinite(values).sum(axis=0)
    fewer = np.flatnonzero((count[1:] < count[:-1]) & (count[1:] > 0)) + 1
    if len(fewer):
        ax.plot(x[fewer], mean[fewer], linestyle="", markeredgecolor=color, **RING)
    return bool(len(fewer))


@literal_text
def comparison(series: dict[str, dict], title: str,
               loss_label: str = "training loss (cross-entropy, log scale)") -> Figure:
    """Two panels: train loss (log) and test accuracy per epoch; one line per variant, mean ± std bands.

    series: name -> {"epochs": [...], "train_loss": (n_seeds, n_epochs) array, "test_accuracy": same,
    "status": str}. Arrays may hold nan where a diverged seed stopped. The bands are the mean ± the sample
    standard deviation over the seeds (ddof 1, as in summary.md), and say so in the legend.
    """

    fig = Figure(figsize=(12, 5.4), layout="constrained")
    ax_loss, ax_acc = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    seeds = max((np.asarray(s["train_loss"]).shape[0] for s in series.values()), default=1)
    # the most seeds any epoch's mean is over (runs, not seeds, were counted: "up to 4" where one diverged at once)
    most = max((int(np.isfinite(np.asarray(s["test_accuracy"], dtype=np.float64)).sum(axis=0).max(initial=0))
                for s in series.values()), default=0)
    dropped = False  # a mean over fewer seeds from some epoch on (marked: it jumps where a seed stops)
    # a diverged or unfinished seed leaves gaps: the band is then over the seeds that reached each epoch
    partial = any(np.asarray(s["test_accuracy"]).shape[0] < seeds or not np.isfinite(s["test_accuracy"]).all()
                  for s in series.values())
    stopped = False  # a loss band cut at the lowest seed, where mean - std would reach 0 (said in the legend)
    epochs = max((len(s["epochs"]) for s in series.values()), default=1)
    step = _dodge(len(series)) if epochs <= 1 else 0.0
    for k, (name, s) in enumerate(series.items()):
        color = f"C{k}"
        label = name if s["status"] == "completed" else f"{name}: {s['status']}"  # its counts are in ( )
        if not np.isfinite(np.asarray(s["test_accuracy"], dtype=np.float64)).any():
            label += ", no epoch finished"  # in the legend only: nothing of it is drawn
        style = "-" if s["status"] == "completed" else "--"
        for ax, key, scale in ((ax_loss, "train_loss", 1.0), (ax_acc, "test_accuracy", 100.0)):
            values = np.asarray(s[key], dtype=np.float64) * scale
            mean, std = seed_spread(values)
            x = np.asarray(s["epochs"][: values.shape[1]]) + step * (k - (len(series) - 1) / 2)
            ax.plot(x, mean, style, marker="o", markersize=3, color=color, label=label)
            if values.shape[0] > 1 and np.isfinite(std).any():
                stopped |= _band(ax, x, mean, std, band_low(mean, std, values, key == "train_loss"), color)
            dropped |= _mark_fewer_seeds(ax, x, mean, values, color)
            if s["status"] == "diverged":
                last = np.flatnonzero(np.isfinite(mean))
                if len(last):
                    ax.plot(x[last[-1]], mean[last[-1]], "x", color=color, markersize=12, markeredgewidth=2)
    ax_loss.set_yscale("log")
    plain_log_labels(ax_loss.yaxis)
    ax_loss.set_ylabel(loss_label)  # with label smoothing or a teacher it is not plain cross-entropy
    ax_loss.set_title("Training loss")
    ax_acc.set_ylabel("test accuracy (%)")
    ax_acc.set_title("Test accuracy")
    ax_acc.axhline(10, color="gray", linestyle=":", linewidth=1, label="chance (10%)")
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("epoch")
        whole_epochs(ax.xaxis)
        if epochs <= 1:  # one epoch (or none finished): the axis around epoch 1, not a range of ±0.05
            ax.set_xlim(0.5, 1.5)
            ax.set_xticks([1])
        ax.grid(alpha=0.3)
    drawn = _any_epoch_finished(series, (ax_loss, ax_acc))
    spread = (f"{'band' if epochs > 1 else 'bars'}: mean ± sample std over {seeds_over(most, partial)}"
              + (f"; {CUT_BAND}" if stopped else "")) if most > 1 and drawn else None
    legend_below(fig, *_legend(ax_acc, spread, dropped))  # below the panels: inside, it covered the curves
    fig.suptitle(fit(title, fig))
    return fig


def _legend(ax, spread: str | None, dropped: bool) -> tuple[list, list[str]]:
    """The variants' entries, then the band's (`spread`: what it is over) and the ring's, where drawn."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles, labels = ax.get_legend_handles_labels()
    if spread:
        handles.append(Patch(color="gray", alpha=0.3))
        labels.append(spread)
    if dropped:
        handles.append(Line2D([], [], linestyle="", **{**RING, "markeredgecolor": "gray"}))
        labels.append("from here the mean is over fewer seeds (one diverged or stopped early): a jump there is "
                      "not learning")
    return handles, labels
