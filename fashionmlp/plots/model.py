"""Pictures of a trained model (`inspect`): its first layer, its confident mistakes, per-class accuracy and
calibration. Pure: numbers in, Figure out."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from fashionmlp.data import CLASSES
from fashionmlp.metrics import Reliability
from fashionmlp.plots.common import fit, literal_text, percent, plural

SIZES = {"weights_mlp": (10, 10.6), "weights_cnn": (9.5, 12.5), "mistakes": (11, 8.6), "per_class": (12, 5),
         "calibration": (6.5, 7)}  # inches; at DPI 100 a file is 100x these in pixels


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


@literal_text
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
    title = fit(title, fig)
    # each wrapped line of a long run name's title moves the grid down (the 4th line sat on the first row)
    top = 0.925 - title.count("\n") * 1.2 * 12 / 72 / fig.get_figheight()
    axes = fig.subplots(rows, cols, squeeze=False, gridspec_kw=dict(left=0.01, right=0.84, bottom=0.01,
                                                                     top=top, wspace=0.08, hspace=0.2))
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


@literal_text
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
        ax.imshow(images[row], cmap="gray_r", vmin=0, vmax=255)  # one scale for all, as stored
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
    fig.suptitle(fit(f"{title}\nrows: the first test image of each class; the maps of one block for one image "
                 "share a colour scale, from 0 (black) to their maximum", fig, 10), fontsize=10)
    return fig


@literal_text
def mistakes_figure(images: np.ndarray, true: Sequence[int], predicted: Sequence[int], confidence: Sequence[float],
                    indices: Sequence[int], title: str = "") -> Figure:
    """Wrong predictions in a 4x6 grid, each titled with the test index, the true and the predicted class."""
    fig = Figure(figsize=SIZES["mistakes"], layout="constrained")
    axes = fig.subplots(4, 6, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k < len(images):
            ax.imshow(images[k], cmap="gray_r", vmin=0, vmax=255)  # one scale: a faint image was stretched
            ax.set_title(f"#{indices[k]}  true: {CLASSES[true[k]]}\npredicted: {CLASSES[predicted[k]]} "
                         f"({percent(confidence[k])})", fontsize=8)
    if not len(images):
        axes.flat[0].text(0, 0.5, "no wrong predictions", fontsize=12)
    fig.suptitle(fit(title, fig))
    return fig


@literal_text
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
        left.axvline(100 * overall, color="black", linestyle="--", linewidth=1, zorder=0.5)  # behind the bars
        # and their labels: it crossed the labels of the bars past it
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
        for yi, p in zip(y, pairs):  # the directions by arrow, the names being the row's: with them written out
            # ("Ankle boot → T-shirt/top: 179, ...") the text ran past the frame
            right.text(p["total"], yi, f" {p['total']}  (→ {p['first_as_second']}, ← {p['second_as_first']})",
                       va="center", fontsize=8)
        right.set_xlim(0, max(totals) * 1.6)  # room for the text right of the longest bar
        right.invert_yaxis()
    else:
        right.text(0.5, 0.5, "no confusions", ha="center", transform=right.transAxes)
        right.set_yticks([])
    right.set_xlabel("test images mistaken (row A / B:  → A taken for B,  ← B for A)")
    right.set_title(f"most confused pairs (top {len(pairs)})")
    right.grid(axis="x", alpha=0.3)
    fig.suptitle(fit(title, fig))
    return fig


@literal_text
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
    top.legend(loc="best", fontsize=8)  # where the bars leave room (upper left hid a weak model's tallest bar)
    # under the title, not over the bars, which covered it where a weak model's bins of low confidence are tall
    error = (f"expected calibration error (ECE) {rel.ece:.2%}" if rel.ece is not None else
             f"no calibration error: {plural(rel.nonfinite, 'prediction')} not finite (NaN weights?), left out "
             "of the bars")
    top.set_title(fit(f"{title}\n{error}", fig, 10) + "\n", fontsize=10)
    top.text(0.5, 1.01, "bars below the diagonal: over-confident (the confidence exceeds the accuracy); above it: "
             "under-confident", transform=top.transAxes, ha="center", va="bottom", fontsize=8, color="dimgray")
    top.grid(alpha=0.3)
    bottom.bar(lower, np.maximum(rel.counts, 0), width=width, align="edge", color="gray", edgecolor="white")
    if any(rel.counts):
        bottom.set_yscale("log")
        bottom.set_ylim(bottom=0.7)  # from one prediction up: a floor near 350 drew a bin of 394 as nearly empty
    bottom.set_xlabel(f"confidence (probability of the predicted class), {len(rel.counts)} bins")
    bottom.set_ylabel("predictions")
    bottom.grid(alpha=0.3)
    return fig
