"""GradientMonitor's findings: running the rules and wording what they found."""

from __future__ import annotations

import functools
import math

import numpy as np


def _caller_stacklevel() -> int:
    """The stacklevel that points a warning at the user's line calling fit()."""
    import os
    import sys

    folders = tuple(os.path.dirname(module.__file__) + os.sep
                    for module in (sys.modules.get(name) for name in ("keras", "tensorflow", "gradadvisor"))
                    if module is not None and getattr(module, "__file__", None))
    frame, level = sys._getframe(1), 1
    while frame is not None:
        if not frame.f_code.co_filename.startswith(folders):
            return level
        frame, level = frame.f_back, level + 1
    return 2


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return True


def _evaluate(probe, rules):
    """The engine's evaluate(), with BLAS on one thread.

    The signals fit tiny robust regressions; next to TensorFlow's threads a
    multi-threaded BLAS makes each fit many times slower, not faster.
    """
    from ..analysis.engine import evaluate

    with _blas_controller().limit(limits=1, user_api="blas"):
        return evaluate(probe, rules)


@functools.lru_cache(maxsize=None)
def _blas_controller():
    """One threadpoolctl controller for the process.

    Finding the thread pools means walking every loaded library, which took
    a few milliseconds per measurement when done each time. The regressions'
    BLAS is loaded first, so the controller knows it.
    """
    import sklearn.linear_model  # noqa: F401  (loads the BLAS the signals use)
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _first_nonfinite(window: list, infos: list) -> dict | None:
    """The probe's ``nonfinite`` record for the first non-finite measurement, or None."""
    for entry in window:
        layers = entry["layers"]
        bad_grads = [i.name for i in infos if layers.get(i.name, {}).get("nonfinite_grads", 0) > 0]
        bad_outputs = [i.name for i in infos if layers.get(i.name, {}).get("nonfinite_activations", 0) > 0]
        if _finite(entry["loss"]) and not bad_grads:
            continue
        return {
            "step": entry["step"],
            "where": "loss" if not _finite(entry["loss"]) else "gradients",
            "loss": entry["loss"],
            "layers_with_nonfinite_gradients": bad_grads,
            "layers_with_nonfinite_outputs": bad_outputs,
            "first_layer_from_output": (bad_grads or bad_outputs or [None])[-1],
            "first_layer_from_input": (bad_outputs or bad_grads or [None])[0],
        }
    return None


def _fastest_growing_layer(probe) -> tuple | None:
    """``(layer, first, last)`` gradient norms of the layer whose gradient grew most."""
    best = None
    for info in probe.weighted_layers():
        norms = probe.series(info.name, "grad_norm")
        norms = norms[np.isfinite(norms)]
        if norms.size == 0:
            continue
        first, last = float(norms[0]), float(norms[-1])
        growth = last / first if first > 0 else math.inf
        score = (growth, last) if norms.size > 1 else (0.0, last)
        if best is None or score > best[0]:
            best = (score, info.name, first, last)
    return None if best is None else best[1:]


def _describe_finding(finding, probe, measurement, first_step: int) -> str:
    """One paragraph: rule, message, the layer and its numbers."""
    where = finding.first_layer
    text = f"{finding.rule} {finding.name} ({finding.severity}): {finding.message}"
    if where:
        stats = measurement["layers"].get(where, {})
        numbers = ", ".join(f"{name} {stats[name]:.3g}" for name in ("grad_norm", "update_ratio")
                            if name in stats)
        text += f" Layer: {where}" + (f" ({numbers} at this step)." if numbers else ".")
    else:
        growing = _fastest_growing_layer(probe)
        if growing is not None:
            layer, first, last = growing
            text += (f" Layer: {layer} has the fastest-growing gradient (norm {first:.3g} at step "
                     f"{first_step}, {last:.3g} now).")
    return text
