"""Optuna's own figures of a study (optimization history, intermediate values, parallel coordinates, parameter
importances), drawn with matplotlib where there are enough trials, titled and labelled for this tool."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from fashionmlp.tracking import save_figure

if TYPE_CHECKING:
    from fashionmlp.sweep.spec import SweepSpec

IMPORTANCES_FROM = 10  # complete trials before param_importances.png is drawn
TOP_TRIALS = 3  # at least this many best trials in the importances' comparison


def sweep_figures(study, spec: SweepSpec, folder: Path) -> tuple[list[str], list[str]]:
    """Optuna's matplotlib figures, where there are enough trials to draw them; returns the file names, and
    why any could not be drawn (values a log axis cannot show, such as an lr range near 1e-300)."""
    import matplotlib
    import matplotlib.pyplot as plt

    from fashionmlp.sweep.backend import TrialState, optuna  # here: fashionmlp.sweep imports this module

    vis = optuna.visualization.matplotlib

    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    reported = any(t.intermediate_values for t in study.get_trials(deepcopy=False))
    name = spec.metric
    plots = []  # (file, draw, x label or None); Optuna's plots show complete trials, except the epoch curves
    if complete >= 1:
        plots.append(("optimization_history.png", lambda: vis.plot_optimization_history(study, target_name=name),
                      "trial"))
    if reported:  # every trial's metric per epoch: pruned ones stop early
        plots.append(("intermediate_values.png", lambda: intermediate_values(study, name), "epoch"))
    if complete >= 2:
        plots.append(("parallel_coordinate.png", lambda: vis.plot_parallel_coordinate(study, target_name=name),
                      None))
    if complete >= IMPORTANCES_FROM and len(spec.params) >= 2:  # fewer: the importances are noise
        # PED-ANOVA compares the values of the best trials (Optuna's default: the top 10%) with all: with fewer
        # than 30 trials that is one or two, and 8 grid trials gave every key 0.33 whatever their scores
        quantile = importance_quantile(complete)
        evaluator = optuna.importance.PedAnovaImportanceEvaluator(target_quantile=quantile)
        plots.append(("param_importances.png", lambda: vis.plot_param_importances(
            study, evaluator=evaluator, target_name=name), f"importance (PED-ANOVA: the best {quantile:.0%} of "
                                                            f"{complete} complete trials against all)"))
    made, failed = [], []
    with matplotlib.rc_context():  # Optuna's plots switch the process to its ggplot style, for good: every later
        for file, draw, xlabel in plots:  # picture of the process came out grey, its text larger
            try:
                made.append(_draw(study, folder, file, draw, xlabel, complete))
            except (ValueError, OverflowError) as exc:
                plt.close("all")
                failed.append(f"{file} ({exc})")
    return made, failed


def _draw(study, folder: Path, file: str, draw, xlabel: str | None, complete: int) -> str:
    import matplotlib.pyplot as plt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
        ax = draw()
    if file == "param_importances.png":
        ax.set_xlabel(xlabel)
        for label in ax.texts:  # each bar's value, a space after its end (a bare "<0.01" met the tick: "-<0.01")
            label.set_text(" " + label.get_text())
    elif xlabel is not None:  # trials and epochs are whole numbers
        ax.set_xlabel(xlabel)
        whole_ticks(ax)
    if file == "optimization_history.png" and complete < len(study.get_trials(deepcopy=False)):
        ax.set_xlabel("trial (complete trials only: pruned, failed and waiting ones are not drawn)")
    if file == "parallel_coordinate.png":
        _readable_parallel(ax, study)
    titled(ax, f": study {study.study_name}")
    fig = ax.figure
    fig.set_size_inches(9, 5)
    fig.tight_layout()
    save_figure(fig, folder / file, dpi=110)
    plt.close(fig)
    return file


def _readable_parallel(ax, study) -> None:
    """Optuna's parallel coordinates, made readable: each trial's line from Blues' white end to its dark end
    drew the worst trial white or pale on grey (invisible), so the lightest 45% of the map is cut off (the
    colour bar follows) and the background is white; each axis gets 5% room above and below, so the lines at
    its ends no longer run along the frame and the end ticks ("sgd") clear the top; names Optuna cut to 20
    characters ("train.label_smoot...") are whole again, and the pruned trials it leaves out are counted."""
    import numpy as np
    from matplotlib.colors import ListedColormap

    from fashionmlp.sweep.backend import TrialState

    for lines in ax.collections:
        cmap = lines.get_cmap()
        light_end = (0.0, 0.55) if cmap.name.endswith("_r") else (0.45, 1.0)  # Blues_r: light at the top
        lines.set_cmap(ListedColormap(cmap(np.linspace(*light_end, cmap.N)), name=f"{cmap.name}_no_white"))
    for axes in [a for a in ax.figure.axes if a is ax or a.get_shared_x_axes().joined(a, ax)]:
        axes.set_facecolor("white")
        low, high = axes.get_ylim()
        if axes.get_yscale() == "log":
            if not 0 < low < high < np.inf:  # limits a log axis cannot show (drawing fails and says so)
                continue
            low, high = np.log10(low), np.log10(high)
            margin = (high - low) * 0.05
            axes.set_ylim(10 ** (low - margin), 10 ** (high + margin))
        else:
            margin = (high - low) * 0.05
            axes.set_ylim(low - margin, high + margin)
        for label in axes.get_yticklabels():  # on a white ground above the lines: "nesterov" was struck through
            label.set(bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 1}, zorder=5)
    names = list(dict.fromkeys(k for t in study.get_trials(deepcopy=False) for k in t.params))
    texts = [label.get_text() for label in ax.get_xticklabels()]
    ax.set_xticklabels([next((n for n in names if n.startswith(t[:-3])), t) if t.endswith("...") else t
                        for t in texts], rotation=330)
    pruned = study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
    diverged = sum(t.user_attrs.get("status") == "diverged" for t in pruned)  # pruned by its loss, not the pruner
    left_out = [f"{n} {what}" for n, what in ((len(pruned) - diverged, "pruned"), (diverged, "diverged")) if n]
    if left_out:  # "14 pruned" counted a diverged trial as pruned
        ax.set_xlabel(f"complete trials only: {' and '.join(left_out)} not drawn")


def importance_quantile(complete: int) -> float:
    """The share of the best trials PED-ANOVA compares with all: Optuna's 10%, or TOP_TRIALS when that is more."""
    return max(0.1, TOP_TRIALS / complete)


