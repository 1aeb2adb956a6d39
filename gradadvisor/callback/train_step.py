"""GradientMonitor's mode "train_step": measuring inside the train step the optimizer runs."""

from __future__ import annotations

import logging
import time
import warnings

import numpy as np

from .. import _compat
from .measurement import _Measurement

#: Key under which the measuring train function returns its statistics; it is
#: removed from the logs before Keras or any callback sees them.
_LOG_KEY = "_gradadvisor_statistics"

logger = logging.getLogger(__name__)


class _LiveTrainStep(_Measurement):
    """Mode "train_step": measure inside the train step the optimizer runs."""

    data_source = "model.fit training batches"

    def __init__(self, monitor, model, original, tf, keras):
        super().__init__(monitor, model, tf, keras)
        self.original = original
        self.function = None
        # Read by the train step: whether this call measures. Assigned only when it changes.
        self.measuring = tf.Variable(False, trainable=False, name="gradadvisor_measuring")
        self.measuring_value = False

    def set_measuring(self, value: bool):
        if value != self.measuring_value:
            self.measuring.assign(value)
            self.measuring_value = value

    def install(self):
        """Put the measuring train function on the model (built on first use)."""
        model, keras = self.model, self.keras
        optimizer = model.optimizer
        if model.built and model.trainable_weights and not optimizer.built:
            # What optimizer.apply() does on its first call. Done here, the
            # train function traces once instead of twice (creating variables
            # in a first trace forces a second one).
            with keras.name_scope(optimizer.name, caller=optimizer):
                optimizer.build(model.trainable_weights)
            optimizer.built = True
        if self.function is None:
            # make_train_function() wraps whatever model.train_step is, so an
            # instance attribute set for the call is all it takes; it is removed
            # at once so the model keeps its own train_step.
            model.train_step = self.train_step
            try:
                model.make_train_function(force=True)
                monitored = model.train_function
            finally:
                del model.train_step
            self.function = _MonitoredTrainFunction(self, monitored)
        model.train_function = self.function

    def restore(self):
        if self.model.train_function is self.function:
            self.model.train_function = self.original

    def forward_and_gradients(self, x, y, sample_weight, batch_size, trainable_weights):
        """Keras' forward pass, loss and backward pass for one batch (traced).

        The one place the monitored step differs from Keras' own in what it
        asks of the model: the forward pass is walked layer by layer (to keep
        each layer's output) and, for each recurrent layer, the gradient
        reaching its output is asked for in the same backward pass (it is
        computed anyway, so it costs nothing).

        Returns:
            ``(y_pred, unscaled_loss, gradients, tracer, recurrent, output_gradients)``:
            ``gradients`` lines up with ``trainable_weights`` (empty if none),
            ``recurrent`` is :func:`_timed_recurrent_calls` of the tracer and
            ``output_gradients`` holds, per recurrent call, the gradients
            reaching its outputs.
        """
        from ..probe.gradients import forward_and_gradients, recurrent_outputs

        tf, model = self.tf, self.model

        def loss_fn(y_pred):
            loss = _compat.compute_loss(model, x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
            _compat.loss_tracker(model).update_state(_compat.unscale_loss_for_distribution(loss),
                                                     sample_weight=batch_size)
            return loss

        # No watch: the gradients asked for are at the recurrent layers'
        # outputs, which the backward pass reaches anyway; Keras' compute_loss
        # already adds the model's own losses.
        result = forward_and_gradients(
            tf, model, loss_fn, lambda watch: self.forward(x), variables=list(trainable_weights),
            recurrent=recurrent_outputs if trainable_weights else None, model_loss_weight=None,
            scale_loss=model.optimizer.scale_loss if model.optimizer is not None else None)
        if not trainable_weights:
            return result.y_pred, result.loss, [], result.tracer, [], []
        recurrent = _timed_recurrent_calls(result.tracer)
        output_gradients = [result.recurrent[path] for path, _ in recurrent]
        return result.y_pred, result.loss, result.gradients, result.tracer, recurrent, output_gradients

    def layer_output_statistics(self, x):
        """Each layer output's statistics from a forward pass of its own, changing no state (traced).

        Why not reduce the outputs of the update's own forward pass: a tensor
        read by the measuring cond has one more consumer, and TensorFlow's
        graph rewrites (kernel fusion, oneDNN layouts) then compile the
        forward pass differently, so the update differs in the last bits and
        training drifts apart (MobileNetV2 did). This pass runs on measured
        steps only, inside the measuring branch, on the weights from before
        the update and in training mode (batch statistics, dropout); in a
        ``keras.StatelessScope`` its state updates (batch-norm moving
        statistics, the dropout seed generators) are collected and dropped,
        so the training that follows sees no trace of it. Its dropout masks
        are drawn from the seed state after the update's own draw, so they
        differ from the update's masks (same rate, same distribution).
        """
        keras = self.keras
        with keras.StatelessScope():
            _, tracer = self.forward(x)
        return self.activation_statistics(tracer)

    def train_step(self, data):
        """Keras' TensorFlow train step, plus every statistic on measured steps (traced).

        The statistics, and the copies of the weights they need from before the
        update, sit in two conds on ``self.measuring``: unmeasured steps skip
        them, paying only for the conds themselves (see the package
        documentation).
        """
        tf, keras, model = self.tf, self.keras, self.model
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        batch_size = tf.shape(next(i for i in keras.tree.flatten(x) if i is not None))[0]
        logs_extra = {}
        if model.trainable_weights:
            trainable_weights = list(model.trainable_weights)
            y_pred, unscaled_loss, gradients, tracer, recurrent, output_gradients = \
                self.forward_and_gradients(x, y, sample_weight, batch_size, trainable_weights)
            self.ensure_groups()
            measuring = self.measuring
            scale = _loss_scale(model.optimizer)

            sizes = [int(np.prod(v.shape)) for v in trainable_weights]
            lengths = [int(call[1][0].shape[1]) for _, call in recurrent]

            activations = []  # the layout of the layer outputs' statistics, set while tracing

            def measured():
                # A copy of the weights from before the update, taken on
                # measured steps only. Each branch returns two tensors, whatever
                # the model: every tensor in or out of a cond costs every step.
                weights = tf.concat([tf.reshape(tf.cast(v, "float32"), [-1]) for v in trainable_weights], 0)
                norms = [_recurrent_timestep_norms(tf, call, grads, scale)
                         for (_, call), grads in zip(recurrent, output_gradients)]
                if tracer is not None:
                    order, entries, vector = self.layer_output_statistics(x)
                    activations[:] = [(order, entries, int(vector.shape[0]))]
                    norms.append(vector)
                return weights, tf.concat(norms, 0) if norms else tf.zeros([0])

            def unmeasured():
                return tf.zeros([0]), tf.zeros([sum(lengths) + sum(a[2] for a in activations)])

            packed, packed_norms = _cond(tf, measuring, measured, unmeasured)
            model.optimizer.apply_gradients(zip(gradients, trainable_weights))

            def statistics():
                before = {id(v): tf.reshape(part, v.shape) for v, part in
                          zip(trainable_weights, tf.split(packed, sizes))}
                timesteps = list(zip([path for path, _ in recurrent],
                                     tf.split(packed_norms[:sum(lengths)], lengths) if lengths else []))
                outputs = None
                if activations:
                    order, entries, _ = activations[0]
                    outputs = (order, entries, packed_norms[sum(lengths):])
                return self.statistics(
                    unscaled_loss, {id(v): g for v, g in zip(trainable_weights, gradients)}, before, None,
                    timesteps, batch_size, gradient_scale=scale, activations=outputs)

            logs_extra[_LOG_KEY] = _cond(tf, measuring, statistics, lambda: tf.zeros([0], "float32"))
        else:
            warnings.warn("The model does not have any trainable weights.")
            y_pred = self.forward_and_gradients(x, y, sample_weight, batch_size, [])[0]
        logs = dict(model.compute_metrics(x, y, y_pred, sample_weight=sample_weight))
        logs.update(logs_extra)
        return logs


class _MonitoredTrainFunction:
    """The train function fit() calls while the monitor is on.

    It tells the monitored train function whether this call measures, runs it,
    and hands the statistics of a measured call to the monitor (dropping them
    from the logs either way).  If the monitor is no longer training (fit()
    was interrupted before on_train_end could restore the model), it puts
    Keras' own train function back and runs that.

    Once training has run long enough to pay for it, unmeasured steps run
    Keras' own train function instead: see :meth:`_keras_function_pays`.
    """

    def __init__(self, state, monitored):
        self.state, self.monitored = state, monitored
        self.prepared = False
        self.trace_seconds = None  # the monitored function's first call, its trace included
        self.keras_function_in_use = False

    @property
    def original(self):
        """Keras' own train function, which the monitor puts back when training ends."""
        return self.state.original

    def __call__(self, iterator):
        monitor = self.state.monitor
        if not monitor._active:
            model = monitor.model
            if model is not None and model.train_function is self:
                model.train_function = self.original
            return self.original(iterator)
        if not self.prepared:
            self.prepared = True
            _build_metrics(monitor.model, iterator)
        measure = monitor._measure_trigger is not None
        if not measure and self._keras_function_pays(monitor):
            return self.original(iterator)
        self.state.set_measuring(measure)
        started = time.perf_counter()
        logs = self.monitored(iterator)
        if self.trace_seconds is None:
            self.trace_seconds = time.perf_counter() - started
        vector = logs.pop(_LOG_KEY, None)
        if measure:
            monitor._pending_vector = vector
        return logs

    def _keras_function_pays(self, monitor) -> bool:
        """Whether unmeasured steps run Keras' own train function from now on.

        An unmeasured step of the monitored function still costs a little more
        than Keras' own (its conds, about 0.15-0.2 ms), while Keras' own costs
        nothing per step but one trace. So the monitored function runs every
        step at first (short trainings save a trace), and Keras' own is traced
        and takes over the unmeasured steps once the time spent training is
        large enough for a trace like the monitored function's to fit in
        ``max_overhead`` of it. Both run the same update on the same variables.
        """
        if self.keras_function_in_use:
            return True
        if self.trace_seconds is None or monitor._seconds_training * monitor.max_overhead < self.trace_seconds:
            return False
        self.keras_function_in_use = True
        monitor._timed_calls["plain"] = False  # this call traces Keras' function: not a plain step's time
        return True


def _build_metrics(model, iterator):
    """Create the compiled metrics' and loss's variables before any trace.

    Keras creates them while tracing the first train step, which makes
    TensorFlow trace it a second time. Keras' own symbolic build (what fit()
    runs first under a distribution strategy) creates them from the shapes of
    a batch, which the iterator tells without giving up a batch.
    """
    try:
        _compat.build_metrics_ahead(model, iterator.element_spec)
    except Exception:  # only an extra trace is lost
        logger.debug("GradientMonitor could not build the metrics ahead of tracing.", exc_info=True)


def _unwrap(function):
    while isinstance(function, _MonitoredTrainFunction):
        function = function.original
    return function


def _train_step_unavailable(model, tf, keras) -> str | None:
    """Why mode "train_step" cannot work for ``model``, or None if it can."""
    if keras.backend.backend() != "tensorflow":
        return f"the Keras backend is '{keras.backend.backend()}', not 'tensorflow'"
    if type(model).train_step is not _compat.keras_train_step():
        return f"{type(model).__name__} defines its own train_step"
    if _compat.model_strategy(model) is not None or tf.distribute.has_strategy():
        return "it is trained under a tf.distribute strategy"
    if getattr(model, "optimizer", None) is None:
        return "the model has no optimizer"
    if not _compat.train_step_internals_present(model):
        return f"this Keras version ({keras.__version__}) lacks the train-step internals it relies on"
    return None


def _timed_recurrent_calls(tracer) -> list:
    """``[(path, (layer, args, kwargs))]``: recurrent calls with a known number of timesteps."""
    if tracer is None:
        return []
    return [(path, call) for path, call in tracer.rnn_calls.items()
            if len(call[1][0].shape) >= 3 and call[1][0].shape[1] is not None]


def _recurrent_timestep_norms(tf, call, output_gradients, scale):
    """Per-timestep norms of the gradient reaching a recurrent layer's input.

    The layer runs again on its recorded input, in inference mode (no dropout
    masks drawn) and with its state variables restored afterwards, and the
    gradient of the loss with respect to its output is pulled back through
    it. Done in the update's own backward pass, this gradient would cost every
    step; a model input, for one, needs no gradient otherwise.
    """
    from ..probe import timestep_norms

    layer, args, kwargs = call
    if "training" in kwargs:
        kwargs = dict(kwargs, training=False)
    inputs = args[0]
    saved = [(v, tf.identity(v)) for v in layer.non_trainable_variables]
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        outputs = tf.nest.flatten(layer(*args, **kwargs))
    upstream = [tf.zeros_like(o) if g is None else tf.cast(g, o.dtype) for o, g in zip(outputs, output_gradients)]
    gradient = tape.gradient(outputs, inputs, output_gradients=upstream)
    for variable, value in saved:
        variable.assign(value)
    if gradient is None:
        return tf.zeros([inputs.shape[1]], "float32")
    norms = timestep_norms(tf, gradient)
    return norms if scale is None else norms / tf.cast(scale, "float32")


def _cond(tf, predicate, true_fn, false_fn):
    """``tf.cond`` whose branches stay functions that run only when taken.

    Inside a ``tf.function``, TensorFlow rewrites a cond into switch and merge
    operations, and then every operation of the branch not taken still passes
    a "dead" signal on each call: for the statistics branch, hundreds of
    operations on every unmeasured step (about a tenth of a small model's step
    time). Marking the cond not to be rewritten keeps it one function call.
    """
    outputs = tf.cond(predicate, true_fn, false_fn)
    if tf.executing_eagerly():
        return outputs
    try:
        from tensorflow.core.framework import attr_value_pb2

        first = tf.nest.flatten(outputs)[0]
        operation = first.op.inputs[0].op if first.op.type == "Identity" else first.op
        if operation.type in ("If", "StatelessIf"):
            operation._set_attr("_lower_using_switch_merge", attr_value_pb2.AttrValue(b=False))
    except Exception:  # only speed is lost: the rewritten cond computes the same
        logger.debug("GradientMonitor could not keep a cond as a function.", exc_info=True)
    return outputs


def _loss_scale(optimizer):
    """The factor the optimizer multiplies the loss by (mixed precision), or None."""
    scale = getattr(optimizer, "dynamic_scale", None)
    return scale if scale is not None else getattr(optimizer, "loss_scale_factor", None)
