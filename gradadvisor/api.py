"""The Python API: the same functions the command line uses."""

from __future__ import annotations

from typing import Callable

from .loading.prepare import prepare


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
        progress: Called as ``progress(stage, done, total)``.

    Returns:
        A :class:`~gradadvisor.Diagnosis`.

    Example:
        >>> import gradadvisor
        >>> diagnosis = gradadvisor.diagnose("model.keras", steps=20)
        >>> print(diagnosis.status, [f.rule for f in diagnosis.findings])
    """
    from .analysis.diagnosis import Diagnosis, versions
    from .analysis.engine import evaluate, load_rules, select_rules
    from .probe import run_probe

    rules = select_rules(load_rules(rules_dirs), select, ignore)
    model, resolved, model_path = prepare(
        model, x, y, data=data, target=target, unsafe_load=unsafe_load,
        custom_objects=custom_objects, seed=seed)
    probe_progress = (lambda done, total: progress("probe", done, total)) if progress else None
    probe = run_probe(model, resolved, steps=steps, batch_size=batch_size, seed=seed,
                      progress=probe_progress)
    diagnosis = Diagnosis(probe=probe, findings=evaluate(probe, rules), model_path=model_path,
                          command=command, versions=versions(), rules_used=list(rules))
    if search and diagnosis.status != "healthy":
        from .search import recommend

        options = dict(search_options or {})
        diagnosis.recommendation = recommend(
            model, resolved, diagnosis=diagnosis, seed=seed, batch_size=batch_size,
            progress=progress, rules=rules, **options).to_dict()
    return diagnosis
