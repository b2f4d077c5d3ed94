"""Hyperparameter search: a thin layer over Optuna.

A sweep config is a training config plus a `sweep:` section (see configs/sweep_mlp.yaml). The keys of its
`space` are the dotted keys `--set` accepts; a trial is the base config with the trial's values, trained by
`run.train` into an ordinary run folder and scored on the validation split. Storage, samplers, pruners, the
worker protocol and the figures are Optuna's; what is ours is the mapping from YAML to trials, the run
folders and the report.

spec.py: the SweepSpec; space.py: reading and checking a sweep config; backend.py: Optuna, imported there
only; storage.py: journal and database storages, dead workers; heartbeats.py: a database's heartbeats and
stale trials; workers.py: the trials' workers; report.py:
tables and files; run.py: run_sweep.
"""

from fashionmlp.sweep.backend import require_optuna
from fashionmlp.sweep.report import best_line, finished_text, table_rows
from fashionmlp.sweep.run import SweepResult, default_study_name, run_sweep
from fashionmlp.sweep.space import load_sweep, load_sweep_file, trial_config
from fashionmlp.sweep.spec import DEFAULT_VAL_SIZE, Param, SweepSpec

__all__ = ["DEFAULT_VAL_SIZE", "Param", "SweepResult", "SweepSpec", "best_line", "default_study_name",
           "finished_text", "load_sweep", "load_sweep_file", "require_optuna", "run_sweep", "table_rows",
           "trial_config"]
