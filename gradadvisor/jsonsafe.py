"""Numbers as JSON can carry them: the one helper every stage uses.

JSON has no NaN or infinity, and a probe of a diverging model is full of
them.  :func:`jsonable` writes them as the strings ``"nan"``, ``"inf"`` and
``"-inf"`` (and NumPy arrays and scalars as plain lists and numbers);
:func:`restore_floats` reads them back, so a document round-trips exactly.

This module imports nothing from gradadvisor, so the probe, the analysis, the
search and the scripts can all use it without an import cycle.
"""

from __future__ import annotations

import math

import numpy as np

#: The strings that stand for the floats JSON cannot hold.
SPECIAL_FLOATS = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}


def jsonable(value):
    """A copy of ``value`` that ``json.dumps`` accepts without ``allow_nan``.

    Dicts get string keys, tuples and arrays become lists, NumPy scalars
    plain Python numbers, and NaN and infinities the strings ``"nan"``,
    ``"inf"`` and ``"-inf"``.  Anything else is returned as it is.

    Example:
        >>> jsonable({"loss": [0.5, float("nan")], 1: np.float32(2.0)})
        {'loss': [0.5, 'nan'], '1': 2.0}
    """
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        value = float(value)
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def restore_floats(value):
    """The inverse of :func:`jsonable` for NaN and infinities: ``"nan"`` back to ``float("nan")``."""
    if isinstance(value, dict):
        return {k: restore_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [restore_floats(v) for v in value]
    if isinstance(value, str) and value in SPECIAL_FLOATS:
        return SPECIAL_FLOATS[value]
    return value
