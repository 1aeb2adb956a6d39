"""One forward pass, loss and backward pass: what every measured step starts from.

The probe (:mod:`.step`), its multi-device variant (:mod:`.mirrored`) and
:class:`~gradadvisor.callback.GradientMonitor` (its "probe_batch" and
"train_step" modes) all measure the same thing: the gradient of the loss with
respect to every trainable variable and, for recurrent layers, with respect to
the layer's input or output at every timestep.  :func:`forward_and_gradients`
is that block, once; what differs between callers (how the model is called,
how the loss is computed, loss scaling) comes in as arguments.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from .walk import Tracer, is_graph_model


@dataclasses.dataclass
class StepGradients:
    """What :func:`forward_and_gradients` returns (tensors, inside a trace).

    Attributes:
        loss: The loss, model losses included, before any loss scaling.
        y_pred: The model's output.
        tracer: The :class:`~.walk.Tracer` that recorded each layer's output,
            or None when the model was called as a whole.
        gradients: One gradient per variable, in the order given (None where
            a variable got none); of the scaled loss when a ``scale_loss`` was given.
        recurrent: ``{path: gradient}`` for each source ``recurrent`` named: a
            tensor, or a list for a source given as a list (None where the
            loss does not depend on it).
    """

    loss: Any
    y_pred: Any
    tracer: Tracer | None
    gradients: list
    recurrent: dict


def recurrent_inputs(tracer) -> dict:
    """``{path: input}`` of each recurrent layer (the probe's gradient through time)."""
    return dict(tracer.rnn_inputs) if tracer is not None else {}


def recurrent_outputs(tracer) -> dict:
    """``{path: [outputs]}`` of each recurrent layer with a known number of timesteps.

    The gradient reaching a recurrent layer's output is part of the backward
    pass anyway; asking for it costs nothing, unlike the one at its input.
    """
    if tracer is None:
        return {}
    keras = tracer.keras
    return {path: keras.tree.flatten(tracer.outputs[path])
            for path, (_, args, _) in tracer.rnn_calls.items()
            if len(args[0].shape) >= 3 and args[0].shape[1] is not None}


def model_forward(keras, model, x, trace: bool, watch: Callable | None = None):
    """``(y_pred, tracer)``: ``model`` called on ``x`` in training mode.

    Args:
        keras: The Keras module.
        model: The model.
        x: Its inputs, as ``model(x)`` takes them.
        trace: Run it leaf by leaf with a :class:`~.walk.Tracer`, recording each
            layer's output (Sequential and Functional models only); otherwise
            call it as a whole and return None for the tracer.
        watch: Called on each recurrent layer's input (a tape's ``watch``).
    """
    if trace and is_graph_model(model, keras):
        tracer = Tracer(keras, watch=watch)
        return tracer.run(model, x, training=True), tracer
    if getattr(model, "_call_has_training_arg", True):
        return model(x, training=True), None
    return model(x), None


def forward_and_gradients(tf, model, loss_fn: Callable, forward: Callable, *, variables=None,
                          recurrent: Callable | None = recurrent_inputs,
                          model_loss_weight: float | None = 1.0,
                          scale_loss: Callable | None = None) -> StepGradients:
    """The forward pass, the loss and its gradients, in one tape (call it while tracing).

    Args:
        tf: The TensorFlow module.
        model: The model (its ``losses`` and ``trainable_weights`` are read).
        loss_fn: ``loss_fn(y_pred) -> scalar``, the loss of this batch, e.g.
            ``lambda y_pred: loss(y, y_pred)`` or Keras' ``compute_loss``.
        forward: ``forward(watch) -> (y_pred, tracer or None)``, e.g.
            ``lambda watch: model_forward(keras, model, x, True, watch)``;
            ``watch`` must be called on every recurrent input whose gradient is
            asked for (a :class:`~.walk.Tracer` does this when given it).
        variables: The variables to differentiate with respect to;
            ``model.trainable_weights`` by default.
        recurrent: ``recurrent(tracer) -> {path: tensor or [tensors]}``: further
            tensors to differentiate with respect to, by layer path
            (:func:`recurrent_inputs` by default, :func:`recurrent_outputs`, or
            None for none).
        model_loss_weight: Weight of the model's own losses (regularizers,
            ``add_loss``) added to ``loss_fn``'s value; None when ``loss_fn``
            already includes them, as Keras' ``compute_loss`` does.
        scale_loss: ``scale_loss(loss) -> loss`` applied before differentiating
            (an optimizer's ``scale_loss`` under mixed precision), or None.

    Returns:
        A :class:`StepGradients`.
    """
    variables = list(model.trainable_weights if variables is None else variables)
    with tf.GradientTape() as tape:
        y_pred, tracer = forward(tape.watch)
        loss = loss_fn(y_pred)
        if model_loss_weight is not None and model.losses:
            extra = tf.add_n([tf.cast(value, loss.dtype) for value in model.losses])
            loss = loss + (extra if model_loss_weight == 1.0 else extra * model_loss_weight)
        scaled = scale_loss(loss) if scale_loss is not None else loss
    sources = recurrent(tracer) if recurrent is not None else {}
    flat = [tensor for value in sources.values()
            for tensor in (value if isinstance(value, list) else [value])]
    gradients = tape.gradient(scaled, variables + flat)
    by_path, offset = {}, len(variables)
    for path, value in sources.items():
        if isinstance(value, list):
            by_path[path] = gradients[offset:offset + len(value)]
            offset += len(value)
        else:
            by_path[path] = gradients[offset]
            offset += 1
    return StepGradients(loss, y_pred, tracer, gradients[:len(variables)], by_path)
