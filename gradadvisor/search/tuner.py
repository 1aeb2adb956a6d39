"""Keras Tuner: the hypermodel builds a candidate, the oracle decides what to try, the tuner runs it."""

from __future__ import annotations

import time
from typing import Callable

from .. import _compat
from ..errors import SurgeryError
from .records import TrialRecord, write_record
from .space import setup_from_values

OBJECTIVE = "score"
PROJECT_NAME = "search"
"""The folder Keras Tuner keeps its files in, inside the tuner directory."""


def _tuner_classes():
    import keras_tuner

    class SetupHyperModel(keras_tuner.HyperModel):
        """Builds the rewritten model a set of hyperparameters describes."""

        def __init__(self, model, dimensions, strategy=None):
            super().__init__(name="gradadvisor_setup")
            self.model, self.dimensions, self.strategy = model, dimensions, strategy

        def declare(self, hp):
            for dimension in self.dimensions:
                hp.Choice(dimension.name, dimension.values, default=dimension.default)

        def build(self, hp):
            from ..probe.mirrored import scope
            from ..surgery import apply_setup

            self.declare(hp)
            try:
                with scope(self.strategy):
                    return apply_setup(self.model, setup_from_values(hp.values))
            except SurgeryError as exc:
                raise keras_tuner.errors.FailedTrialError(str(exc)) from None

    class SearchOracle:
        """The oracle's additions, wherever it runs (a local search, or the chief).

        Serves the expert starting setups before its own choices, stops
        handing out trials once the time budget is spent, reports progress as
        trials end, and notes when it first told a tuner to stop.
        """

        starts: list = []
        #: When to stop starting trials, read on :attr:`clock`.
        deadline: float | None = None
        #: The clock of the deadline: wall time, or this process's CPU time
        #: for a budget sized from measured CPU step times.
        clock: Callable = time.perf_counter
        #: Trials handed out before the deadline may stop the search.
        min_trials: int = 0
        on_end: Callable | None = None
        stop_seen: bool = False
        #: Set once a trial learned clearly with a healthy probe, when the budget allows
        #: stopping there: no new trial is started after it.
        satisfied: bool = False

        def populate_space(self, trial_id):
            if self.satisfied:
                return {"status": "STOPPED"}
            if (self.deadline is not None and self.clock() > self.deadline
                    and len(self.trials) >= self.min_trials):
                return {"status": "STOPPED"}
            while self.starts:
                values = self.starts.pop(0)
                if not _compat.oracle_has_tried(self, values):
                    return {"status": "RUNNING", "values": values}
            return super().populate_space(trial_id)

        # Synchronized like the methods they extend: a chief's oracle answers
        # workers from a gRPC thread while the main thread watches it.
        @keras_tuner.synchronized
        def create_trial(self, tuner_id):
            trial = super().create_trial(tuner_id)
            if trial.status == "STOPPED":
                self.stop_seen = True
            return trial

        @keras_tuner.synchronized
        def end_trial(self, trial):
            super().end_trial(trial)
            if self.on_end:
                self.on_end(self)

    class Bayesian(SearchOracle, keras_tuner.oracles.BayesianOptimizationOracle):
        pass

    class Random(SearchOracle, keras_tuner.oracles.RandomSearchOracle):
        pass

    class Hyperband(SearchOracle, keras_tuner.oracles.HyperbandOracle):
        pass

    class ProbeTuner(keras_tuner.Tuner):
        """Runs each trial by training the candidate and re-probing it.

        Each trial's :class:`TrialRecord` goes into the trial's folder (and
        into ``records``, for this process's own progress and summary).
        """

        def __init__(self, oracle, *args, runner=None, on_trial=None, **kwargs):
            # A worker's oracle becomes a gRPC client below, which only forwards
            # a few attributes; Hyperband's epoch budget is read here.
            self.max_epochs = max(getattr(oracle, "max_epochs", 1) or 1, 1)
            super().__init__(oracle, *args, **kwargs)
            self.runner, self.on_trial = runner, on_trial
            self.records = {}

        def run_trial(self, trial, *args, **kwargs):
            hp = trial.hyperparameters
            candidate = self.hypermodel.build(hp)
            fraction = 1.0
            if "tuner/epochs" in hp.values:
                fraction = hp.values["tuner/epochs"] / self.max_epochs
            result = self.runner(candidate, fraction, dict(hp.values))
            record = TrialRecord.from_run(trial.trial_id, hp.values, result, self.tuner_id)
            write_record(self.get_trial_dir(trial.trial_id), record)
            self.records[trial.trial_id] = record
            return {OBJECTIVE: record.score}

        def on_trial_end(self, trial):
            super().on_trial_end(trial)
            if self.on_trial:
                self.on_trial(trial, self)

        def save_model(self, trial_id, model, step=0):
            return None

        def load_model(self, trial):
            return None

    return SetupHyperModel, Bayesian, Random, Hyperband, ProbeTuner
