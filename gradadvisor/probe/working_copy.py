"""The copy the probe trains, and the loss and optimizer it trains with.

The user's model, its compile state and its optimizer are never changed.
"""

from __future__ import annotations

import contextlib

import numpy as np

from .walk import is_graph_model


@contextlib.contextmanager
def make_working_copy(model, keras, in_place: bool = False, strategy=None):
    """Yield ``(copy, mode)``; the user's model is unchanged afterwards.

    ``in_place`` trains ``model`` itself: only for models gradadvisor built
    (search candidates), whose trained weights the caller wants.  With a
    ``tf.distribute`` strategy the clone's variables are created in its scope.
    """
    if in_place:
        yield model, "in_place"
        return
    clone = None
    if is_graph_model(model, keras):
        try:
            with strategy.scope() if strategy is not None else contextlib.nullcontext():
                clone = keras.models.clone_model(model)
            if [tuple(v.shape) for v in clone.weights] != [tuple(v.shape) for v in model.weights]:
                clone = None
            else:
                for target, source in zip(clone.weights, model.weights):
                    target.assign(source)
        except Exception:  # a layer that cannot be rebuilt from its config
            clone = None
    if clone is not None:
        yield clone, "clone"
        return
    saved = [np.array(v.numpy(), copy=True) for v in model.weights]
    try:
        yield model, "restore"
    finally:
        for variable, value in zip(model.weights, saved):
            variable.assign(value)


def make_loss_function(loss, keras):
    """A callable ``(y, y_pred) -> scalar`` for a loss given as a name, function or
    Loss object, or a list of them for a multi-output model.

    The probe calls the loss itself rather than compiling the model, so the
    user's model (or its compile state) is never touched.
    """
    import tensorflow as tf

    if isinstance(loss, dict):
        loss = list(loss.values())
    if isinstance(loss, (list, tuple)):
        parts = [make_loss_function(item, keras) for item in loss]

        def total(y, y_pred):
            return tf.add_n([part(t, p) for part, t, p in zip(parts, y, y_pred)])

        return total
    function = keras.losses.get(loss) if isinstance(loss, str) else loss
    plain = not isinstance(function, keras.losses.Loss)

    def single(y, y_pred):
        if plain and y.shape.rank is not None and y_pred.shape.rank is not None:
            # Match (n,) targets to (n, 1) outputs and back, as compile() does;
            # Loss objects do this themselves.
            if y.shape.rank == y_pred.shape.rank - 1 and y_pred.shape[-1] == 1:
                y = tf.expand_dims(y, -1)
            elif y.shape.rank == y_pred.shape.rank + 1 and y.shape[-1] == 1:
                y = tf.squeeze(y, -1)
        return tf.reduce_mean(tf.cast(function(y, y_pred), "float32"))

    return single


def fresh_optimizer(model, keras):
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return keras.optimizers.Adam(1e-3), True
    return optimizer.__class__.from_config(optimizer.get_config()), False


def describe_optimizer(optimizer) -> dict:
    """Name, learning rate and clipping of an optimizer, as plain data."""
    config = optimizer.get_config()
    learning_rate = config.get("learning_rate")
    if isinstance(learning_rate, dict):
        learning_rate = learning_rate.get("config", {}).get("initial_learning_rate")
    return {
        "name": type(optimizer).__name__,
        "learning_rate": None if learning_rate is None else float(learning_rate),
        "clipnorm": config.get("clipnorm"),
        "clipvalue": config.get("clipvalue"),
        "global_clipnorm": config.get("global_clipnorm"),
    }
