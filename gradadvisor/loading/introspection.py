"""Model introspection: a model's inputs, its output layers and its layers' activations."""

from __future__ import annotations

from .._tf import import_keras
from .. import _compat
from ..errors import DataError

#: Activations whose output is confined to a band with flat asymptotes.
SATURATING_ACTIVATIONS = ("sigmoid", "hard_sigmoid", "tanh", "hard_tanh", "softsign")
#: Activations that output exactly zero for negative inputs.
RELU_FAMILY = ("relu", "relu6")


def input_specs(model) -> list[tuple[str, tuple, str]]:
    """Return ``(name, shape_without_batch, dtype)`` for each model input."""
    inputs = getattr(model, "inputs", None)
    if not inputs:
        shape = getattr(model, "_build_shapes_dict", None) or {}
        raise DataError(
            f"The model '{model.name}' does not declare its inputs (subclassed models do not). "
            "Pass data explicitly with --data (Python: x=..., y=...)."
            if not shape else "The model does not declare its inputs. Pass data explicitly."
        )
    specs = []
    for tensor in inputs:
        name = getattr(tensor, "name", "input") or "input"
        specs.append((name.split(":")[0], tuple(tensor.shape[1:]), str(tensor.dtype)))
    return specs


def output_layers(model) -> list:
    """The layers that produce the model's outputs (following nested models)."""
    _, keras = import_keras()
    layers = []
    outputs = getattr(model, "outputs", None) or []
    for tensor in outputs:
        layer = _compat.producer(tensor)
        while layer is not None and isinstance(layer, keras.Model) and getattr(layer, "outputs", None):
            layer = _compat.producer(layer.outputs[0])
        if layer is not None:
            layers.append(layer)
    if not layers and model.layers:
        layers.append(model.layers[-1])
    return layers


def activation_name(layer) -> str | None:
    """The name of the nonlinearity that shapes ``layer``'s output, or None."""
    class_name = type(layer).__name__
    if class_name == "ReLU":
        slope = float(getattr(layer, "negative_slope", 0.0) or 0.0)
        return "relu" if slope == 0.0 else "leaky_relu"
    fixed = {"LeakyReLU": "leaky_relu", "PReLU": "prelu", "ELU": "elu", "Softmax": "softmax"}
    if class_name in fixed:
        return fixed[class_name]
    cell = getattr(layer, "cell", None)
    if cell is not None and hasattr(cell, "activation"):
        return _function_name(cell.activation)
    forward = getattr(layer, "forward_layer", None)
    if forward is not None:
        return activation_name(forward)
    if hasattr(layer, "activation"):
        return _function_name(layer.activation)
    return None


def _function_name(function) -> str | None:
    if function is None:
        return None
    name = getattr(function, "__name__", None) or type(function).__name__
    return None if name == "linear" else name.lower()
