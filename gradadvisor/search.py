"""The search: Keras Tuner over rewritten copies of the model, with proof.

The findings decide which dimensions open (a vanishing-gradient finding opens
activations, initializers and normalization; an explosion opens clipping and
the learning rate); Keras Tuner decides what to try; each candidate is built by
:mod:`gradadvisor.surgery` and scored by re-probing it: gradient health from the
rule engine first, held-out loss second.  A diverging candidate gets a large
finite score instead of NaN, so the tuner never stops on it.

The best setup is then confirmed: the original and the recommended model train
the same way (same seed, steps and held-out split), and the setup is
recommended only if it is healthier and reaches a lower held-out loss.

Each trial's measurements are written as a :class:`TrialRecord` into the
trial's folder of the tuner directory, and the ranking reads them back from
there.  A local search and a distributed one (Keras Tuner's chief/worker mode,
see :mod:`gradadvisor.distributed`), whose chief runs no trial itself, thus
rank, confirm and save through the same code.  With several devices visible,
candidates are built and trained under a ``tf.distribute.MirroredStrategy``
(see :mod:`gradadvisor.mirrored`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ._tf import import_keras
from .errors import SurgeryError, UsageError
from .loading import Data, resolve_loss, synthetic_data

#: Score of a candidate whose loss or gradients became non-finite.
DIVERGED_SCORE = 1.0e6
_STATUS_PENALTY = {"healthy": 0.0, "warning": 10.0, "error": 100.0}
OBJECTIVE = "score"

INITIALIZERS = ["keep", "he_normal", "he_uniform", "glorot_uniform", "glorot_normal", "lecun_normal",
                "orthogonal"]
ACTIVATIONS = ["keep", "relu", "leaky_relu", "prelu", "elu", "selu", "gelu", "swish"]
CLIP_THRESHOLDS = [0.5, 1.0, 5.0]
LEARNING_RATE_SCALES = [1.0, 0.3, 0.1, 0.01]


# --------------------------------------------------------------------------
# The search space

@dataclasses.dataclass
class Dimension:
    """One searched choice and the findings that opened it."""

    name: str
    values: list
    opened_by: list
    default: object

    def to_dict(self) -> dict:
        return {"name": self.name, "values": list(self.values), "opened_by": list(self.opened_by),
                "default": self.default}


def search_space(diagnosis, model) -> list:
    """The dimensions to search, from the fixes of the warning and error findings."""
    from .probe import leaf_layers, _is_graph_model

    _, keras = import_keras()
    opened: dict = {}
    for finding in diagnosis.at_least("warning"):
        for fix in finding.fixes:
            opened.setdefault(fix, [])
            if finding.rule not in opened[fix]:
                opened[fix].append(finding.rule)
    layers = [layer for _, layer in leaf_layers(model)] if _is_graph_model(model, keras) else []
    sequence = any(isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional)) for layer in layers)
    categories = set(diagnosis.categories)
    dimensions = []
    if "activation" in opened:
        default = "relu" if categories & {"vanishing_gradients", "saturated_units", "slow_updates"} else "leaky_relu"
        dimensions.append(Dimension("activation", ACTIVATIONS, opened["activation"], default))
    if "initializer" in opened:
        default = "orthogonal" if sequence else "he_normal"
        dimensions.append(Dimension("initializer", INITIALIZERS, opened["initializer"], default))
    if "normalization" in opened:
        values = ["none", "layernorm"] if sequence else ["none", "batchnorm_before", "batchnorm_after"]
        dimensions.append(Dimension("normalization", values, opened["normalization"], "none"))
    if "clipping" in opened:
        dimensions.append(Dimension("clipping", ["none", "global_clipnorm", "clipnorm", "clipvalue"],
                                    opened["clipping"], "global_clipnorm"))
        dimensions.append(Dimension("clip_threshold", CLIP_THRESHOLDS, opened["clipping"], 1.0))
    simple_rnn = any(isinstance(layer, keras.layers.SimpleRNN) for layer in layers)
    if "recurrence" in opened and simple_rnn:
        dimensions.append(Dimension("recurrence", ["none", "irnn"], opened["recurrence"], "irnn"))
    if "learning_rate" in opened:
        default = 0.1 if categories & {"exploding_gradients", "nonfinite", "large_updates"} else 1.0
        dimensions.append(Dimension("learning_rate_scale", LEARNING_RATE_SCALES, opened["learning_rate"], default))
    return dimensions


def expert_starts(dimensions, diagnosis) -> list:
    """Setups worth trying first, from textbook remedies for what was found.

    Keras Tuner's Bayesian optimisation starts from random points; these known
    remedies are evaluated before them so a small budget is not wasted.
    """
    names = {d.name for d in dimensions}
    categories = set(diagnosis.categories)
    starts = [{d.name: d.default for d in dimensions}]
    if {"activation", "initializer"} <= names:
        starts.append({"activation": "selu", "initializer": "lecun_normal"})
    if "normalization" in names:
        norm = next(d for d in dimensions if d.name == "normalization").values[1]
        starts.append({"normalization": norm})
    if "clipping" in names and categories & {"exploding_gradients", "nonfinite"}:
        starts.append({"clipping": "global_clipnorm", "clip_threshold": 1.0, "learning_rate_scale": 0.1})
    if "learning_rate_scale" in names:
        starts.append({"learning_rate_scale": 0.01})
    completed = []
    for start in starts:
        values = {d.name: start.get(d.name, "keep" if "keep" in d.values else d.values[0])
                  for d in dimensions}
        for dimension in dimensions:
            if values[dimension.name] not in dimension.values:
                values[dimension.name] = dimension.default
        if values not in completed:
            completed.append(values)
    return completed


def setup_from_values(values: dict):
    """A :class:`~gradadvisor.surgery.Setup` from hyperparameter values."""
    from .surgery import Setup

    def pick(name):
        value = values.get(name)
        return None if value in (None, "keep", "none") else value

    clipping = pick("clipping")
    return Setup(
        initializer=pick("initializer"), activation=pick("activation"),
        normalization=pick("normalization"), clipping=clipping,
        clip_threshold=float(values["clip_threshold"]) if clipping and "clip_threshold" in values else None,
        learning_rate_scale=float(values.get("learning_rate_scale", 1.0)),
        recurrence=pick("recurrence"))


# --------------------------------------------------------------------------
# Data

def split_data(data: Data | None, model, seed: int, fraction: float = 0.2):
    """``(train, validation)``: a seeded held-out split of the data.

    A ``tf.data.Dataset`` is read into arrays first (at most 4096 samples),
    because every candidate must see exactly the same batches.
    """
    if data is None:
        data = synthetic_data(model, num_samples=1024, seed=seed)
    if data.dataset is not None:
        data = _materialise(data, model)
    n = data.num_samples
    if n < 10:
        raise UsageError(f"The search needs at least 10 samples to hold some out; the data has {n}.")
    order = np.random.default_rng(seed).permutation(n)
    held = max(2, min(int(round(n * fraction)), 2048))
    val_index, train_index = order[:held], order[held:]

    def take(index):
        ys = data.y if isinstance(data.y, list) else [data.y]
        y = [t[index] for t in ys]
        return Data([a[index] for a in data.x], y[0] if len(y) == 1 else y, data.source)

    return take(train_index), take(val_index)


def _materialise(data: Data, model, limit: int = 4096) -> Data:
    xs, ys, count = [], [], 0
    names = [getattr(t, "name", "") for t in model.inputs]
    for element in data.dataset:
        x, y = element[0], element[1]
        if isinstance(x, dict):
            x = [x[name] for name in names]
        x = [np.asarray(a) for a in (x if isinstance(x, (list, tuple)) else [x])]
        xs.append(x)
        ys.append(np.asarray(y))
        count += len(ys[-1])
        if count >= limit:
            break
    x = [np.concatenate([batch[i] for batch in xs])[:limit] for i in range(len(xs[0]))]
    return Data(x, np.concatenate(ys)[:limit], data.source)


def held_out(model, loss_fn, data: Data, kind: str) -> tuple:
    """``(loss, accuracy or None)`` of ``model`` on held-out data, in inference mode."""
    tf, _ = import_keras()
    predictions = []
    for start in range(0, data.num_samples, 512):
        batch = [tf.convert_to_tensor(a[start:start + 512]) for a in data.x]
        predictions.append(model(batch[0] if len(batch) == 1 else batch, training=False))
    if isinstance(predictions[0], (list, tuple)):
        return float("nan"), None
    prediction = tf.concat(predictions, 0)
    loss = float(loss_fn(tf.convert_to_tensor(data.y), prediction))
    predicted = prediction.numpy()
    y = np.asarray(data.y)
    accuracy = None
    if kind == "sparse":
        accuracy = float(np.mean(np.argmax(predicted, -1) == y.reshape(len(y), -1)[:, 0]))
    elif kind == "categorical":
        accuracy = float(np.mean(np.argmax(predicted, -1) == np.argmax(y, -1)))
    elif kind == "binary":
        accuracy = float(np.mean((predicted.reshape(y.shape) > 0.5) == (y > 0.5)))
    return loss, accuracy


# --------------------------------------------------------------------------
# One training-and-measuring run, shared by trials and the confirmation

@dataclasses.dataclass
class RunResult:
    """How one model trained: probe measurements, health and held-out numbers."""

    probe: object
    findings: list
    status: str
    val_loss: float | None
    val_metric: float | None
    seconds: float

    @property
    def score(self) -> float:
        if self.status == "diverged" or self.val_loss is None or not math.isfinite(self.val_loss):
            return DIVERGED_SCORE
        return _STATUS_PENALTY[self.status] + self.val_loss

    def summary(self) -> dict:
        return {"loss": list(self.probe.loss), "val_loss": self.val_loss, "val_metric": self.val_metric,
                "status": self.status, "findings": sorted({f.rule for f in self.findings})}


def train_and_measure(model, train: Data, val: Data, *, steps: int, batch_size: int, seed: int,
                      rules: dict, in_place: bool, loss, kind: str, strategy=None) -> RunResult:
    """Train ``model`` (or a copy) for ``steps`` probe steps, then evaluate it.

    With a ``tf.distribute`` strategy, an in-place ``model`` must have been
    built in its scope; a copy is made in it.
    """
    from .diagnosis import Diagnosis
    from .engine import evaluate
    from .probe import _working_copy, make_loss_function, run_probe

    tf, keras = import_keras()
    started = time.perf_counter()
    with _working_copy(model, keras, in_place, strategy) as (work, _):
        probe = run_probe(work, train, steps=steps, batch_size=min(batch_size, train.num_samples),
                          seed=seed, in_place=True, strategy=strategy)
        findings = evaluate(probe, rules)
        status = Diagnosis(probe=probe, findings=findings).status
        if probe.nonfinite:
            status, val_loss, metric = "diverged", None, None
        else:
            val_loss, metric = held_out(work, make_loss_function(loss, keras), val, kind)
            if not math.isfinite(val_loss):
                status, val_loss = "diverged", None
    return RunResult(probe, findings, status, val_loss, metric, time.perf_counter() - started)


# --------------------------------------------------------------------------
# Trial records: what each trial measured, kept in the tuner directory

RECORD_FILE = "gradadvisor_trial.json"
RECORD_SCHEMA = "gradadvisor.trial/1"


@dataclasses.dataclass
class TrialRecord:
    """One finished trial, as the process that ran it wrote it into its folder.

    Attributes:
        trial: Keras Tuner's trial id.
        values: The hyperparameter values tried.
        score: The objective (lower is better; :data:`DIVERGED_SCORE` for a
            candidate that diverged).
        status: ``healthy``, ``warning``, ``error`` or ``diverged``.
        val_loss, val_metric: Held-out loss and accuracy (None if diverged or
            not a classifier).
        findings: The ids of the rules that fired on the candidate.
        seconds: How long the trial took.
        worker: The Keras Tuner id of the process that ran it (``tuner0`` in a
            local search).
    """

    trial: str
    values: dict
    score: float
    status: str
    val_loss: float | None
    val_metric: float | None
    findings: list
    seconds: float
    worker: str

    @classmethod
    def from_run(cls, trial_id: str, values: dict, result: RunResult, worker: str) -> "TrialRecord":
        return cls(str(trial_id), dict(values), float(result.score), result.status, result.val_loss,
                   result.val_metric, sorted({f.rule for f in result.findings}), float(result.seconds), worker)

    def to_dict(self) -> dict:
        from .probe import _jsonable

        return _jsonable(dict(dataclasses.asdict(self), schema=RECORD_SCHEMA))

    @classmethod
    def from_dict(cls, data: dict) -> "TrialRecord":
        from .probe import _restore_floats

        data = _restore_floats(dict(data))
        data.pop("schema", None)
        return cls(**{field.name: data[field.name] for field in dataclasses.fields(cls)})


def write_record(trial_dir, record: TrialRecord) -> None:
    """Write ``record`` into its trial's folder, atomically (the chief may be reading)."""
    from .files import write_text_atomic

    write_text_atomic(Path(trial_dir) / RECORD_FILE, json.dumps(record.to_dict(), indent=1))


