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


def _loss_name(loss) -> str:
    """A snake_case name for a loss given as a string, a Loss object or a function."""
    if isinstance(loss, str):
        return loss
    name = getattr(loss, "name", None) or getattr(loss, "__name__", None)
    if not name or name == "loss":
        name = re.sub(r"(?<!^)(?=[A-Z])", "_", type(loss).__name__).lower()
    return str(name)


def resolve_loss(model, y=None) -> LossChoice:
    """The model's compiled loss, or one inferred from its output layer and labels."""
    compiled = getattr(model, "loss", None)
    if compiled is not None:
        return LossChoice(compiled, _loss_name(compiled), inferred=False)
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
