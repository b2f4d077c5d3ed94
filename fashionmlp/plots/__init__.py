"""Every figure the tool draws, as pure functions: numbers in, matplotlib Figure out (no pyplot, so no global
backend state). run.py: a run's loss curve, confusion matrix and prediction grid; study.py: the optimizer
study; model.py: the pictures of a trained model; lrfind.py: the range test; sweep.py: Optuna's figures."""

from fashionmlp.plots.common import percent, plural, smooth
from fashionmlp.plots.run import confusion_matrix, loss_curve, prediction_grid
from fashionmlp.plots.study import comparison, seed_spread

__all__ = ["comparison", "confusion_matrix", "loss_curve", "percent", "plural", "prediction_grid", "seed_spread",
           "smooth"]