def read_records(project_dir) -> list:
    """Every :class:`TrialRecord` under a Keras Tuner project folder, in trial order."""
    records = []
    for path in Path(project_dir).glob(f"trial_*/{RECORD_FILE}"):
        records.append(TrialRecord.from_dict(json.loads(path.read_text(encoding="utf-8"))))
    return sorted(records, key=lambda r: (len(r.trial), r.trial))


def search_settings(model, train: Data, val: Data, *, dimensions, seed, batch_size, trial_steps, tuner,
                    rules) -> dict:
    """What must be equal in every process of a distributed search for its trials to compare."""
    from .distributed import fingerprint

    def arrays(data):
        return list(data.x) + (data.y if isinstance(data.y, list) else [data.y])

    return {
        "model": f"{model.name}:{fingerprint([v.numpy() for v in model.weights])}",
        "data": fingerprint(arrays(train) + arrays(val)),
        "seed": seed, "batch_size": batch_size, "trial_steps": trial_steps, "tuner": tuner,
        "rules": sorted(rules), "dimensions": [d.to_dict() for d in dimensions],
    }


# --------------------------------------------------------------------------
# Keras Tuner

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
            from .mirrored import scope
            from .surgery import apply_setup

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
        deadline: float | None = None
        on_end: Callable | None = None
        stop_seen: bool = False

        def populate_space(self, trial_id):
            if self.deadline is not None and time.perf_counter() > self.deadline:
                return {"status": "STOPPED"}
            while self.starts:
                values = self.starts.pop(0)
                if not self._duplicate(values):
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
            result = self.runner(candidate, fraction)
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


