"""Synthetic data shaped from the model, for when the user gives none."""

from __future__ import annotations

import numpy as np

from .._tf import import_keras
from .. import _compat
from .data import Data
from .introspection import input_specs
from .loss import resolve_output_losses


def synthetic_data(model, num_samples: int = 256, seed: int = 0) -> Data:
    """Inputs and learnable targets shaped from the model itself.

    Float inputs are standard normal; inputs feeding an ``Embedding`` are
    integer ids below its ``input_dim``.  Targets come from a fixed random
    projection of the inputs, so that the loss can actually go down, and are
    encoded to fit the model's loss and output shape.
    """
    _, keras = import_keras()
    rng = np.random.default_rng(seed)
    specs = input_specs(model)
    vocab = _embedding_vocab_by_input(model)
    arrays = []
    for name, shape, dtype in specs:
        concrete = tuple(16 if s is None else int(s) for s in shape)
        if name in vocab or "int" in dtype:
            high = vocab.get(name, 100)
            arrays.append(rng.integers(0, high, size=(num_samples,) + concrete).astype(
                dtype if "int" in dtype else "int32"))
        else:
            arrays.append(rng.normal(size=(num_samples,) + concrete).astype("float32"))
    signal = np.zeros(num_samples)
    features = np.concatenate([a.reshape(num_samples, -1).astype("float64") for a in arrays], axis=1)
    features = (features - features.mean(0)) / (features.std(0) + 1e-8)
    targets = []
    for tensor, loss in zip(model.outputs, resolve_output_losses(model)):
        shape = tuple(16 if s is None else int(s) for s in tensor.shape[1:])
        units = int(np.prod(shape)) if shape else 1
        projection = rng.normal(size=(features.shape[1], max(units, 1))) / np.sqrt(features.shape[1])
        scores = features @ projection + signal[:, None]
        if loss.kind == "sparse":
            targets.append(np.argmax(scores, axis=1).astype("int32"))
        elif loss.kind == "categorical":
            targets.append(np.eye(units, dtype="float32")[np.argmax(scores, axis=1)].reshape(
                (num_samples,) + shape))
        elif loss.kind == "binary":
            targets.append((scores > 0).astype("float32").reshape((num_samples,) + shape))
        else:
            targets.append(scores.astype("float32").reshape((num_samples,) + shape))
    y = targets[0] if len(targets) == 1 else targets
    x = arrays
    return Data(x, y, f"synthetic data shaped from the model ({num_samples} samples, seed {seed})")


def _embedding_vocab_by_input(model) -> dict:
    """Map input names to the ``input_dim`` of the Embedding they feed directly."""
    _, keras = import_keras()
    found = {}
    names = [name for name, _, _ in input_specs(model)]
    for layer in _leaf_layers(model):
        if isinstance(layer, keras.layers.Embedding):
            for node in _compat.inbound_nodes(layer):
                for tensor in node.input_tensors:
                    source = _compat.producer(tensor)
                    source_name = getattr(source, "name", None)
                    if source_name in names:
                        found[source_name] = int(layer.input_dim)
            if not found and len(names) == 1:
                found[names[0]] = int(layer.input_dim)
    return found


def _leaf_layers(model):
    _, keras = import_keras()
    for layer in model.layers:
        if isinstance(layer, keras.Model) and type(layer) in (keras.Sequential, keras.Model) or (
                isinstance(layer, _compat.functional_class())):
            yield from _leaf_layers(layer)
        else:
            yield layer
