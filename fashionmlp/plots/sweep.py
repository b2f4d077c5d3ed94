"""Optuna's own figures of a study (optimization history, intermediate values, parallel coordinates, parameter
importances), drawn with matplotlib where there are enough trials, titled and labelled for this tool."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from fashionmlp.sweep.backend import TrialState, optuna

if TYPE_CHECKING:
    from fashionmlp.sweep.spec import SweepSpec


def sweep_figures(study, spec: SweepSpec, folder: Path) -> list[str]:
    """Optuna's matplotlib figures, where there are enough trials to draw them; returns the file names."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    vis = optuna.visualization.matplotlib

    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    reported = any(t.intermediate_values for t in study.get_trials(deepcopy=False))
    name = spec.metric
    plots = []  # (file, draw, x label or None); Optuna's plots show complete trials, except the epoch curves
    if complete >= 1:
        plots.append(("optimization_history.png", lambda: vis.plot_optimization_history(study, target_name=name),
                      "trial"))
    if reported:  # every trial's metric per epoch: pruned ones stop early
        plots.append(("intermediate_values.png", lambda: vis.plot_intermediate_values(study), "epoch"))
    if complete >= 2:
        plots.append(("parallel_coordinate.png", lambda: vis.plot_parallel_coordinate(study, target_name=name),
                      None))
    if complete >= 5 and len(spec.params) >= 2:  # fewer: the importances are noise
        plots.append(("param_importances.png", lambda: vis.plot_param_importances(study, target_name=name), None))
    made = []
    for file, draw, xlabel in plots:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            ax = draw()
        if xlabel is not None:  # trials and epochs are whole numbers
            ax.set_xlabel(xlabel)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if file == "intermediate_values.png":
            ax.set_ylabel(f"{name} after the epoch")
        ax.set_title(f"{ax.get_title()}: study {study.study_name}")
        fig = ax.figure
        fig.set_size_inches(9, 5)
        fig.tight_layout()
        fig.savefig(folder / file, dpi=110)
        plt.close(fig)
        made.append(file)
    return made