# --------------------------------------------------------------------------
# The recommendation

@dataclasses.dataclass
class Recommendation:
    """The outcome of a search.

    Attributes:
        recommended: True only when the confirmation run showed the setup is
            healthier and reaches a lower held-out loss than the original.
        reason: One or two sentences saying why (or why not).
        setup: The best setup found (:class:`~gradadvisor.surgery.Setup`).
        dimensions: What was searched and which findings opened each dimension.
        trials: Every trial, ranked by score (lower is better).
        changes: Per-layer changes the setup makes.
        snippet: Python showing how to apply the setup in model-building code.
        confirmation: Original vs recommended, trained the same way.
        fixed_model: The rewritten, freshly initialised, compiled model.
        fixed_model_path: Where it was saved, if asked.
        fixed_status: The diagnosis status of the fixed model.
        budget: The budget and the time used (``search_seconds``: the
            trials alone).
        interrupted: True when the search was stopped by Ctrl-C.
        distributed: None for a local search; for a distributed one the
            process's ``role``, the ``oracle`` address, its ``tuner_id`` and
            the trial ids each worker ran (``trials_by_worker``).
    """

    recommended: bool
    reason: str
    setup: object
    dimensions: list
    trials: list
    changes: list
    snippet: str
    confirmation: dict | None
    fixed_model: object = None
    fixed_model_path: str | None = None
    fixed_status: str | None = None
    budget: dict = dataclasses.field(default_factory=dict)
    interrupted: bool = False
    distributed: dict | None = None

    def to_dict(self) -> dict:
        from .probe import _jsonable

        return _jsonable({
            "recommended": self.recommended, "reason": self.reason,
            "setup": self.setup.to_dict() if self.setup is not None else None,
            "dimensions": [d.to_dict() for d in self.dimensions], "trials": self.trials,
            "changes": self.changes, "snippet": self.snippet, "confirmation": self.confirmation,
            "fixed_model_path": self.fixed_model_path, "fixed_status": self.fixed_status,
            "budget": self.budget, "interrupted": self.interrupted, "distributed": self.distributed,
        })


