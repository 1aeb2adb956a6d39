"""The Python API: the same functions the command line uses.

:func:`diagnose` groups its keyword arguments into the settings of
:mod:`gradadvisor.search.options`, checks them there (the one place settings are
checked, for the command line too) and runs :func:`run_diagnosis`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from .loading.prepare import prepare

if TYPE_CHECKING:
    from .search.options import Plan


def diagnose(model, x=None, y=None, *, data=None, target=None, steps: int = 30,
             batch_size: int = 32, seed: int = 0, rules_dirs=(), select=None, ignore=None,
             search: bool = False, search_options: dict | None = None,
             unsafe_load: bool = False, custom_objects=None,
             progress: Callable | None = None, command: str | None = None):
    """Probe a model with a few real training steps and diagnose its gradients.

    Args:
        model: A ``keras.Model`` or the path of a ``.keras`` file (loaded in
            safe mode; ``unsafe_load=True`` allows Lambda layers from trusted files).
        x, y: Training data as NumPy arrays (or ``x`` a ``tf.data.Dataset`` of
            ``(x, y)`` pairs). Without data, synthetic data shaped from the model is used.
        data: Instead of ``x``/``y``: a ``.npz``/``.csv`` path or ``module:function``.
        target: The label column when ``data`` is a CSV file.
        steps: Training steps to probe (stops early at the first NaN).
        batch_size: Samples per step.
        seed: Seeds weights of the copy, batch order and synthetic data.
        rules_dirs: Extra folders of rule files; they add or replace rules by id.
        select, ignore: Rule ids to keep or drop.
        search: Also search for a fix when a warning or error is found.
        search_options: Keyword arguments for :func:`gradadvisor.recommend`.
        progress: Called as ``progress(stage, done, total)``; during a search
            with a fourth argument saying what is being tried.

    Returns:
        A :class:`~gradadvisor.Diagnosis`.

    Raises:
        UsageError: settings that do not fit together, such as an unknown rule id.
        OutputError: a ``save_fixed`` path that cannot be written.

    Example:
        >>> import gradadvisor
        >>> diagnosis = gradadvisor.diagnose("model.keras", steps=20)
        >>> print(diagnosis.status, [f.rule for f in diagnosis.findings])
    """
    # Imported here: the search package is not needed for 'import gradadvisor.api' to be quick.
    from .search.options import OutputOptions, ProbeOptions, check_options
    from .search.options import search_options as group_search_options

    searching, save_fixed, force = group_search_options(search_options, enabled=search)
    probe = ProbeOptions(steps=steps, batch_size=batch_size, seed=seed, rules_dirs=_frozen(rules_dirs),
                         select=_frozen(select), ignore=_frozen(ignore), unsafe_load=unsafe_load,
                         custom_objects=custom_objects)
    plan = check_options(probe, searching, OutputOptions(save_fixed=save_fixed, force=force),
                         inputs=(model, data))
    return run_diagnosis(model, x, y, plan, data=data, target=target, progress=progress, command=command)


def run_diagnosis(model, x, y, plan: Plan, *, data=None, target=None, progress: Callable | None = None,
                  command: str | None = None):
    """Probe, diagnose and, if the plan asks, search: settings already checked by :func:`check_options`."""
    from .analysis.diagnosis import Diagnosis, versions
    from .analysis.engine import evaluate
    from .probe import run_probe

    options = plan.probe
    model, resolved, model_path = prepare(
        model, x, y, data=data, target=target, unsafe_load=options.unsafe_load,
        custom_objects=options.custom_objects, seed=options.seed)
    probe_progress = (lambda done, total: progress("probe", done, total)) if progress else None
    probe = run_probe(model, resolved, steps=options.steps, batch_size=options.batch_size, seed=options.seed,
                      progress=probe_progress)
    diagnosis = Diagnosis(probe=probe, findings=evaluate(probe, plan.rules), model_path=model_path,
                          command=command, versions=versions(), rules_used=list(plan.rules))
    if plan.search.enabled and diagnosis.status != "healthy":
        from .search.recommendation import run_recommendation

        diagnosis.recommendation = run_recommendation(
            model, resolved, None, plan, diagnosis=diagnosis, progress=progress).to_dict()
    return diagnosis


def _frozen(value):
    """Lists as tuples, so the frozen settings hold no list that could change under them."""
    return tuple(value) if isinstance(value, list) else value