def whole_ticks(ax) -> None:
    """Ticks at whole numbers on the x axis (trials, epochs); with one in view, its tick alone (the default two
    made one epoch's axis fall back to 0.945-1.05 in tenths)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def titled(ax, suffix: str) -> None:
    """Add `suffix` to the axes' title wherever it stands (Optuna puts some on the left: a second, centred
    title was drawn over it)."""
    loc = next((loc for loc in ("center", "left", "right") if ax.get_title(loc)), "center")
    # a study name is the user's text: a $ in it is a dollar sign, not TeX math (which a name like 'x$^$' broke;
    # these figures are saved here, where plots.common.literal_text would also keep the log ticks' math from
    # being drawn)
    ax.set_title(ax.get_title(loc) + suffix.replace("$", r"\$"), loc=loc)


def intermediate_values(study, name: str):
    """Each trial's metric after each epoch, coloured by how it ended (Optuna's own plot has a legend entry per
    trial, which ran off the figure past ~25 trials); a trial pruned after its first epoch is a dot."""
    import matplotlib.pyplot as plt

    from fashionmlp.sweep.backend import TrialState

    _, ax = plt.subplots()
    best = _best_number(study)
    kinds = {TrialState.COMPLETE: ("complete", "tab:blue", 0.6), TrialState.PRUNED: ("pruned", "tab:gray", 0.5),
             TrialState.RUNNING: ("running (elsewhere)", "tab:green", 0.6)}
    stopped = ("stopped (failed or interrupted)", "tab:orange", 0.8)
    counts: dict[str, int] = {}
    drawn: set[str] = set()
    # the stopped last, dashed: a retry that continued a stopped trial's run drew the same points over it
    unfinished: dict[str, int] = {}  # trials that ended before their first epoch did: nothing to draw
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.state not in kinds):
        label, color, alpha = kinds.get(t.state, stopped)
        if t.state == TrialState.PRUNED and t.user_attrs.get("status") == "diverged":  # pruned by its loss
            label, color, alpha = "diverged", "tab:purple", 0.7
        if not t.intermediate_values:
            if t.state == TrialState.PRUNED:  # diverged in its first epoch (waiting and failed ones: not drawn)
                unfinished[label] = unfinished.get(label, 0) + 1
            continue
        if t.number == best:  # counted with its kind, drawn on top in red
            counts[label] = counts.get(label, 0) + 1
            continue
        epochs = sorted(t.intermediate_values)
        ax.plot(epochs, [t.intermediate_values[e] for e in epochs], "o--" if label == stopped[0] else "o-",
                color=color, alpha=alpha, markersize=3, linewidth=1,
                label=None if label in drawn else label)  # one legend entry per kind
        drawn.add(label)
        counts[label] = counts.get(label, 0) + 1
    if best is not None and study.trials[best].intermediate_values:
        values = study.trials[best].intermediate_values
        ax.plot(sorted(values), [values[e] for e in sorted(values)], "o-", color="tab:red", markersize=4,
                linewidth=2, label=f"best: trial {best}")
    handles, labels = ax.get_legend_handles_labels()
    labels = [f"{label} ({counts[label]})" if label in counts else label for label in labels]
    ax.legend(handles, labels, fontsize=8)
    ax.set_ylabel(f"{name} after the epoch")
    if unfinished:  # a trial diverged in its first epoch was left out of the counts without a word
        ax.set_xlabel("epoch (not drawn, no epoch finished: "
                      + ", ".join(f"{n} {label}" for label, n in unfinished.items()) + ")")
    ax.set_title("Each trial's metric by epoch")
    ax.grid(alpha=0.3)
    return ax


def _best_number(study) -> int | None:
    try:
        return study.best_trial.number
    except ValueError:  # no complete trial yet
        return None
