"""Optuna's own figures of a study (optimization history, intermediate values, parallel coordinates, parameter
importances), drawn with matplotlib where there are enough trials, titled and labelled for this tool."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from fashionmlp.plots.common import literal_text

if TYPE_CHECKING:
    from fashionmlp.sweep.spec import SweepSpec


@literal_text
def sweep_figures(study, spec: SweepSpec, folder: Path) -> tuple[list[str], list[str]]:
    """Optuna's matplotlib figures, where there are enough trials to draw them; returns the file names, and
    why any could not be drawn (values a log axis cannot show, such as an lr range near 1e-300)."""
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
    if complete >= 5 and len(spec.params) >= 2:  # fewer: the importances are noise
        plots.append(("param_importances.png", lambda: vis.plot_param_importances(study, target_name=name), None))
    made, failed = [], []
    for file, draw, xlabel in plots:
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
    if xlabel is not None:  # trials and epochs are whole numbers
        ax.set_xlabel(xlabel)
        whole_ticks(ax)
    if file == "optimization_history.png" and complete < len(study.get_trials(deepcopy=False)):
        ax.set_xlabel("trial (complete trials only: pruned, failed and waiting ones are not drawn)")
    if file == "parallel_coordinate.png":
        _no_white_lines(ax)
    titled(ax, f": study {study.study_name}")
    fig = ax.figure
    fig.set_size_inches(9, 5)
    fig.tight_layout()
    fig.savefig(folder / file, dpi=110)
    plt.close(fig)
    return file


def _no_white_lines(ax) -> None:
    """Optuna colours each trial's line from Blues' white end to its dark end: the worst trial was drawn white,
    invisible on the background. The lightest quarter of the colour map is cut off (the colour bar follows)."""
    import numpy as np
    from matplotlib.colors import ListedColormap

    for lines in ax.collections:
        cmap = lines.get_cmap()
        light_end = (0.0, 0.75) if cmap.name.endswith("_r") else (0.25, 1.0)  # Blues_r: light at the top
        lines.set_cmap(ListedColormap(cmap(np.linspace(*light_end, cmap.N)), name=f"{cmap.name}_no_white"))


def whole_ticks(ax) -> None:
    """Ticks at whole numbers on the x axis (trials, epochs); with one in view, its tick alone (the default two
    made one epoch's axis fall back to 0.945-1.05 in tenths)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def titled(ax, suffix: str) -> None:
    """Add `suffix` to the axes' title wherever it stands (Optuna puts some on the left: a second, centred
    title was drawn over it)."""
    loc = next((loc for loc in ("center", "left", "right") if ax.get_title(loc)), "center")
    ax.set_title(ax.get_title(loc) + suffix, loc=loc)


def intermediate_values(study, name: str):
    """Each trial's metric after each epoch, coloured by how it ended (Optuna's own plot has a legend entry per
    trial, which ran off the figure past ~25 trials); a trial pruned after its first epoch is a dot."""
    import matplotlib.pyplot as plt

    from fashionmlp.sweep.backend import TrialState

    _, ax = plt.subplots()
    best = _best_number(study)
    kinds = {TrialState.COMPLETE: ("complete", "tab:blue", 0.6), TrialState.PRUNED: ("pruned", "tab:gray", 0.5),
             TrialState.RUNNING: ("running (elsewhere)", "tab:green", 0.6)}
    counts: dict[str, int] = {}
    drawn: set[str] = set()
    for t in study.get_trials(deepcopy=False):
        if not t.intermediate_values:
            continue
        label, color, alpha = kinds.get(t.state, ("stopped (failed or interrupted)", "tab:orange", 0.6))
        if t.number == best:  # counted with its kind, drawn on top in red
            counts[label] = counts.get(label, 0) + 1
            continue
        epochs = sorted(t.intermediate_values)
        ax.plot(epochs, [t.intermediate_values[e] for e in epochs], "o-", color=color, alpha=alpha, markersize=3,
                linewidth=1, label=None if label in drawn else label)  # one legend entry per kind
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
    ax.set_title("Each trial's metric by epoch")
    ax.grid(alpha=0.3)
    return ax


def _best_number(study) -> int | None:
    try:
        return study.best_trial.number
    except ValueError:  # no complete trial yet
        return None
