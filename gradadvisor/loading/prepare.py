"""Resolve what a caller hands over into a model and data, one way for every entry point."""

from __future__ import annotations

from pathlib import Path

from ..errors import UsageError


def prepare(model, x=None, y=None, *, data=None, target=None, unsafe_load=False,
            custom_objects=None, seed: int = 0):
    """Resolve a model (object or path) and its data (arrays, dataset, file or synthetic).

    Returns:
        ``(model, data, model_path)``.
    """
    from .data import Data, from_python, load_data
    from .models import resolve_model

    model_path = str(model) if isinstance(model, (str, Path)) else None
    if isinstance(custom_objects, str):
        from .models import import_custom_objects

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
