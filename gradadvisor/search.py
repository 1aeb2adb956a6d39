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
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import shutil
import tempfile
import time
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
        learning_rate_scale=float(values.get("learning_rate_scale", 1.0)))


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
                      rules: dict, in_place: bool, loss, kind: str) -> RunResult:
    """Train ``model`` (or a copy) for ``steps`` probe steps, then evaluate it."""
    from .diagnosis import Diagnosis
    from .engine import evaluate
    from .probe import _working_copy, make_loss_function, run_probe

    tf, keras = import_keras()
    started = time.perf_counter()
    with _working_copy(model, keras, in_place) as (work, _):
        probe = run_probe(work, train, steps=steps, batch_size=min(batch_size, train.num_samples),
                          seed=seed, in_place=True)
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
# Keras Tuner

def _tuner_classes():
    import keras_tuner

    class SetupHyperModel(keras_tuner.HyperModel):
        """Builds the rewritten model a set of hyperparameters describes."""

        def __init__(self, model, dimensions):
            super().__init__(name="gradadvisor_setup")
            self.model, self.dimensions = model, dimensions

        def declare(self, hp):
            for dimension in self.dimensions:
                hp.Choice(dimension.name, dimension.values, default=dimension.default)

        def build(self, hp):
            from .surgery import apply_setup

            self.declare(hp)
            try:
                return apply_setup(self.model, setup_from_values(hp.values))
            except SurgeryError as exc:
                raise keras_tuner.errors.FailedTrialError(str(exc)) from None

    class StartsMixin:
        """Serve the expert starting setups before the oracle's own choices."""

        def populate_space(self, trial_id):
            while self.starts:
                values = self.starts.pop(0)
                if not self._duplicate(values):
                    return {"status": "RUNNING", "values": values}
            return super().populate_space(trial_id)

    class Bayesian(StartsMixin, keras_tuner.oracles.BayesianOptimizationOracle):
        pass

    class Random(StartsMixin, keras_tuner.oracles.RandomSearchOracle):
        pass

    class Hyperband(keras_tuner.oracles.HyperbandOracle):
        starts: list = []

    class ProbeTuner(keras_tuner.Tuner):
        """Runs each trial by training the candidate and re-probing it."""

        def __init__(self, *args, runner=None, deadline=None, on_trial=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.runner, self.deadline, self.on_trial = runner, deadline, on_trial
            self.records = {}

        def pre_create_trial(self):
            # The time budget: once spent, tell the oracle it has run its last trial.
            if self.deadline is not None and time.perf_counter() > self.deadline:
                self.oracle.max_trials = len(self.oracle.trials)

        def run_trial(self, trial, *args, **kwargs):
            hp = trial.hyperparameters
            candidate = self.hypermodel.build(hp)
            fraction = 1.0
            if "tuner/epochs" in hp.values:
                fraction = hp.values["tuner/epochs"] / max(self.oracle.max_epochs, 1)
            result = self.runner(candidate, fraction)
            self.records[trial.trial_id] = (dict(hp.values), result)
            return {OBJECTIVE: float(result.score)}

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
        budget: The budget and the time used.
        interrupted: True when the search was stopped by Ctrl-C.
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

    def to_dict(self) -> dict:
        from .probe import _jsonable

        return _jsonable({
            "recommended": self.recommended, "reason": self.reason,
            "setup": self.setup.to_dict() if self.setup is not None else None,
            "dimensions": [d.to_dict() for d in self.dimensions], "trials": self.trials,
            "changes": self.changes, "snippet": self.snippet, "confirmation": self.confirmation,
            "fixed_model_path": self.fixed_model_path, "fixed_status": self.fixed_status,
            "budget": self.budget, "interrupted": self.interrupted,
        })


def recommend(model, data=None, y=None, *, diagnosis=None, seed: int = 0, batch_size: int = 32,
              max_trials: int = 10, trial_steps: int = 60, confirm_steps: int | None = None,
              time_budget: float | None = None, tuner: str = "bayesian", tuner_dir=None,
              save_fixed=None, force: bool = False, rules=None, progress: Callable | None = None,
              steps: int = 30):
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
            that is removed afterwards.
        save_fixed: Write the recommended model here (``.keras``), atomically.
        force: Replace ``save_fixed`` if it exists.
        rules: Rules to judge candidates with (default: the built-in rules).
        progress: Called as ``progress(stage, done, total, text)``.

    Returns:
        A :class:`Recommendation`; ``.fixed_model`` is ready to ``fit``.

    Raises:
        SurgeryError: for a subclassed model, which cannot be rewritten.

    Example:
        >>> rec = gradadvisor.recommend(model, x, y, max_trials=6)
        >>> rec.recommended, rec.setup
        >>> rec.fixed_model.fit(x, y)
    """
    from .api import prepare
    from .engine import evaluate, load_rules
    from .files import atomic_output, check_output_path
    from .probe import _is_graph_model, run_probe
    from .diagnosis import Diagnosis
    from .surgery import apply_setup, describe_changes, snippet

    tf, keras = import_keras()
    if tuner not in ("bayesian", "random", "hyperband"):
        raise UsageError(f"The 'tuner' parameter must be bayesian, random or hyperband. Got {tuner!r} instead.")
    model, _, _ = prepare(model)
    if not _is_graph_model(model, keras):
        raise SurgeryError(
            f"The model '{model.name}' is a subclassed model: diagnosis works, but rewriting it needs a "
            "Sequential or Functional model. Apply the suggested fixes in its code instead.")
    if not isinstance(data, Data):
        _, data, _ = prepare(model, data, y)
    if save_fixed:
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
    started = time.perf_counter()
    budget = {"max_trials": max_trials, "trial_steps": trial_steps, "confirm_steps": confirm_steps,
              "time_budget": time_budget, "tuner": tuner}
    if not dimensions:
        return Recommendation(False, "Nothing to search: no warning or error finding asks for a fix.",
                              None, [], [], [], "", None, budget=dict(budget, seconds_used=0.0))

    def runner(candidate, fraction=1.0):
        keras.utils.set_random_seed(seed)
        return train_and_measure(candidate, train, val, steps=max(2, int(trial_steps * fraction)),
                                 batch_size=batch_size, seed=seed, rules=rules, in_place=True,
                                 loss=loss_choice.loss, kind=kind)

    def report_trial(trial, tuner_object):
        if progress:
            scores = [r.score for _, r in tuner_object.records.values()]
            best = min(scores) if scores else None
            text = f"best score so far {best:.4g}" if best is not None else ""
            progress("search", len(tuner_object.records), max_trials, text)

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
    hypermodel = hypermodel_class(model, dimensions)
    owned = tuner_dir is None
    directory = tempfile.mkdtemp(prefix="gradadvisor-tuner-") if owned else str(tuner_dir)
    interrupted = False
    try:
        search = tuner_class(
            oracle=oracle, hypermodel=hypermodel, directory=directory, project_name="search",
            overwrite=True, runner=runner,
            deadline=None if time_budget is None else started + time_budget, on_trial=report_trial)
        if tuner == "hyperband":
            oracle.max_trials = max_trials
        with _quiet_tuner():
            try:
                search.search(verbose=0)
            except KeyboardInterrupt:
                interrupted = True
        records = search.records
    finally:
        if owned:
            shutil.rmtree(directory, ignore_errors=True)
    ranked = sorted(records.items(), key=lambda item: item[1][1].score)
    trials = []
    for rank, (trial_id, (values, result)) in enumerate(ranked, start=1):
        trials.append({
            "trial": trial_id, "rank": rank, "setup": setup_from_values(values).to_dict(),
            "values": {k: v for k, v in values.items() if not k.startswith("tuner/")},
            "score": result.score, "status": result.status, "val_loss": result.val_loss,
            "findings": sorted({f.rule for f in result.findings}), "seconds": round(result.seconds, 2)})
    budget["seconds_used"] = round(time.perf_counter() - started, 2)
    if not ranked:
        return Recommendation(False, "The search was stopped before any trial finished.", None,
                              dimensions, [], [], "", None, budget=budget, interrupted=interrupted)
    best_values, best_result = ranked[0][1]
    setup = setup_from_values(best_values)
    changes = describe_changes(model, setup)
    if interrupted:
        return Recommendation(False, f"The search was interrupted after {len(trials)} trial(s); the best so "
                              f"far is {setup.describe()} ({best_result.status}, held-out loss "
                              f"{best_result.val_loss if best_result.val_loss is None else round(best_result.val_loss, 4)}), "
                              "not confirmed by a comparison run.", setup, dimensions, trials, changes,
                              snippet(setup, model=model), None, budget=budget, interrupted=True)
    # Confirmation: the original and the recommended setup, trained the same way.
    if progress:
        progress("confirm", 0, 2, "")
    keras.utils.set_random_seed(seed)
    original = train_and_measure(model, train, val, steps=confirm_steps, batch_size=batch_size, seed=seed,
                                 rules=rules, in_place=False, loss=loss_choice.loss, kind=kind)
    if progress:
        progress("confirm", 1, 2, "")
    keras.utils.set_random_seed(seed)
    candidate = apply_setup(model, setup)
    # A second build of the same setup, given the candidate's initial weights,
    # is the untrained fixed model (clone_model would recompile from config and
    # fail on unregistered custom losses).
    fixed_copy = apply_setup(model, setup)
    for target, source in zip(fixed_copy.weights, candidate.weights):
        target.assign(source)
    recommended_run = train_and_measure(candidate, train, val, steps=confirm_steps, batch_size=batch_size,
                                        seed=seed, rules=rules, in_place=True, loss=loss_choice.loss, kind=kind)
    if progress:
        progress("confirm", 2, 2, "")
    better = (recommended_run.val_loss is not None and
              (original.val_loss is None or recommended_run.val_loss < original.val_loss))
    healthier = _STATUS_RANK[recommended_run.status] <= _STATUS_RANK[original.status]
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
                          fixed_model_path=path, fixed_status=fixed_status, budget=budget)


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