def recommend(model, data=None, y=None, *, diagnosis=None, seed: int = 0, batch_size: int = 32,
              max_trials: int = 10, trial_steps: int = 60, confirm_steps: int | None = None,
              time_budget: float | None = None, tuner: str = "bayesian", tuner_dir=None,
              save_fixed=None, force: bool = False, rules=None, progress: Callable | None = None,
              steps: int = 30, distributed: str | None = None, oracle_address: str | None = None,
              tuner_id: str | None = None, oracle_timeout: float = 600.0):
    """Search for the setup that trains ``model`` best, and prove it.

    Args:
        model: A Sequential or Functional ``keras.Model`` (or a ``.keras`` path).
        data: A :class:`~gradadvisor.loading.Data`, NumPy ``x`` (with ``y``), a
            ``tf.data.Dataset``, or None for synthetic data.
        diagnosis: The diagnosis to start from; probed here when None.
        seed: Makes the search repeatable.
        max_trials, trial_steps, time_budget: The budget. ``time_budget`` (s)
            stops starting new trials once spent.
        confirm_steps: Steps of the confirmation run (default 2 x trial_steps).
        tuner: ``bayesian`` (default), ``random`` or ``hyperband``.
        tuner_dir: Keep Keras Tuner's files here; default a temporary folder
            that is removed afterwards.  Required, and shared by every
            process, in a distributed search.
        save_fixed: Write the recommended model here (``.keras``), atomically.
        force: Replace ``save_fixed`` if it exists.
        rules: Rules to judge candidates with (default: the built-in rules).
        progress: Called as ``progress(stage, done, total, text)``.
        distributed: None for a search in this process; ``"chief"`` to serve
            Keras Tuner's oracle and, once the workers are done, rank, confirm
            and save as a local search does; ``"worker"`` to run trials for a
            chief (the result then only lists this worker's trials).  Every
            process must be given the same model, data, seed and budget.
        oracle_address: ``HOST:PORT`` where the chief listens and workers
            connect (default: ``KERASTUNER_ORACLE_IP``/``KERASTUNER_ORACLE_PORT``).
        tuner_id: This process's Keras Tuner id (default: ``KERASTUNER_TUNER_ID``,
            else ``chief`` or ``worker-HOST-PID``).
        oracle_timeout: Seconds a worker waits for the chief (and each of its
            answers), and the chief for a first worker.

    Returns:
        A :class:`Recommendation`; ``.fixed_model`` is ready to ``fit``.

    Raises:
        SurgeryError: for a subclassed model, which cannot be rewritten.
        UsageError: bad distributed settings, or a worker whose settings differ
            from its chief's.
        OracleUnreachableError: a worker cannot reach its chief, or the chief
            gets no worker, within ``oracle_timeout``.

    Example:
        >>> rec = gradadvisor.recommend(model, x, y, max_trials=6)
        >>> rec.recommended, rec.setup
        >>> rec.fixed_model.fit(x, y)
    """
    from .api import prepare
    from .distributed import check_can_listen, resolve_cluster
    from .engine import evaluate, load_rules
    from .files import atomic_output, check_output_path
    from .mirrored import resolve_strategy, scope
    from .probe import _is_graph_model, run_probe
    from .diagnosis import Diagnosis
    from .surgery import apply_setup, describe_changes, snippet

    tf, keras = import_keras()
    if tuner not in ("bayesian", "random", "hyperband"):
        raise UsageError(f"The 'tuner' parameter must be bayesian, random or hyperband. Got {tuner!r} instead.")
    cluster = resolve_cluster(distributed, oracle_address, tuner_id, oracle_timeout)
    if cluster is not None and tuner_dir is None:
        raise UsageError(f"A distributed {cluster.role} needs a tuner directory shared by the chief and every "
                         "worker (for example on NFS): pass --tuner-dir DIR (tuner_dir= in Python).")
    if cluster is not None and cluster.role == "chief":
        check_can_listen(cluster)
    model, _, _ = prepare(model)
    if not _is_graph_model(model, keras):
        raise SurgeryError(
            f"The model '{model.name}' is a subclassed model: diagnosis works, but rewriting it needs a "
            "Sequential or Functional model. Apply the suggested fixes in its code instead.")
    if not isinstance(data, Data):
        _, data, _ = prepare(model, data, y)
    if save_fixed and not (cluster is not None and cluster.role == "worker"):
        save_fixed = check_output_path(save_fixed, force=force, suffix=".keras")
    rules = rules if rules is not None else load_rules()
    if diagnosis is None:
        probe = run_probe(model, data, steps=steps, batch_size=batch_size, seed=seed)
        diagnosis = Diagnosis(probe=probe, findings=evaluate(probe, rules))
    confirm_steps = confirm_steps or 2 * trial_steps
    train, val = split_data(data, model, seed)
    loss_choice = resolve_loss(model, train.y if not isinstance(train.y, list) else None)
    kind = loss_choice.kind
    dimensions = search_space(diagnosis, model)
    strategy = resolve_strategy()
    started = time.perf_counter()
    budget = {"max_trials": max_trials, "trial_steps": trial_steps, "confirm_steps": confirm_steps,
              "time_budget": time_budget, "tuner": tuner}
    if not dimensions:
        return Recommendation(False, "Nothing to search: no warning or error finding asks for a fix.",
                              None, [], [], [], "", None, budget=dict(budget, seconds_used=0.0),
                              distributed=cluster.to_dict() if cluster else None)

    def runner(candidate, fraction=1.0):
        keras.utils.set_random_seed(seed)
        return train_and_measure(candidate, train, val, steps=max(2, int(trial_steps * fraction)),
                                 batch_size=batch_size, seed=seed, rules=rules, in_place=True,
                                 loss=loss_choice.loss, kind=kind, strategy=strategy)

    def report_end(oracle):
        if progress:
            scores = [t.score for t in oracle.trials.values() if t.status == "COMPLETED" and t.score is not None]
            text = f"best score so far {min(scores):.4g}" if scores else ""
            progress("search", len(oracle.end_order), max_trials, text)

    def report_worker_trial(trial, tuner_object):
        record = tuner_object.records.get(trial.trial_id)
        if progress and record is not None:
            progress("search", len(tuner_object.records), max_trials,
                     f"trials run here; trial {record.trial} scored {record.score:.4g}")

    hypermodel_class, bayesian, random_oracle, hyperband, tuner_class = _tuner_classes()
    objective = __import__("keras_tuner").Objective(OBJECTIVE, direction="min")
    if tuner == "hyperband":
        oracle = hyperband(objective=objective, max_epochs=3, factor=3, hyperband_iterations=1, seed=seed,
                           max_consecutive_failed_trials=max_trials + 1)
    else:
        oracle_class = bayesian if tuner == "bayesian" else random_oracle
        # Unbuildable candidates fail; they must not end the search early.
        oracle = oracle_class(objective=objective, max_trials=max_trials, seed=seed,
                              max_consecutive_failed_trials=max_trials + 1)
        oracle.starts = expert_starts(dimensions, diagnosis)
    oracle.deadline = None if time_budget is None else started + time_budget
    oracle.on_end = report_end
    hypermodel = hypermodel_class(model, dimensions, strategy)
    owned = tuner_dir is None
    directory = tempfile.mkdtemp(prefix="gradadvisor-tuner-") if owned else str(tuner_dir)
    role = cluster.role if cluster else None
    interrupted = False
    try:
        with _search_environment(cluster, role):
            # A worker must not wipe the folder its chief and the other workers share.
            search = tuner_class(
                oracle=oracle, hypermodel=hypermodel, directory=directory, project_name="search",
                overwrite=role != "worker", runner=runner,
                on_trial=report_worker_trial if role == "worker" else None)
            if tuner == "hyperband":
                oracle.max_trials = max_trials
            settings = None
            if cluster is not None:
                settings = search_settings(model, train, val, dimensions=dimensions, seed=seed,
                                           batch_size=batch_size, trial_steps=trial_steps, tuner=tuner,
                                           rules=rules)
            searched = time.perf_counter()
            try:
                _run_search(search, oracle, cluster, settings, progress)
            except KeyboardInterrupt:
                interrupted = True
            budget["search_seconds"] = round(time.perf_counter() - searched, 2)
        records = read_records(search.project_dir) if role != "worker" else list(search.records.values())
    finally:
        if owned:
            shutil.rmtree(directory, ignore_errors=True)
    ranked = sorted(records, key=lambda record: record.score)
    trials = [{
        "trial": record.trial, "rank": rank, "setup": setup_from_values(record.values).to_dict(),
        "values": {k: v for k, v in record.values.items() if not k.startswith("tuner/")},
        "score": record.score, "status": record.status, "val_loss": record.val_loss,
        "findings": list(record.findings), "seconds": round(record.seconds, 2), "worker": record.worker,
    } for rank, record in enumerate(ranked, start=1)]
    budget["seconds_used"] = round(time.perf_counter() - started, 2)
    shared = None
    if cluster is not None:
        by_worker: dict = {}
        for record in records:
            by_worker.setdefault(record.worker, []).append(record.trial)
        shared = dict(cluster.to_dict(), trials_by_worker=by_worker)
    if role == "worker":
        done = ", ".join(record.trial for record in records) or "none"
        return Recommendation(
            False, f"Worker {cluster.tuner_id} ran trial(s) {done} for the chief at {cluster.address}; the "
            "chief ranks every trial and confirms the best.", None, dimensions, trials, [], "", None,
            budget=budget, interrupted=interrupted, distributed=shared)
    if not ranked:
        return Recommendation(False, "The search was stopped before any trial finished.", None,
                              dimensions, [], [], "", None, budget=budget, interrupted=interrupted,
                              distributed=shared)
    best = ranked[0]
    setup = setup_from_values(best.values)
    changes = describe_changes(model, setup)
    if interrupted:
        return Recommendation(False, f"The search was interrupted after {len(trials)} trial(s); the best so "
                              f"far is {setup.describe()} ({best.status}, held-out loss "
                              f"{best.val_loss if best.val_loss is None else round(best.val_loss, 4)}), "
                              "not confirmed by a comparison run.", setup, dimensions, trials, changes,
                              snippet(setup, model=model), None, budget=budget, interrupted=True,
                              distributed=shared)
    # Confirmation: the original and the recommended setup, trained the same way.
    if progress:
        progress("confirm", 0, 2, "")
    keras.utils.set_random_seed(seed)
    original = train_and_measure(model, train, val, steps=confirm_steps, batch_size=batch_size, seed=seed,
                                 rules=rules, in_place=False, loss=loss_choice.loss, kind=kind,
                                 strategy=strategy)
    if progress:
        progress("confirm", 1, 2, "")
    keras.utils.set_random_seed(seed)
    with scope(strategy):
        candidate = apply_setup(model, setup)
    # A second build of the same setup, given the candidate's initial weights,
    # is the untrained fixed model (clone_model would recompile from config and
    # fail on unregistered custom losses).  It is built outside any strategy
    # scope: it is the user's to train however they like.
    fixed_copy = apply_setup(model, setup)
    for target, source in zip(fixed_copy.weights, candidate.weights):
        target.assign(source)
    recommended_run = train_and_measure(candidate, train, val, steps=confirm_steps, batch_size=batch_size,
                                        seed=seed, rules=rules, in_place=True, loss=loss_choice.loss, kind=kind,
                                        strategy=strategy)
    if progress:
        progress("confirm", 2, 2, "")
    better = (recommended_run.val_loss is not None and
              (original.val_loss is None or recommended_run.val_loss < original.val_loss))
    # A fix must remove problems: strictly healthier, or healthy like a healthy original.
    healthier = (_STATUS_RANK[recommended_run.status] < _STATUS_RANK[original.status]
                 or recommended_run.status == original.status == "healthy")
    fixed_probe = run_probe(fixed_copy, train, steps=diagnosis.probe.num_steps,
                            batch_size=min(batch_size, train.num_samples), seed=seed)
    fixed_status = Diagnosis(probe=fixed_probe, findings=evaluate(fixed_probe, rules)).status
    recommended = better and healthier and recommended_run.status != "diverged"
    confirmation = {
        "steps": confirm_steps, "seed": seed, "metric_name": None if kind == "regression" else "accuracy",
        "original": original.summary(), "recommended": recommended_run.summary(), "improved": bool(better),
    }
    reason = _reason(recommended, setup, original, recommended_run, confirm_steps, fixed_status)
    path = None
    if recommended and save_fixed:
        with atomic_output(save_fixed) as tmp:
            fixed_copy.save(tmp)
        path = str(save_fixed)
    budget["seconds_used"] = round(time.perf_counter() - started, 2)
    return Recommendation(recommended, reason, setup, dimensions, trials, changes, snippet(setup, model=model),
                          confirmation, fixed_model=fixed_copy if recommended else None,
                          fixed_model_path=path, fixed_status=fixed_status, budget=budget,
                          distributed=shared)


