"""The Python API: the same functions the command line uses."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from .errors import UsageError


def prepare(model, x=None, y=None, *, data=None, target=None, unsafe_load=False,
            custom_objects=None, seed: int = 0):
    """Resolve a model (object or path) and its data (arrays, dataset, file or synthetic).

    Returns:
        ``(model, data, model_path)``.
    """
    from .loading import Data, from_python, load_data, resolve_model

    model_path = str(model) if isinstance(model, (str, Path)) else None
    if isinstance(custom_objects, str):
        from .loading import import_custom_objects

        custom_objects = import_custom_objects(custom_objects)
    model = resolve_model(model, unsafe=unsafe_load, custom_objects=custom_objects)
    if data is not None and x is not None:
        raise UsageError("Pass either data=... (a file or module:function) or x and y, not both.")
    if data is not None:
        resolved = load_data(data, model, target=target)
    elif isinstance(x, Data):
        resolved = x
    elif x is not None:
        resolved = from_python(x, y, model)
    else:
        resolved = None
    return model, resolved, model_path


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
        A :class:`~gradadvisor.diagnosis.Diagnosis`.

    Example:
        >>> import gradadvisor
        >>> diagnosis = gradadvisor.diagnose("model.keras", steps=20)
        >>> print(diagnosis.status, [f.rule for f in diagnosis.findings])
    """
    from .diagnosis import Diagnosis, versions
    from .engine import evaluate, load_rules, select_rules
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
