"""The learning-rate range test's figure: loss against a growing learning rate, with the suggestion marked."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

from fashionmlp.plots.common import fit, legend_below, literal_text, narrow_log_ticks, plain_log_labels

if TYPE_CHECKING:
    from fashionmlp.lrfind import RangeTest


MARKED_BELOW = 20  # steps: fewer are drawn as points (lrfind.MIN_STEPS: fewer give no suggestion)


def smoothing_label(beta: float) -> str:
    if beta == 0:
        return "smoothed loss (too few steps to smooth: the loss per step)"
    return f"smoothed loss (exponential moving average, time constant {1 / (1 - beta):.3g} steps)"


def stop_text(stop: str, blow_up: float) -> str | None:
    """Why the test stopped, as the legend says it (None when it ran to --end)."""
    return {"blew_up": f"stopped: smoothed loss > {blow_up:g}x its minimum",
            "non_finite": "stopped: loss not finite", "interrupted": "stopped: interrupted"}.get(stop)


def few_ticks(axis, lrs: np.ndarray) -> None:
    """Within one decade matplotlib labels every minor tick of a log axis in full (1.3×10⁻³, 1.35×10⁻³, ...),
    and they ran into each other: plain numbers then, as many digits as tell them apart; below a factor of 3,
    where a log axis is nearly linear, at most 6 evenly spaced ticks (over a larger range those left its low
    end bare)."""
    if len(lrs) == 1:  # one step: its lr alone (the ticks were 5e-06 and 1e-05 around a point at 1e-06)
        from matplotlib.ticker import FixedLocator, NullLocator

        axis.set_major_locator(FixedLocator([float(lrs[0])]))
        axis.set_minor_locator(NullLocator())
        axis.set_major_formatter(lambda x, pos=None: f"{x:.3g}")
        return
    if not len(lrs) or lrs[-1] >= 10 * lrs[0]:  # a decade or more: matplotlib's own labels
        return
    if lrs[-1] >= 3 * lrs[0]:
        plain_log_labels(axis)
        return
    narrow_log_ticks(axis)


@literal_text
def lr_find_figure(test: RangeTest, steepest: float | None, lowest: float | None, config_lr: float | None = None,
                   title: str = "", label_smoothing: float = 0.0, blow_up: float = 4.0, distill=None,
                   no_suggestion: str | None = None) -> Figure:
    """Loss vs learning rate (log x): raw per step and smoothed; the suggestion, the minimum/10, the config's
    lr and where the test stopped are marked (a mark outside the lrs tested is in the legend only: a line there
    stretched the axis over lrs never tried). The y axis stops at 1.5x the first loss: a blow-up runs off the
    top (marked there, its peak in the legend) instead of flattening the useful part of the curve.
    `no_suggestion`: why there is none, written in the plot (a flat line said nothing of it)."""
    fig = Figure(figsize=(8, 5.2), layout="constrained")
    ax = fig.add_subplot()
    lrs = np.asarray(test.lrs, dtype=np.float64)
    raw = np.asarray(test.losses, dtype=np.float64)
    smooth = np.asarray(test.smoothed, dtype=np.float64)
    ok_raw, ok = np.isfinite(raw), np.isfinite(smooth)
    ax.plot(lrs[ok_raw], raw[ok_raw], color="tab:blue", alpha=0.3, linewidth=0.7, label="loss per step")
    ax.plot(lrs[ok], smooth[ok], color="tab:blue", linewidth=1.8, label=smoothing_label(test.beta),
            marker="o" if ok.sum() < MARKED_BELOW else None)  # few steps: each a point (6 joined across 7
    # decades read as a curve); a line of one point draws nothing
    top = 1.5 * smooth[ok][0] if ok.any() else 1.0
    marks = [(steepest, "tab:red", "--", "suggestion (steepest descent)"),
             (None if lowest is None else lowest / 10, "tab:green", "--", "minimum of smoothed loss / 10"),
             (config_lr, "dimgray", ":", "the config's lr")]
    for lr, color, style, text in marks:
        if lr is None:
            continue
        if not (len(lrs) and lrs[0] <= lr <= lrs[-1]):
            ax.plot([], [], color=color, linestyle=style, label=f"{text}: {lr:.3g} (outside the lrs tested)")
            continue
        ax.axvline(lr, color=color, linestyle=style, linewidth=1.2, label=f"{text}: {lr:.3g}")
        if ok.any():
            ax.plot([lr], [np.interp(np.log(lr), np.log(lrs[ok]), smooth[ok])], "o", color=color)
    stopped = stop_text(test.stop, blow_up)
    if stopped and ok.any():
        last = np.flatnonzero(ok)[-1]
        # at most just below the top, where the loss-per-step triangles (drawn at the top) leave it seen
        ax.plot([lrs[last]], [min(smooth[last], 0.95 * top)], "x", color="black",
                markersize=9, markeredgewidth=2,
                clip_on=False, label=f"{stopped} (lr {lrs[-1]:.3g})")
    above = ok_raw & (raw > top)
    if above.any():
        peak = int(np.argmax(np.where(ok_raw, raw, -np.inf)))
        ax.plot(lrs[above], np.full(above.sum(), top), "^", color="tab:blue", markersize=5, clip_on=False,
                label=f"loss per step above the scale (up to {raw[peak]:.3g}, at lr {lrs[peak]:.3g})")
    ax.set_ylim(0, top)
    ax.set_xscale("log")
    few_ticks(ax.xaxis, lrs)
    ax.set_xlabel("learning rate (log scale; it grows every step)")
    ce = "cross-entropy" + (f" with label smoothing {label_smoothing:g}" if label_smoothing else "")
    if distill is not None:  # not the ~2.3 a cross-entropy starts at: the KL term to the teacher weighs in
        ax.set_ylabel(f"training loss ({distill.alpha:g} T² KL to the teacher\n+ {1 - distill.alpha:g} {ce}, "
                      f"T = {distill.temperature:g})")
    else:  # wrapped: "... label smoothing 0.2)" ran off the top of the picture
        ax.set_ylabel(textwrap.fill(f"training loss ({ce})", 40))
    if no_suggestion:
        ax.text(0.5, 0.06, textwrap.fill(f"no suggestion: {no_suggestion}", 70), transform=ax.transAxes,
                ha="center", va="bottom", fontsize=9, bbox={"facecolor": "white", "edgecolor": "lightgray"})
    ax.set_title(fit(title, fig, 10), fontsize=10)
    ax.grid(alpha=0.3)
    legend_below(fig, max_cols=2)
    return fig
