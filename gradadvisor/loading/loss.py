"""The loss the probe trains with: the compiled one, or one inferred from the model."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np

from .introspection import activation_name, output_layers


@dataclasses.dataclass
class LossChoice:
    """The loss the probe trains with, and where it came from."""

    loss: Any
    name: str
    inferred: bool

    @property
    def kind(self) -> str:
        """``sparse``, ``categorical``, ``binary`` or ``regression``: what targets it takes."""
        words = self.name.lower().replace("_", "")
        if "sparse" in words:
            return "sparse"
        if "categorical" in words:
            return "categorical"
        if "binary" in words or "hinge" in words:
            return "binary"
        return "regression"


def describe_loss(loss) -> str:
    """A snake_case name for a loss given as a string, a Loss object or a function."""
    if isinstance(loss, str):
        return loss
    if isinstance(loss, (list, tuple)):  # one loss per output, first output first
        return " + ".join(describe_loss(item) for item in loss)
    if isinstance(loss, dict):
        return " + ".join(describe_loss(item) for item in loss.values())
    name = getattr(loss, "name", None) or getattr(loss, "__name__", None)
    if not name or name == "loss":
        name = re.sub(r"(?<!^)(?=[A-Z])", "_", type(loss).__name__).lower()
    return str(name)


def resolve_loss(model, y=None) -> LossChoice:
    """The model's compiled loss, or one inferred from its output layer and labels."""
    compiled = getattr(model, "loss", None)
    if compiled is not None:
        return LossChoice(compiled, describe_loss(compiled), inferred=False)
    layer = output_layers(model)[0]
    activation = activation_name(layer)
    units = int(model.outputs[0].shape[-1]) if getattr(model, "outputs", None) else 1
    if activation == "softmax":
        if y is not None and np.ndim(y) >= 2 and np.shape(y)[-1] == units and units > 1:
            name = "categorical_crossentropy"
        else:
            name = "sparse_categorical_crossentropy"
    elif activation == "sigmoid":
        name = "binary_crossentropy"
    else:
        name = "mean_squared_error"
    return LossChoice(name, name, inferred=True)


def resolve_output_losses(model) -> list:
    """One :class:`LossChoice` per model output, for a loss compiled as a list or dict per output."""
    outputs = list(getattr(model, "outputs", None) or [])
    compiled = getattr(model, "loss", None)
    if len(outputs) > 1 and isinstance(compiled, (list, tuple)) and len(compiled) == len(outputs):
        return [LossChoice(loss, describe_loss(loss), inferred=False) for loss in compiled]
    if len(outputs) > 1 and isinstance(compiled, dict):
        names = [layer.name for layer in output_layers(model)]
        if all(name in compiled for name in names):
            return [LossChoice(compiled[name], describe_loss(compiled[name]), inferred=False) for name in names]
    return [resolve_loss(model)] * max(len(outputs), 1)
