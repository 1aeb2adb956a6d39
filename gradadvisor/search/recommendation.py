"""The recommendation: run the search within its budget, rank the trials, confirm the best setup."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

from .._tf import import_keras
from ..errors import SurgeryError, UsageError
from ..loading import Data, resolve_loss
from .data import split_data
from .processes import _run_search, _search_environment, search_settings
from .records import read_records
from .run import train_and_measure
from .space import expert_starts, search_space, setup_from_values
from .tuner import OBJECTIVE, PROJECT_NAME, _tuner_classes


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
        from ..probe import _jsonable

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
    from ..loading.prepare import prepare
    from .distributed import check_can_listen, resolve_cluster
    from ..analysis.engine import evaluate, load_rules
    from ..files import atomic_output, check_output_path, check_tuner_project, mark_tuner_project
    from ..probe.mirrored import resolve_strategy, scope
    from ..probe import _is_graph_model, run_probe
    from ..analysis.diagnosis import Diagnosis
    from ..surgery import apply_setup, describe_changes, snippet

    tf, keras = import_keras()
    if tuner not in ("bayesian", "random", "hyperband"):
        raise UsageError(f"The 'tuner' parameter must be bayesian, random or hyperband. Got {tuner!r} instead.")
    cluster = resolve_cluster(distributed, oracle_address, tuner_id, oracle_timeout)
    if cluster is not None and tuner_dir is None:
        raise UsageError(f"A distributed {cluster.role} needs a tuner directory shared by the chief and every "
                         "worker (for example on NFS): pass --tuner-dir DIR (tuner_dir= in Python).")
    if cluster is not None and cluster.role == "chief":
        check_can_listen(cluster)
    # The files read, which no output may replace.
    inputs = [path for path in (model, data) if isinstance(path, (str, os.PathLike)) and os.path.exists(path)]
    model, _, _ = prepare(model)
    if not _is_graph_model(model, keras):
        raise SurgeryError(
            f"The model '{model.name}' is a subclassed model: diagnosis works, but rewriting it needs a "
            "Sequential or Functional model. Apply the suggested fixes in its code instead.")
    if not isinstance(data, Data):
        _, data, _ = prepare(model, data, y)
    if save_fixed and not (cluster is not None and cluster.role == "worker"):
        save_fixed = check_output_path(save_fixed, force=force, suffix=".keras", inputs=inputs)
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
    if role != "worker":
        # Keras Tuner wipes its project folder on a fresh start: only ever let it
        # wipe a folder that is empty or that an earlier search marked as its own.
        check_tuner_project(Path(directory) / PROJECT_NAME)
    interrupted = False
    try:
        with _search_environment(cluster, role):
            # A worker must not wipe the folder its chief and the other workers share.
            search = tuner_class(
                oracle=oracle, hypermodel=hypermodel, directory=directory, project_name=PROJECT_NAME,
                overwrite=role != "worker", runner=runner,
                on_trial=report_worker_trial if role == "worker" else None)
            if role != "worker":
                mark_tuner_project(search.project_dir)
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
