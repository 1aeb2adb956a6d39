"""Planning new initializers: kernels as chosen, recurrent kernels orthogonal, biases zeros."""

from __future__ import annotations

from .plan import _LeafPlan, _entry, _find_config_value
from .setups import INITIALIZERS, Setup

_KERNEL_KEYS = ("kernel_initializer", "depthwise_initializer", "pointwise_initializer")


def _plan_initializer(plan: _LeafPlan, setup: Setup, keras) -> None:
    target = setup.kernel_initializer
    if target is None:
        return
    kernel_keys = [key for key in _KERNEL_KEYS if _find_config_value(plan.config, key) is not None]
    if not kernel_keys:
        return
    wanted = {key: target for key in kernel_keys}
    if _find_config_value(plan.config, "recurrent_initializer") is not None:
        wanted["recurrent_initializer"] = "orthogonal"
    if _find_config_value(plan.config, "bias_initializer") is not None:
        wanted["bias_initializer"] = "zeros"
    for key, value in wanted.items():
        current = _initializer_class(_find_config_value(plan.config, key), keras)
        if current != _initializer_class(value, keras):
            plan.initializer_changes.append(_entry(plan.path, key, current, value))
    if plan.initializer_changes:
        plan.edits.update(wanted)
        plan.reinitialise = True


def _initializer_class(value, keras) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict):
        return value.get("class_name")
    if isinstance(value, str):
        return INITIALIZERS.get(value) or type(keras.initializers.get(value)).__name__
    return type(value).__name__