@contextlib.contextmanager
def _search_environment(cluster, role):
    """Keras Tuner's distributed variables for ``cluster`` (none for a local
    search) and its output silenced, for building the tuner and searching."""
    import os
    import warnings

    from .distributed import ENV_ORACLE_IP, tuner_environment

    if role is None and os.environ.get(ENV_ORACLE_IP):
        warnings.warn(f"{ENV_ORACLE_IP} is set, but the search was not asked to be distributed, so it runs in "
                      "this process. Pass --distributed chief or worker (distributed= in Python) to join a "
                      "distributed search.", stacklevel=4)
    with tuner_environment(cluster), _quiet_tuner():
        yield


def _run_search(search, oracle, cluster, settings, progress) -> None:
    """Run the tuner's search in this process's part: local, chief or worker."""
    from .distributed import check_settings, serve, wait_for_oracle, work, write_settings

    if cluster is None:
        search.search(verbose=0)
    elif cluster.role == "chief":
        write_settings(search.project_dir, settings)
        serve(lambda: search.search(verbose=0), oracle, cluster, progress)
    else:
        wait_for_oracle(cluster)
        check_settings(search.project_dir, settings, cluster)
        work(lambda: search.search(verbose=0), cluster)


_STATUS_RANK = {"healthy": 0, "warning": 1, "error": 2, "diverged": 3}


def _reason(recommended, setup, original, candidate, steps, fixed_status) -> str:
    def loss_text(run):
        return "diverged" if run.val_loss is None else f"{run.val_loss:.4g}"

    comparison = (f"after {steps} identical training steps the held-out loss is {loss_text(candidate)} "
                  f"with it vs {loss_text(original)} for the original ({candidate.status} vs "
                  f"{original.status})")
    if recommended:
        return f"Recommended: {setup.describe()}; {comparison}."
    return f"Not recommended: the best setup found ({setup.describe()}) was not better in the confirmation run: {comparison}."


@contextlib.contextmanager
def _quiet_tuner():
    """Keras Tuner prints trial summaries to stdout; the CLI's stdout is for results."""
    import io
    import logging

    logger = logging.getLogger("keras_tuner")
    level = logger.level
    logger.setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            yield
        finally:
            logger.setLevel(level)
