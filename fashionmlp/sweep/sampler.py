"""The sweep's sampler: each trial's random draws come from the sweep's seed and the trial's number.

The storage gives every trial its own number, so no two trials draw alike, whichever process or machine asks
for them and however many start at once (a sampler seeded per process drew the same values in two commands
started together on one study); with one worker, a fresh sweep is reproducible.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fashionmlp.sweep.backend import optuna
from fashionmlp.sweep.spec import SweepSpec


class PerTrialSeed(optuna.samplers.BaseSampler):
    """Optuna's sampler of the spec, made afresh for each trial with the seed (sweep seed, trial number): random
    draws for "random" and "grid" (whose points the study hands out; the draws only fill a trial the grid has
    no point for), TPE for "tpe", which, asked for several trials at once, pretends the running ones ended badly
    (constant liar) so as not to ask for the same region twice. The samplers keep no state between trials but
    their random generator: TPE reads the trials so far from the study at each draw."""

    def __init__(self, spec: SweepSpec, population: int = 1):
        self.spec, self.population = spec, population
        self.by_trial: dict[int, optuna.samplers.BaseSampler] = {}

    def _of(self, trial) -> optuna.samplers.BaseSampler:
        if trial.number not in self.by_trial:
            seed = int(np.random.SeedSequence([self.spec.seed, trial.number]).generate_state(1)[0])
            if self.spec.sampler in ("random", "grid"):
                self.by_trial[trial.number] = optuna.samplers.RandomSampler(seed=seed)
            else:
                self.by_trial[trial.number] = optuna.samplers.TPESampler(
                    seed=seed, n_startup_trials=self.spec.sampler_startup_trials, constant_liar=self.population > 1)
        return self.by_trial[trial.number]

    def before_trial(self, study, trial) -> None:
        self._of(trial).before_trial(study, trial)

    def infer_relative_search_space(self, study, trial) -> dict[str, Any]:
        return self._of(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space) -> dict[str, Any]:
        return self._of(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name: str, param_distribution) -> Any:
        return self._of(trial).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._of(trial).after_trial(study, trial, state, values)
        self.by_trial.pop(trial.number, None)

    def reseed_rng(self) -> None:  # Optuna calls it in the processes of Study.optimize(n_jobs > 1): not used here
        for sampler in self.by_trial.values():
            sampler.reseed_rng()
