"""Walking the model: its leaf layers, and a forward pass that records each one's output."""

from __future__ import annotations

from typing import Callable

from .._tf import import_keras
from .. import _compat


def is_graph_model(layer, keras) -> bool:
    """Sequential and Functional models can be walked layer by layer."""
    return isinstance(layer, (keras.Sequential, _compat.functional_class()))


def leaf_layers(model, prefix: str = ""):
    """Yield ``(path, layer)`` for every leaf layer, nested models flattened."""
    _, keras = import_keras()
    for layer in model.layers:
        if is_graph_model(layer, keras):
            yield from leaf_layers(layer, prefix + layer.name + "/")
        else:
            yield prefix + layer.name, layer


class Tracer:
    """Runs a Sequential/Functional model leaf by leaf, recording outputs.

    ``outputs`` maps a layer path to its output; ``rnn_inputs`` maps a
    recurrent layer's path to its input, and ``rnn_calls`` to the
    ``(layer, args, kwargs)`` it was called with; ``order`` lists paths in call
    order. ``watch`` is called on each recurrent input so the tape can
    differentiate with respect to it even when it is a model input.
    """

    def __init__(self, keras, watch: Callable | None = None):
        self.keras = keras
        self.watch = watch
        self.outputs: dict = {}
        self.rnn_calls: dict = {}
        self.order: list = []

    @property
    def rnn_inputs(self) -> dict:
        return {path: args[0] for path, (_, args, _) in self.rnn_calls.items()}

    def run(self, model, inputs, training: bool, prefix: str = ""):
        keras = self.keras
        if isinstance(model, keras.Sequential):
            x = inputs[0] if isinstance(inputs, (list, tuple)) and len(inputs) == 1 else inputs
            for layer in model.layers:
                x = self._call(layer, (x,), {}, training, prefix)
            return x
        flat = keras.tree.flatten(inputs)
        return _compat.run_through_graph(
            model, flat, operation_fn=lambda op: op,
            call_fn=lambda op, *args, **kwargs: self._call(op, args, kwargs, training, prefix))

    def _call(self, layer, args, kwargs, training, prefix):
        keras = self.keras
        path = prefix + layer.name
        if is_graph_model(layer, keras):
            inner = args[0] if len(args) == 1 else list(args)
            return self.run(layer, inner, training, path + "/")
        if getattr(layer, "_call_has_training_arg", False):
            kwargs = dict(kwargs, training=training)
        recurrent = _is_recurrent(layer, keras)
        if recurrent and path not in self.rnn_calls and args:
            if self.watch is not None:
                self.watch(args[0])
            self.rnn_calls[path] = (layer, args, kwargs)
        output = layer(*args, **kwargs)
        if path not in self.outputs:
            self.outputs[path] = output
            self.order.append(path)
        return output


def _is_recurrent(layer, keras) -> bool:
    return isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional))
