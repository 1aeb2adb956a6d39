"""The rewritten model's optimizer (learning rate scaled, clipping set) and compile arguments."""

from __future__ import annotations

import collections.abc

from .._tf import import_keras
from ..errors import SurgeryError
from .setups import OPTIMIZERS, STANDARD_LEARNING_RATE, Setup, _as_setup

_CLIP_KEYS = ("clipnorm", "clipvalue", "global_clipnorm")


def _optimizer_configs(model, setup: Setup, keras) -> tuple:
    """``(optimizer class, current config, new config)`` for the rewritten model."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        optimizer = keras.optimizers.Adam(1e-3)
    current = optimizer.get_config()
    cls, new = type(optimizer), dict(current)
    if setup.optimizer is not None:
        cls = getattr(keras.optimizers, OPTIMIZERS[setup.optimizer])
        new = cls(learning_rate=setup.optimizer_learning_rate or STANDARD_LEARNING_RATE).get_config()
        # The user's own clipping stays unless the setup chooses another.
        for key in _CLIP_KEYS:
            new[key] = current.get(key)
    if setup.learning_rate_scale != 1.0:
        if "learning_rate" not in new:
            raise SurgeryError(
                f"The optimizer {cls.__name__} has no 'learning_rate' setting, so the "
                "learning rate cannot be scaled. Use a setup with learning_rate_scale=1.0.")
        new["learning_rate"] = _scaled_rate(new["learning_rate"], setup.learning_rate_scale, cls.__name__)
    if setup.warmup_steps:
        new["learning_rate"] = _warmed_up(new.get("learning_rate"), setup.warmup_steps, cls.__name__, keras)
    clipping = setup.clipping_kind
    if clipping is not None:
        for key in _CLIP_KEYS:
            new[key] = None
        # Keras optimizers accept only one of clipnorm, clipvalue and global_clipnorm.
        new[clipping] = setup.clip_threshold
    return cls, current, new


def _optimizer_changes(model, setup: Setup, keras, layer_name: str) -> list:
    """Entries ``{"layer", "change", "from", "to"}`` for what the setup changes on the optimizer."""
    from .plan import _entry

    cls, current, new = _optimizer_configs(model, setup, keras)
    entries = []
    before_class = type(getattr(model, "optimizer", None) or keras.optimizers.Adam(1e-3)).__name__
    if cls.__name__ != before_class:
        entries.append(_entry(layer_name, "optimizer", before_class, cls.__name__))
    for key in ("learning_rate",) + _CLIP_KEYS:
        before, after = current.get(key), new.get(key)
        if before == after:
            continue
        if key == "learning_rate":
            before = _tidy(before) if isinstance(before, (int, float)) else before
            if isinstance(after, dict) and setup.warmup_steps:
                after = (f"linear warm-up over {setup.warmup_steps} steps to "
                         f"{after['config']['warmup_target']:g}")
        entries.append(_entry(layer_name, key, before, after))
    return entries


def _warmed_up(rate, steps: int, optimizer_name: str, keras) -> dict:
    """A schedule rising linearly over ``steps`` steps to ``rate``, then constant.

    Keras' ``CosineDecay`` with ``alpha=1`` never decays, so its warm-up phase
    alone is a linear warm-up built from a standard, serialisable schedule.
    """
    if not isinstance(rate, (int, float)):
        raise SurgeryError(
            f"The learning rate of the {optimizer_name} optimizer is already a schedule, so "
            "gradadvisor cannot add a warm-up to it. Use a setup with warmup_steps=0.")
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=_tidy(rate / (steps + 1)), decay_steps=1, alpha=1.0,
        warmup_target=_tidy(rate), warmup_steps=int(steps))
    return keras.optimizers.schedules.serialize(schedule)


def _scaled_rate(rate, scale: float, optimizer_name: str):
    if isinstance(rate, (int, float)):
        return _tidy(float(rate) * scale)
    if isinstance(rate, dict) and isinstance(rate.get("config"), dict):
        config = dict(rate["config"])
        scaled = False
        for key in ("initial_learning_rate", "warmup_target", "maximal_learning_rate"):
            if isinstance(config.get(key), (int, float)):
                config[key] = _tidy(config[key] * scale)
                scaled = True
        if isinstance(config.get("values"), list):
            config["values"] = [_tidy(value * scale) for value in config["values"]]
            scaled = True
        if scaled:
            return dict(rate, config=config)
    raise SurgeryError(
        f"The learning rate of the {optimizer_name} optimizer is a {type(rate).__name__} whose scale "
        "gradadvisor cannot change. Use a number or a standard keras.optimizers.schedules schedule, "
        "or a setup with learning_rate_scale=1.0.")


def _tidy(value: float) -> float:
    # Optimizer configs hold float32 values (0.1 reads 0.10000000149); 7 digits undo that.
    return float(f"{float(value):.7g}")


def optimizer_for(model, setup: Setup):
    """A fresh optimizer for a rewritten model: same class and config as the
    model's (or the setup's Adam/RMSprop at its rate), learning rate scaled,
    warmed up if asked, and the setup's gradient clipping set.

    Clipping lives on the optimizer in Keras 3 (``model.compile(clipnorm=...)``
    is a TypeError), and only one of ``clipnorm``, ``clipvalue`` and
    ``global_clipnorm`` may be set, so a chosen clipping replaces the one the
    optimizer had; with no clipping chosen the optimizer's own is kept.

    Args:
        model: The user's model; without an optimizer, ``Adam(1e-3)`` is the base.
        setup: The setup whose ``learning_rate_scale`` and clipping apply.

    Returns:
        A new, unbuilt ``keras.optimizers.Optimizer``.

    Raises:
        SurgeryError: the learning rate is a schedule whose scale cannot be changed.

    Example:
        >>> optimizer_for(model, Setup(clipping="clipnorm", learning_rate_scale=0.5))
    """
    _, keras = import_keras()
    setup = _as_setup(setup)
    cls, _, config = _optimizer_configs(model, setup, keras)
    return cls.from_config(config)


def _compile_arguments(model, keras) -> dict | None:
    """The arguments ``model`` was compiled with, without its optimizer, or None."""
    if not getattr(model, "compiled", False):
        return None
    raw = getattr(model, "_compile_config", None)
    if raw is not None and isinstance(getattr(raw, "config", None), dict):
        # The objects the user passed: unlike the serialized config, these need no
        # registration for custom loss functions.
        arguments = dict(raw.config)
    else:
        arguments = keras.saving.deserialize_keras_object(model.get_compile_config())
    arguments.pop("optimizer", None)
    return {key: _fresh(value, keras) for key, value in arguments.items()}


def _fresh(value, keras):
    """Plain lists and dicts (TensorFlow wraps tracked ones), and copies of metric
    objects, which hold state and must not be shared by two models."""
    if isinstance(value, keras.metrics.Metric):
        return type(value).from_config(value.get_config())
    if isinstance(value, collections.abc.Mapping):
        return {key: _fresh(item, keras) for key, item in value.items()}
    if isinstance(value, collections.abc.Sequence) and not isinstance(value, str):
        return [_fresh(item, keras) for item in value]
    return value
