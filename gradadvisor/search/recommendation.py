"""The recommendation: check the request, search within the budget, rank, confirm, save.

:func:`recommend` checks its settings with
:func:`gradadvisor.search.options.check_options` (the one place settings are checked,
for the command line too), then runs five steps, one function each:
:func:`_prepare` (the model, the data split and the budget), :func:`_search` (Keras Tuner's trials),
:func:`_rank` (trials as a table, best first), :func:`_confirm` (the original
and the best setup trained the same way, and whether the setup learns) and
:func:`_save` (the fixed model, written and re-probed).
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

from .._tf import import_keras
from ..errors import SurgeryError
from ..loading import Data, resolve_loss, unbuilt_optimizer_state_ignored
from ..loading.prepare import prepare
from .budget import MIN_TRIALS, resize_time_budget, size_budget
from .data import chance_loss, split_data
from .processes import _run_search, _search_environment, search_settings
from .records import read_records
from .run import LEARNING_FACTOR, train_and_measure
from .space import expert_starts, search_space, setup_from_values
from .tuner import OBJECTIVE, PROJECT_NAME, _tuner_classes


@dataclasses.dataclass
class Recommendation:
    """The outcome of a search.

    Attributes:
        recommended: True only when the confirmation run showed the setup
            learns (held-out loss at most 0.9x its own start and, for a
            classifier, 0.9x the chance-level loss), is healthier and reaches
            a lower held-out loss than the original.
        reason: One or two sentences saying why (or why not).
        setup: The best setup found (:class:`~gradadvisor.surgery.Setup`).
        dimensions: What was searched and which findings opened each dimension.
        trials: Every trial, ranked by score (lower is better).
        changes: Per-layer changes the setup makes.
        snippet: Python showing how to apply the setup in model-building code.
        confirmation: Original vs recommended, trained the same way.
        fixed_model: The rewritten, freshly initialised, compiled model.
        fixed_model_path: Where it was saved, if asked.
        fixed_status: The diagnosis status of the fixed model, re-probed from
            its fresh weights (None when nothing was recommended).
        fixed_findings: The rules that fired on that re-probe.
        skipped: Layers the setup would change but that surgery kept as they
            are, each ``{"layer": path, "reason": text}`` (see
            :attr:`gradadvisor.surgery.Rewrite.skipped`); ``reason`` names them too.
        budget: The budget and the time used: ``seconds_used`` (wall) and
            ``cpu_seconds_used`` (this process's CPU time) from the search's
            start, ``search_seconds`` for the trials alone.
        interrupted: True when the search was stopped by Ctrl-C.
        distributed: None for a local search; for a distributed one the
            process's ``role``, the ``oracle`` address, its ``tuner_id`` and
            the trial ids each worker ran (``trials_by_worker``).
        diagnosis: The :class:`~gradadvisor.Diagnosis` the search started
            from, which the HTML report renders around the recommendation.
            Not part of :meth:`to_dict` (the diagnosis's JSON holds the
            recommendation, not the other way round) nor of equality.

    In a Jupyter notebook a recommendation shows the HTML report inline: the
    diagnosis it started from, with this recommendation's section filled in.
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
    fixed_findings: list | None = None
    skipped: list = dataclasses.field(default_factory=list)
    budget: dict = dataclasses.field(default_factory=dict)
    interrupted: bool = False
    distributed: dict | None = None
    diagnosis: object = dataclasses.field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict:
        from ..jsonsafe import jsonable

        return jsonable({
            "recommended": self.recommended, "reason": self.reason,
            "setup": self.setup.to_dict() if self.setup is not None else None,
            "dimensions": [d.to_dict() for d in self.dimensions], "trials": self.trials,
            "changes": self.changes, "snippet": self.snippet, "confirmation": self.confirmation,
            "fixed_model_path": self.fixed_model_path, "fixed_status": self.fixed_status,
            "fixed_findings": self.fixed_findings, "skipped": self.skipped,
            "budget": self.budget, "interrupted": self.interrupted, "distributed": self.distributed,
        })

    def _repr_html_(self) -> str | None:
        """The HTML report with this recommendation, inline in a Jupyter notebook cell.

        None (Jupyter then shows the plain ``repr``) for a recommendation made
        without a diagnosis, which has no report to render.
        """
        if self.diagnosis is None:
            return None
        from ..report.html import render_notebook_html

        # A copy: the user's diagnosis keeps whatever recommendation it had.
        return render_notebook_html(dataclasses.replace(self.diagnosis, recommendation=self.to_dict()))



@dataclasses.dataclass
class _Request:
    """Everything the steps of :func:`recommend` share, checked and prepared."""

    model: object
    diagnosis: object
    train: object
    val: object
    rules: dict
    loss: object
    kind: str
    chance: float | None
    dimensions: list
    budget: dict
    seed: int
    batch_size: int
    strategy: object
    cluster: object
    save_fixed: object
    progress: Callable | None
    started: float
    #: The budget's clock (see :func:`_clock`) when the search was prepared.
    clock_start: float = 0.0
    #: This process's CPU time when the search was prepared.
    cpu_started: float = 0.0

    def run(self, candidate, steps: int, *, in_place: bool, cut_off: bool = False):
        """Train and measure ``candidate`` on the shared split, seeded like every other run."""
        _, keras = import_keras()
        keras.utils.set_random_seed(self.seed)
        return train_and_measure(candidate, self.train, self.val, steps=steps, batch_size=self.batch_size,
                                 seed=self.seed, rules=self.rules, in_place=in_place, loss=self.loss,
                                 kind=self.kind, strategy=self.strategy, chance_loss=self.chance,
                                 cut_off=cut_off)

    def say(self, stage: str, done: int, total: int, text: str = "") -> None:
        if self.progress:
            self.progress(stage, done, total, text)


def recommend(model, data=None, y=None, *, diagnosis=None, seed: int = 0, batch_size: int = 32,
              max_trials: int = 10, trial_steps: int | None = None, confirm_steps: int | None = None,
              time_budget: float | None = None, tuner: str = "bayesian", tuner_dir=None,
              save_fixed=None, force: bool = False, rules=None, progress: Callable | None = None,
              steps: int = 30, distributed: str | None = None, oracle_address: str | None = None,
              tuner_id: str | None = None, oracle_timeout: float = 600.0):
    """Search for the setup that trains ``model`` best, and prove it.

    A setup is recommended only when, trained the same way as the original
    (same seed, steps and held-out split), it *learns* (held-out loss at most
    0.9x its own start and, for a classifier, 0.9x the chance-level loss), is
    healthier, and ends at a lower held-out loss than the original.  When no
    tested setup learns, the result says so and shows the best partial one.

    Args:
        model: A Sequential or Functional ``keras.Model`` (or a ``.keras`` path).
        data: A :class:`~gradadvisor.loading.Data`, NumPy ``x`` (with ``y``), a
            ``tf.data.Dataset``, or None for synthetic data.
        diagnosis: The diagnosis to start from; probed here when None.
        seed: Makes the search repeatable.
        max_trials, trial_steps, time_budget: The budget.  ``trial_steps``
            None sizes trials from the sequence length and the measured step
            time; ``time_budget`` (s) stops starting new trials once spent
            (None: sized from the measured step time too, see
            :mod:`gradadvisor.search.budget`).
        confirm_steps: Steps of the confirmation run (default 2 x trial_steps).
        tuner: ``bayesian`` (default), ``random`` or ``hyperband``.
        tuner_dir: Keep Keras Tuner's files here; default a temporary folder
            that is removed afterwards.  Required, and shared by every
            process, in a distributed search.
        save_fixed: Write the recommended model here (``.keras``), atomically;
            the written model is re-probed and the result says what it found.
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
    from .options import OutputOptions, ProbeOptions, SearchOptions, check_options

    searching = SearchOptions(max_trials=max_trials, trial_steps=trial_steps, confirm_steps=confirm_steps,
                              time_budget=time_budget, tuner=tuner, tuner_dir=tuner_dir, distributed=distributed,
                              oracle_address=oracle_address, tuner_id=tuner_id, oracle_timeout=oracle_timeout)
    plan = check_options(ProbeOptions(steps=steps, batch_size=batch_size, seed=seed), searching,
                         OutputOptions(save_fixed=save_fixed, force=force), inputs=(model, data), rules=rules)
    return run_recommendation(model, data, y, plan, diagnosis=diagnosis, progress=progress)


def run_recommendation(model, data, y, plan, *, diagnosis=None, progress: Callable | None = None) -> Recommendation:
    """:func:`recommend` with settings :func:`gradadvisor.search.options.check_options` has checked."""
    request = _prepare(model, data, y, plan, diagnosis=diagnosis, progress=progress)
    cluster, budget = request.cluster, request.budget
    if not request.dimensions:
        return Recommendation(False, "Nothing to search: no warning or error finding asks for a fix.",
                              None, [], [], [], "", None, budget=dict(budget, seconds_used=0.0),
                              distributed=cluster.to_dict() if cluster else None, diagnosis=request.diagnosis)
    records, interrupted = _search(request, plan.search.tuner, plan.search.tuner_dir)
    ranked, trials, shared = _rank(request, records)
    _record_time_used(request, budget)
    partial = dict(dimensions=request.dimensions, trials=trials, budget=budget, interrupted=interrupted,
                   distributed=shared, diagnosis=request.diagnosis)
    if cluster is not None and cluster.role == "worker":
        done = ", ".join(record.trial for record in records) or "none"
        return Recommendation(
            False, f"Worker {cluster.tuner_id} ran trial(s) {done} for the chief at {cluster.address}; the "
            "chief ranks every trial and confirms the best.", None, changes=[], snippet="", confirmation=None,
            **partial)
    if not ranked:
        return Recommendation(False, "The search was stopped before any trial finished.", None, changes=[],
                              snippet="", confirmation=None, **dict(partial, trials=[]))
    from ..surgery import describe_changes, kept_layers, snippet

    best = ranked[0]
    setup = setup_from_values(best.values)
    changes, code = describe_changes(request.model, setup), snippet(setup, model=request.model)
    if interrupted:
        skipped = kept_layers(request.model, setup)
        return Recommendation(False, f"The search was interrupted after {len(trials)} trial(s); the best so "
                              f"far is {setup.describe()} ({best.status}, held-out loss "
                              f"{best.val_loss if best.val_loss is None else round(best.val_loss, 4)}), "
                              "not confirmed by a comparison run." + _kept_text(skipped), setup,
                              changes=changes, snippet=code, confirmation=None, skipped=skipped, **partial)
    recommended, reason, confirmation, fixed_copy, skipped = _confirm(request, setup)
    reason += _kept_text(skipped)
    path, fixed_status, fixed_findings = None, None, None
    if recommended:
        path, fixed_status, fixed_findings = _save(request, fixed_copy)
        reason += " " + _reprobe_text(path, fixed_status, fixed_findings, request.diagnosis.probe.num_steps)
    _record_time_used(request, budget)
    return Recommendation(recommended, reason, setup, changes=changes, snippet=code, confirmation=confirmation,
                          fixed_model=fixed_copy if recommended else None, fixed_model_path=path,
                          fixed_status=fixed_status, fixed_findings=fixed_findings, skipped=skipped,
                          **partial)


def _prepare(model, data, y, plan, *, diagnosis, progress) -> _Request:
    """Check the model can be rewritten, probe it if needed, split the data and size the budget."""
    from ..analysis.diagnosis import Diagnosis
    from ..analysis.engine import evaluate
    from ..probe import is_graph_model, run_probe
    from ..probe.mirrored import resolve_strategy

    _, keras = import_keras()
    options, cluster = plan.probe, plan.cluster
    model, _, _ = prepare(model)
    if not is_graph_model(model, keras):
        raise SurgeryError(
            f"The model '{model.name}' is a subclassed model: diagnosis works, but rewriting it needs a "
            "Sequential or Functional model. Apply the suggested fixes in its code instead.")
    if not isinstance(data, Data):
        _, data, _ = prepare(model, data, y)
    if diagnosis is None:
        probe = run_probe(model, data, steps=options.steps, batch_size=options.batch_size, seed=options.seed)
        diagnosis = Diagnosis(probe=probe, findings=evaluate(probe, plan.rules))
    train, val = split_data(data, model, options.seed)
    loss_choice = resolve_loss(model, train.y if not isinstance(train.y, list) else None)
    search = plan.search
    budget = size_budget(model, diagnosis.probe, max_trials=search.max_trials, trial_steps=search.trial_steps,
                         confirm_steps=search.confirm_steps, time_budget=search.time_budget, tuner=search.tuner,
                         distributed=cluster is not None)
    return _Request(
        model=model, diagnosis=diagnosis, train=train, val=val, rules=plan.rules, loss=loss_choice.loss,
        kind=loss_choice.kind, chance=chance_loss(train.y, loss_choice.name, loss_choice.kind),
        dimensions=search_space(diagnosis, model, trial_steps=budget["trial_steps"]), budget=budget,
        seed=options.seed, batch_size=options.batch_size, strategy=resolve_strategy(), cluster=cluster,
        save_fixed=plan.save_fixed, progress=progress, started=time.perf_counter(),
        clock_start=_clock(budget)(), cpu_started=time.process_time())


def _record_time_used(request: _Request, budget: dict):
    """Wall and CPU seconds since the search was prepared, into ``budget``."""
    budget["seconds_used"] = round(time.perf_counter() - request.started, 2)
    budget["cpu_seconds_used"] = round(time.process_time() - request.cpu_started, 2)


def _clock(budget: dict) -> Callable:
    """The clock a time budget counts on: CPU time for an automatic budget, else wall time."""
    return time.process_time if budget.get("clock") == "cpu" else time.perf_counter


def _search(request: _Request, tuner: str, tuner_dir) -> tuple:
    """``(trial records, interrupted)``: Keras Tuner's trials, in this process's role."""
    from ..files import check_tuner_project

    role = request.cluster.role if request.cluster else None
    owned = tuner_dir is None
    directory = tempfile.mkdtemp(prefix="gradadvisor-tuner-") if owned else str(tuner_dir)
    if role != "worker":
        # Keras Tuner wipes its project folder on a fresh start: only ever let it
        # wipe a folder that is empty or that an earlier search marked as its own.
        # Checked here again, just before the wipe, as the folder may have changed.
        check_tuner_project(Path(directory) / PROJECT_NAME)
    try:
        with _search_environment(request.cluster, role):
            search, interrupted = _run_tuner(request, tuner, directory, role)
        records = read_records(search.project_dir) if role != "worker" else list(search.records.values())
    finally:
        if owned:
            shutil.rmtree(directory, ignore_errors=True)
    return records, interrupted


def _run_tuner(request: _Request, tuner: str, directory: str, role) -> tuple:
    """``(tuner, interrupted)``: build Keras Tuner's tuner and run the search to its end or Ctrl-C."""
    from ..files import mark_tuner_project

    budget = request.budget
    hypermodel_class, _, _, _, tuner_class = _tuner_classes()
    oracle = _oracle(request, tuner)
    oracle.on_end = lambda oracle: _say_trial_ended(request, oracle)
    hypermodel = hypermodel_class(request.model, request.dimensions, request.strategy)
    # A worker must not wipe the folder its chief and the other workers share.
    search = tuner_class(
        oracle=oracle, hypermodel=hypermodel, directory=directory, project_name=PROJECT_NAME,
        overwrite=role != "worker", runner=_trial_runner(request, oracle),
        on_trial=(lambda trial, tuner_object: _say_worker_trial(request, trial, tuner_object))
        if role == "worker" else None)
    if role != "worker":
        mark_tuner_project(search.project_dir)
    if tuner == "hyperband":
        oracle.max_trials = budget["max_trials"]
    settings = None
    if request.cluster is not None:
        settings = search_settings(request.model, request.train, request.val, dimensions=request.dimensions,
                                   seed=request.seed, batch_size=request.batch_size,
                                   trial_steps=budget["trial_steps"], tuner=tuner, rules=request.rules)
    searched, interrupted = time.perf_counter(), False
    try:
        _run_search(search, oracle, request.cluster, settings, request.progress)
    except KeyboardInterrupt:
        interrupted = True
    budget["search_seconds"] = round(time.perf_counter() - searched, 2)
    return search, interrupted


def _trial_runner(request: _Request, oracle) -> Callable:
    """What the tuner calls to train one candidate: says which setup it tries, trains, resizes the budget."""
    budget, started_trials = request.budget, []

    def runner(candidate, fraction=1.0, values=None):
        started_trials.append(values)
        if values is not None:
            request.say("search", len(started_trials) - 1, budget["max_trials"],
                        f"trial {len(started_trials)}: trying {setup_from_values(values).describe()}")
        steps = max(2, int(budget["trial_steps"] * fraction))
        result = request.run(candidate, steps, in_place=True, cut_off=True)
        if budget.get("stop_when_learned") and result.learns_clearly and result.status == "healthy":
            oracle.satisfied = True
        if resize_time_budget(budget, result.step_seconds) and getattr(oracle, "deadline", None) is not None:
            oracle.deadline = request.clock_start + budget["time_budget"]
        return result

    return runner


def _say_trial_ended(request: _Request, oracle) -> None:
    scores = [t.score for t in oracle.trials.values() if t.status == "COMPLETED" and t.score is not None]
    request.say("search", len(oracle.end_order), request.budget["max_trials"],
                f"best score so far {min(scores):.4g}" if scores else "")


def _say_worker_trial(request: _Request, trial, tuner_object) -> None:
    record = tuner_object.records.get(trial.trial_id)
    if record is not None:
        request.say("search", len(tuner_object.records), request.budget["max_trials"],
                    f"trials run here; trial {record.trial} scored {record.score:.4g}")


def _oracle(request: _Request, tuner: str):
    """Keras Tuner's oracle for ``tuner``, with the expert starts and the time budget."""
    import keras_tuner

    _, bayesian, random_oracle, hyperband, _ = _tuner_classes()
    max_trials = request.budget["max_trials"]
    objective = keras_tuner.Objective(OBJECTIVE, direction="min")
    # Unbuildable candidates fail; they must not end the search early.
    if tuner == "hyperband":
        oracle = hyperband(objective=objective, max_epochs=3, factor=3, hyperband_iterations=1,
                           seed=request.seed, max_consecutive_failed_trials=max_trials + 1)
    else:
        oracle_class = bayesian if tuner == "bayesian" else random_oracle
        oracle = oracle_class(objective=objective, max_trials=max_trials, seed=request.seed,
                              max_consecutive_failed_trials=max_trials + 1)
        oracle.starts = expert_starts(request.dimensions, request.diagnosis, request.model)
    deadline = request.budget.get("time_budget")
    oracle.clock = _clock(request.budget)
    oracle.deadline = None if deadline is None else request.clock_start + deadline
    # At least one trial, so there is something to confirm; with a budget sized
    # from a step time that tracing inflates, at least four.
    oracle.min_trials = min(MIN_TRIALS, max_trials) if request.budget.get("automatic_time_budget") else 1
    return oracle


def _rank(request: _Request, records: list) -> tuple:
    """``(records best first, trials as plain rows, distributed summary or None)``."""
    ranked = sorted(records, key=lambda record: record.score)
    trials = [{
        "trial": record.trial, "rank": rank, "setup": setup_from_values(record.values).to_dict(),
        "values": {k: v for k, v in record.values.items() if not k.startswith("tuner/")},
        "score": record.score, "status": record.status, "val_loss": record.val_loss,
        "start_val_loss": record.start_loss, "learns": record.learns, "stopped": record.stopped,
        "findings": list(record.findings), "seconds": round(record.seconds, 2), "worker": record.worker,
    } for rank, record in enumerate(ranked, start=1)]
    shared = None
    if request.cluster is not None:
        by_worker: dict = {}
        for record in records:
            by_worker.setdefault(record.worker, []).append(record.trial)
        shared = dict(request.cluster.to_dict(), trials_by_worker=by_worker)
    return ranked, trials, shared


def _confirm(request: _Request, setup) -> tuple:
    """``(recommended, reason, confirmation, untrained fixed model, layers kept as they are)``:
    the original and the best setup trained the same way, judged on learning, health and
    held-out loss."""
    from ..probe.mirrored import scope
    from ..surgery import apply_setup, rewrite

    _, keras = import_keras()
    steps = request.budget["confirm_steps"]
    request.say("confirm", 0, 2, "training the original")
    original = request.run(request.model, steps, in_place=False)
    request.say("confirm", 1, 2, f"training {setup.describe()}")
    keras.utils.set_random_seed(request.seed)
    with scope(request.strategy):
        rewritten = rewrite(request.model, setup)
    candidate = rewritten.model
    # A second build of the same setup, given the candidate's initial weights,
    # is the untrained fixed model (clone_model would recompile from config and
    # fail on unregistered custom losses).  It is built outside any strategy
    # scope: it is the user's to train however they like.
    fixed_copy = apply_setup(request.model, setup)
    for target, source in zip(fixed_copy.weights, candidate.weights):
        target.assign(source)
    tried = request.run(candidate, steps, in_place=True)
    request.say("confirm", 2, 2, "")
    better = tried.val_loss is not None and (original.val_loss is None or tried.val_loss < original.val_loss)
    # A fix must remove problems: strictly healthier, or healthy like a healthy original.
    healthier = (_STATUS_RANK[tried.status] < _STATUS_RANK[original.status]
                 or tried.status == original.status == "healthy")
    recommended = tried.learns and better and healthier
    confirmation = {
        "steps": steps, "seed": request.seed,
        "metric_name": None if request.kind == "regression" else "accuracy",
        "chance_loss": request.chance, "learning_factor": LEARNING_FACTOR,
        "original": original.summary(), "recommended": tried.summary(), "improved": bool(better),
        "learns": bool(tried.learns),
    }
    return (recommended, _reason(recommended, setup, original, tried, steps, healthier), confirmation, fixed_copy,
            list(rewritten.skipped))


def _save(request: _Request, fixed_copy) -> tuple:
    """``(path or None, status, rule ids)``: write the fixed model if asked, and re-probe it.

    The re-probe reads the written file back, so it checks what the user gets.
    """
    from ..analysis.diagnosis import Diagnosis
    from ..analysis.engine import evaluate
    from ..files import atomic_output
    from ..probe import run_probe

    _, keras = import_keras()
    subject, path = fixed_copy, None
    if request.save_fixed:
        with atomic_output(request.save_fixed) as tmp:
            fixed_copy.save(tmp)
        path = str(request.save_fixed)
        try:
            with unbuilt_optimizer_state_ignored():
                subject = keras.saving.load_model(path, compile=True)
        except Exception:  # custom objects the caller registered only in its own scope
            subject = fixed_copy
    request.say("confirm", 2, 2, "re-probing the fixed model")
    probe = run_probe(subject, request.train, steps=request.diagnosis.probe.num_steps,
                      batch_size=min(request.batch_size, request.train.num_samples), seed=request.seed)
    findings = evaluate(probe, request.rules)
    status = "diverged" if probe.nonfinite else Diagnosis(probe=probe, findings=findings).status
    return path, status, sorted({finding.rule for finding in findings})


_STATUS_RANK = {"healthy": 0, "warning": 1, "error": 2, "stopped": 3, "diverged": 3}


def _loss_text(run) -> str:
    return "diverged" if run.val_loss is None else f"{run.val_loss:.4g}"


def _reason(recommended, setup, original, candidate, steps, healthier) -> str:
    learned = (f"from {candidate.start_loss:.4g} at the start" if candidate.start_loss is not None
               else "from an unmeasurable start")
    if candidate.chance_loss is not None:
        learned += f"; chance level {candidate.chance_loss:.4g}"
    comparison = (f"after {steps} identical training steps the held-out loss is {_loss_text(candidate)} "
                  f"with it ({learned}) vs {_loss_text(original)} for the original ({candidate.status} vs "
                  f"{original.status})")
    if recommended:
        return f"Recommended: {setup.describe()}; {comparison}."
    if not candidate.learns:
        return (f"No tested setup trains this model within the budget. The best partial result, "
                f"{setup.describe()}, did not learn: {comparison}; learning needs a held-out loss at most "
                f"{LEARNING_FACTOR:g}x its start{' and the chance level' if candidate.chance_loss else ''}. "
                "Try a larger budget (--max-trials, --trial-steps) or the fixes listed above by hand.")
    why = "not healthier than the original" if not healthier else "not better than the original"
    return f"Not recommended: the best setup found ({setup.describe()}) was {why} in the confirmation run: {comparison}."


def _kept_text(skipped: list, shown: int = 6) -> str:
    """A sentence naming the layers surgery kept as they are, or nothing."""
    if not skipped:
        return ""
    named = "; ".join(f"kept as it is: layer {entry['layer']} ({entry['reason']})" for entry in skipped[:shown])
    more = f"; and {len(skipped) - shown} more layer(s) kept as they are" if len(skipped) > shown else ""
    return f" The setup could not rewrite every layer: {named}{more}."


def _reprobe_text(path, status, findings, steps) -> str:
    subject = f"The saved model ({path})" if path else "The fixed model"
    found = "no findings" if not findings else "findings " + ", ".join(findings)
    verdict = {"healthy": "is healthy", "diverged": "diverged"}.get(status, f"has status {status}")
    return f"{subject}, re-probed for {steps} steps from its fresh weights, {verdict} ({found})."
