"""The probe: a few real training steps that measure every layer.

The probe trains a **copy** of the user's model (a clone with the same weights,
or, for subclassed models that cannot be cloned, the model itself with every
variable restored afterwards), so the user's model and file never change.

Each step is one compiled ``tf.function`` that runs the forward pass layer by
layer, records each layer's output, computes the loss and the gradients, applies
the optimizer and reduces everything to scalars in the graph; one vector per step
leaves TensorFlow.  For recurrent layers the gradient of the loss with respect to
the layer's input at every timestep is measured too, which shows vanishing or
exploding **through time**.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from typing import Any, Callable

import numpy as np

from ._tf import import_keras
from .errors import DataError, UsageError
from .loading import (RELU_FAMILY, SATURATING_ACTIVATIONS, Data, activation_name,
                      resolve_loss, synthetic_data)

#: Statistics measured for every layer with trainable weights, at every step.
WEIGHT_STATS = {
    "grad_norm": "L2 norm of the layer's gradient (all its trainable variables)",
    "grad_rms": "root mean square of the gradient entries (norm / sqrt(num_params))",
    "grad_max_abs": "largest absolute gradient entry",
    "weight_norm": "L2 norm of the layer's weights before the update",
    "update_ratio": "||w_after - w_before|| / ||w_before|| for the step",
    "zero_grad_fraction": "fraction of gradient entries exactly zero",
    "nonfinite_grads": "number of NaN or infinite gradient entries",
}
#: Statistics measured on every layer's output, at every step.
ACTIVATION_STATS = {
    "activation_mean": "mean of the layer's output",
    "activation_std": "standard deviation of the layer's output",
    "saturated_fraction": "fraction of outputs within 1e-2 of a sigmoid/tanh asymptote",
    "dead_fraction": "fraction of ReLU units that are zero for the whole batch",
    "nonfinite_activations": "number of NaN or infinite outputs",
}
SCHEMA = "gradadvisor.probe/1"
_EPS = 1e-12


@dataclasses.dataclass
class LayerInfo:
    """What the probe knows about one layer, input to output.

    Attributes:
        name: Unique path, nested models joined by ``/`` (``encoder/dense_1``).
        class_name: The Keras class, e.g. ``Dense``.
        index: Position in the forward pass, 0 for the layer nearest the input.
        activation: The nonlinearity shaping the output, or None if linear.
        num_params: Number of trainable parameters.
        recurrent: Whether the layer runs over timesteps (RNN or Bidirectional).
        is_output: Whether the layer produces a model output.
        kernel_initializer: The configured kernel initializer's class name.
        recurrent_initializer: The recurrent initializer's class name, for RNNs.
        bias_initializer: The bias initializer's class name.
        next_is_normalization: Whether a normalization layer follows it.
        output_shape: The output shape without the batch axis.
    """

    name: str
    class_name: str
    index: int
    activation: str | None = None
    num_params: int = 0
    recurrent: bool = False
    is_output: bool = False
    kernel_initializer: str | None = None
    recurrent_initializer: str | None = None
    bias_initializer: str | None = None
    next_is_normalization: bool = False
    output_shape: list | None = None


@dataclasses.dataclass
class ProbeResult:
    """Everything one probe measured, as plain data.

    ``stats[layer][stat]`` is a list with one value per step run; the stat names
    are the keys of :data:`WEIGHT_STATS` and :data:`ACTIVATION_STATS`.
    ``timestep_grad_norms[layer]`` is a list per step of per-timestep norms of
    d loss / d input_t. ``nonfinite`` is None, or says at which step the loss or
    gradients first stopped being finite and which layers showed it first.
    ``to_dict``/``from_dict`` round-trip exactly (NaN and infinities included).
    """

    model_name: str
    model_class: str
    num_params: int
    loss_name: str
    loss_inferred: bool
    optimizer: dict
    data_source: str
    batch_size: int
    num_steps: int
    seed: int
    layers: list
    loss: list
    global_grad_norm: list
    stats: dict
    timestep_grad_norms: dict
    nonfinite: dict | None = None
    activations_recorded: bool = True
    copy_mode: str = "clone"
    seconds: float = 0.0
    notes: list = dataclasses.field(default_factory=list)

    @property
    def steps_run(self) -> int:
        return len(self.loss)

    def layer(self, name: str) -> LayerInfo:
        for info in self.layers:
            if info.name == name:
                return info
        raise KeyError(name)

    def weighted_layers(self) -> list:
        """Layers with trainable weights, input to output."""
        return [info for info in self.layers if info.num_params > 0]

    def series(self, layer: str, stat: str) -> np.ndarray:
        """One statistic of one layer over the steps, as a float array."""
        return np.asarray(self.stats.get(layer, {}).get(stat, []), dtype="float64")

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["schema"] = SCHEMA
        return _jsonable(data)

    @classmethod
    def from_dict(cls, data: dict) -> "ProbeResult":
        data = dict(data)
        data.pop("schema", None)
        data["layers"] = [LayerInfo(**info) for info in data["layers"]]
        data = _restore_floats(data)
        return cls(**data)


def _jsonable(value):
    """Lists for arrays; NaN and infinities as strings JSON can carry."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        value = float(value)
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


_SPECIAL = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}


def _restore_floats(value):
    if isinstance(value, dict):
        return {k: _restore_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore_floats(v) for v in value]
    if isinstance(value, str) and value in _SPECIAL:
        return _SPECIAL[value]
    return value


# --------------------------------------------------------------------------
# Walking the model

def _is_graph_model(layer, keras) -> bool:
    """Sequential and Functional models can be walked layer by layer."""
    from keras.src.models.functional import Functional

    return isinstance(layer, (keras.Sequential, Functional))


def leaf_layers(model, prefix: str = ""):
    """Yield ``(path, layer)`` for every leaf layer, nested models flattened."""
    _, keras = import_keras()
    for layer in model.layers:
        if _is_graph_model(layer, keras):
            yield from leaf_layers(layer, prefix + layer.name + "/")
        else:
            yield prefix + layer.name, layer


class _Tracer:
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
        return model._run_through_graph(
            flat, operation_fn=lambda op: op,
            call_fn=lambda op, *args, **kwargs: self._call(op, args, kwargs, training, prefix))

    def _call(self, layer, args, kwargs, training, prefix):
        keras = self.keras
        path = prefix + layer.name
        if _is_graph_model(layer, keras):
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


# --------------------------------------------------------------------------
# Per-layer statistics, shared with gradadvisor.callback.GradientMonitor

def timestep_norms(tf, gradient):
    """Per-timestep L2 norms of ``gradient`` (batch, time, ...), or None.

    None when there is no gradient or its number of timesteps is not known
    while tracing.
    """
    if gradient is None or len(gradient.shape) < 3 or gradient.shape[1] is None:
        return None
    gradient = tf.cast(gradient, "float32")
    axes = [0] + list(range(2, len(gradient.shape)))
    return tf.sqrt(tf.reduce_sum(tf.square(gradient), axis=axes))


def layer_weight_stats(tf, variables, gradients, before):
    """The :data:`WEIGHT_STATS` of one layer, as scalar float32 tensors.

    The probe and :class:`~gradadvisor.callback.GradientMonitor` both call this,
    so a statistic means the same thing in a probe and during ``fit``.

    Args:
        tf: The TensorFlow module.
        variables: The layer's trainable variables, read after the update.
        gradients: Their gradients, ``None`` for a variable that got none.
        before: Their values before the update (tensors or variables).

    Returns:
        ``(stats, square)``: the statistics by name, in :data:`WEIGHT_STATS`
        order, and the sum of squared gradient entries (for the global norm).
    """
    grads = [tf.cast(g if g is not None else tf.zeros_like(v), "float32")
             for v, g in zip(variables, gradients)]
    size = float(sum(int(np.prod(v.shape)) for v in variables))
    square = tf.add_n([tf.reduce_sum(tf.square(g)) for g in grads])
    weight_sq = tf.add_n([tf.reduce_sum(tf.square(tf.cast(b, "float32"))) for b in before])
    delta_sq = tf.add_n([tf.reduce_sum(tf.square(tf.cast(v, "float32") - tf.cast(b, "float32")))
                         for v, b in zip(variables, before)])
    grad_norm = tf.sqrt(square)
    weight_norm = tf.sqrt(weight_sq)
    stats = {
        "grad_norm": grad_norm,
        "grad_rms": grad_norm / math.sqrt(size),
        "grad_max_abs": tf.reduce_max(tf.stack([tf.reduce_max(tf.abs(g)) for g in grads])),
        "weight_norm": weight_norm,
        "update_ratio": tf.sqrt(delta_sq) / (weight_norm + _EPS),
        "zero_grad_fraction": tf.add_n(
            [tf.reduce_sum(tf.cast(tf.equal(g, 0.0), "float32")) for g in grads]) / size,
        "nonfinite_grads": tf.add_n(
            [tf.reduce_sum(tf.cast(tf.logical_not(tf.math.is_finite(g)), "float32")) for g in grads]),
    }
    return stats, square


def group_variables(model, keras) -> list:
    """``[(path, layer, variables)]`` for every leaf layer, input to output, with
    each trainable variable in exactly one group (shared weights go to the first
    layer that holds them; variables no layer holds go to ``"(model)"``)."""
    seen, groups = set(), []
    walk = list(leaf_layers(model)) if _is_graph_model(model, keras) else [
        (layer.name, layer) for layer in model.layers]
    for path, layer in walk:
        variables = [v for v in layer.trainable_weights if id(v) not in seen]
        seen.update(id(v) for v in variables)
        groups.append((path, layer, variables))
    rest = [v for v in model.trainable_weights if id(v) not in seen]
    if rest:
        groups.append(("(model)", None, rest))
    return groups


def describe_layers(model, groups, order, keras) -> list:
    """:class:`LayerInfo` for each group of :func:`group_variables`.

    Layers are numbered in ``order`` (the paths in call order, as a
    :class:`_Tracer` records them); layers not in it follow in group order.
    """
    position = {path: i for i, path in enumerate(order)}
    groups = sorted(groups, key=lambda g: position.get(g[0], len(position) + groups.index(g)))
    output_layer_ids = set()
    if _is_graph_model(model, keras):
        from .loading import output_layers
        output_layer_ids = {id(layer) for layer in output_layers(model)}
    infos = []
    for index, (path, layer, variables) in enumerate(groups):
        class_name = type(layer).__name__ if layer is not None else type(model).__name__
        shape = None
        if layer is not None:
            with contextlib.suppress(Exception):
                shape = [None if s is None else int(s) for s in layer.output.shape[1:]]
        infos.append(LayerInfo(
            name=path, class_name=class_name, index=index,
            activation=activation_name(layer) if layer is not None else None,
            num_params=int(sum(int(np.prod(v.shape)) for v in variables)),
            recurrent=layer is not None and _is_recurrent(layer, keras),
            is_output=layer is not None and id(layer) in output_layer_ids,
            kernel_initializer=_initializer_name(layer, "kernel_initializer") if layer is not None else None,
            recurrent_initializer=(_initializer_name(layer, "recurrent_initializer")
                                   if layer is not None and _is_recurrent(layer, keras) else None),
            bias_initializer=_initializer_name(layer, "bias_initializer") if layer is not None else None,
            output_shape=shape,
        ))
    for before, after in zip(infos, infos[1:]):
        before.next_is_normalization = "Normalization" in after.class_name
    return infos


def activation_stats(tf, output, activation):
    """The :data:`ACTIVATION_STATS` of one layer output that apply to its activation.

    ``saturated_fraction`` is measured for sigmoid- and tanh-like activations,
    ``dead_fraction`` for the ReLU family; the other statistics always.
    """
    output = tf.cast(output, "float32")
    finite = tf.math.is_finite(output)
    safe = tf.where(finite, output, tf.zeros_like(output))
    stats = {
        "activation_mean": tf.reduce_mean(safe),
        "activation_std": tf.math.reduce_std(safe),
        "nonfinite_activations": tf.reduce_sum(tf.cast(tf.logical_not(finite), "float32")),
    }
    if activation in ("sigmoid", "hard_sigmoid"):
        near = tf.logical_or(safe < 0.01, safe > 0.99)
        stats["saturated_fraction"] = tf.reduce_mean(tf.cast(near, "float32"))
    elif activation in SATURATING_ACTIVATIONS:
        stats["saturated_fraction"] = tf.reduce_mean(tf.cast(tf.abs(safe) > 0.99, "float32"))
    if activation in RELU_FAMILY and len(output.shape) >= 2:
        axes = list(range(len(output.shape) - 1))
        alive = tf.reduce_max(tf.abs(safe), axis=axes) > 0.0
        stats["dead_fraction"] = 1.0 - tf.reduce_mean(tf.cast(alive, "float32"))
    return stats


def _initializer_name(layer, key: str) -> str | None:
    initializer = getattr(layer, key, None)
    if initializer is None and getattr(layer, "cell", None) is not None:
        initializer = getattr(layer.cell, key, None)
    if initializer is None and getattr(layer, "forward_layer", None) is not None:
        return _initializer_name(layer.forward_layer, key)
    if initializer is None:
        return None
    name = type(initializer).__name__
    stddev = getattr(initializer, "stddev", None)
    if stddev is not None and name in ("RandomNormal", "TruncatedNormal"):
        return f"{name}(stddev={float(stddev):g})"
    value = getattr(initializer, "value", None)
    if name == "Constant" and value is not None:
        values = np.asarray(value, dtype="float64").ravel()
        if values.size == 1:
            return f"Constant({values[0]:g})"
        return f"Constant(mean={values.mean():g})"
    return name


# --------------------------------------------------------------------------
# The copy

@contextlib.contextmanager
def _working_copy(model, keras, in_place: bool = False, strategy=None):
    """Yield ``(copy, mode)``; the user's model is unchanged afterwards.

    ``in_place`` trains ``model`` itself: only for models gradadvisor built
    (search candidates), whose trained weights the caller wants.  With a
    ``tf.distribute`` strategy the clone's variables are created in its scope.
    """
    if in_place:
        yield model, "in_place"
        return
    clone = None
    if _is_graph_model(model, keras):
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


def _fresh_optimizer(model, keras):
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


# --------------------------------------------------------------------------
# Batches

def _batches(data: Data, batch_size: int, seed: int, input_names=()):
    """Yield ``(x_list, y)`` batches forever, reshuffled each pass, all full size.

    A user's ``tf.data.Dataset`` is used batch by batch as it comes (repeated);
    a dict of inputs is put in the model's input order.
    """
    if data.dataset is not None:
        for element in data.dataset.repeat():
            if not isinstance(element, (tuple, list)) or len(element) < 2:
                raise DataError(
                    "The tf.data.Dataset must yield (x, y) pairs; it yields single elements."
                )
            x, y = element[0], element[1]
            if isinstance(x, dict):
                missing = [name for name in input_names if name not in x]
                if missing:
                    raise DataError(
                        f"The dataset has no input named '{missing[0]}'; it has "
                        f"{', '.join(map(repr, x))}. Name the features after the model's inputs.")
                x = [x[name] for name in input_names] if input_names else list(x.values())
            yield (list(x) if isinstance(x, (list, tuple)) else [x]), y
        return
    rng = np.random.default_rng(seed)
    num = data.num_samples
    ys = data.y if isinstance(data.y, list) else [data.y]
    while True:
        order = rng.permutation(num)
        for start in range(0, num - batch_size + 1, batch_size):
            index = order[start:start + batch_size]
            y = [t[index] for t in ys]
            yield [a[index] for a in data.x], (y[0] if len(y) == 1 else y)


# --------------------------------------------------------------------------
# The probe

def run_probe(model, data: Data | None = None, *, steps: int = 30, batch_size: int = 32,
              seed: int = 0, progress: Callable[[int, int], None] | None = None,
              record_activations: bool = True, in_place: bool = False,
              strategy="auto") -> ProbeResult:
    """Train a copy of ``model`` for ``steps`` steps and measure every layer.

    Args:
        model: A built ``keras.Model``; it is never modified.
        data: Training data; None makes synthetic data shaped from the model.
        steps: Number of training steps (stops early at the first NaN/Inf).
        batch_size: Samples per step.
        seed: Seeds the batch order, synthetic data and TensorFlow.
        progress: Called as ``progress(step, steps)`` after each step.
        record_activations: Measure layer outputs too (slightly slower).
        in_place: Train ``model`` itself instead of a copy. Only for models
            that are yours to change, such as search candidates.
        strategy: ``"auto"`` (default) splits each batch across devices with
            ``tf.distribute.MirroredStrategy`` when several are visible (or
            uses the strategy whose scope is active), a
            ``tf.distribute.Strategy`` to use that one, or None for one device.
            See :mod:`gradadvisor.mirrored`; the numbers are the same.

    Returns:
        A :class:`ProbeResult`.

    Raises:
        UsageError: ``steps`` or ``batch_size`` out of range.
        DataError: the data does not fit the model.
    """
    tf, keras = import_keras()
    if not isinstance(steps, int) or steps < 1:
        raise UsageError(f"The 'steps' parameter must be a whole number of at least 1. Got {steps!r} instead.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(
            f"The 'batch_size' parameter must be a whole number of at least 1. Got {batch_size!r} instead.")
    if data is None:
        data = synthetic_data(model, num_samples=max(256, batch_size * 4), seed=seed)
    if data.dataset is None and batch_size > data.num_samples:
        raise UsageError(
            f"The batch size {batch_size} is larger than the data ({data.num_samples} samples). "
            f"Pass --batch-size {data.num_samples} or less."
        )
    from .mirrored import MirroredProbe, replicas_note, resolve_strategy, usable_strategy

    strategy = resolve_strategy(strategy)
    keras.utils.set_random_seed(seed)
    started = time.perf_counter()
    with _working_copy(model, keras, in_place, strategy) as (work, copy_mode):
        loss_choice = resolve_loss(model, data.y if data.y is not None and not isinstance(data.y, list) else None)
        strategy, strategy_note = usable_strategy(strategy, work, batch_size)
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            optimizer, optimizer_inferred = _fresh_optimizer(model, keras)
        loss_fn = make_loss_function(loss_choice.loss, keras)
        if strategy is None:
            probe = _Probe(work, tf, keras, record_activations, loss_fn, optimizer)
        else:
            probe = MirroredProbe(work, tf, keras, record_activations, loss_fn, optimizer, strategy=strategy)
        result = probe.run(data, steps, batch_size, seed, progress)
    result.update(
        model_name=model.name, model_class=type(model).__name__,
        num_params=int(sum(np.prod(v.shape) for v in model.trainable_weights)),
        loss_name=loss_choice.name, loss_inferred=loss_choice.inferred,
        optimizer=dict(describe_optimizer(optimizer), inferred=optimizer_inferred),
        data_source=data.source, batch_size=batch_size, num_steps=steps, seed=seed,
        copy_mode=copy_mode, seconds=round(time.perf_counter() - started, 3))
    notes = result.setdefault("notes", [])
    if loss_choice.inferred:
        notes.append(f"The model was not compiled: the loss {loss_choice.name} was inferred "
                     "from its output layer.")
    if optimizer_inferred:
        notes.append("The model has no optimizer: Adam with learning rate 1e-3 was used.")
    if strategy_note:
        notes.append(strategy_note)
    elif strategy is not None:
        notes.append(replicas_note(strategy))
    return ProbeResult(**result)


class _Probe:
    """One probe run over a working copy; :meth:`run` returns ProbeResult fields."""

    def __init__(self, work, tf, keras, record_activations, loss_fn, optimizer):
        self.work, self.tf, self.keras = work, tf, keras
        self.loss_fn, self.optimizer = loss_fn, optimizer
        self.record_activations = record_activations and _is_graph_model(work, keras)
        self.groups = self._group_variables()
        self.layout: list = []
        self.timestep_layout: list = []
        self.order: list = []

    def _group_variables(self):
        return group_variables(self.work, self.keras)

    def _step_function(self):
        tf, keras, work = self.tf, self.keras, self.work
        variables = work.trainable_weights
        optimizer = self.optimizer
        # Creating the optimizer's slots inside the first trace would force a
        # second trace; fit() builds them up front too.
        if not optimizer.built:
            optimizer.build(variables)
        groups = self.groups

        def step(x, y):
            self.layout, self.timestep_layout = [], []
            loss, variable_grads, order, outputs, rnn_grads = self._gradients(x, y)
            by_id = {id(v): g for v, g in zip(variables, variable_grads)}
            before = {id(v): tf.identity(v) for v in variables}
            optimizer.apply(
                [g if g is not None else tf.zeros_like(v) for v, g in zip(variables, variable_grads)],
                variables)
            values = [tf.cast(loss, "float32")]
            self.layout.append(("", "loss"))
            total_sq = tf.constant(0.0)
            for path, _, group in groups:
                if not group:
                    continue
                stats, square = layer_weight_stats(
                    tf, group, [by_id[id(v)] for v in group], [before[id(v)] for v in group])
                total_sq = total_sq + square
                for name, value in stats.items():
                    self.layout.append((path, name))
                    values.append(value)
            values.append(tf.sqrt(total_sq))
            self.layout.append(("", "global_grad_norm"))
            if order is not None:
                self.order = list(order)
                for path in order:
                    output = outputs.get(path)
                    if not isinstance(output, tf.Tensor) or not output.dtype.is_floating:
                        continue
                    layer = self._layer_by_path(path)
                    for name, value in self._activation_stats(output, activation_name(layer)).items():
                        self.layout.append((path, name))
                        values.append(value)
            timestep_values = []
            for path, grad in rnn_grads.items():
                norms = timestep_norms(tf, grad)
                if norms is not None:
                    self.timestep_layout.append((path, int(norms.shape[0])))
                    timestep_values.append(norms)
            vector = tf.stack([tf.cast(v, "float32") for v in values])
            timesteps = tf.concat(timestep_values, 0) if timestep_values else tf.zeros([0])
            return vector, timesteps

        # Every batch has the same shape and the step has no tensor-dependent Python
        # control flow: one trace, without autograph, keeps start-up close to fit().
        return tf.function(step, autograph=False)

    def _gradients(self, x, y):
        """One forward and backward pass on the batch, before the update.

        Returns:
            ``(loss, variable_gradients, order, outputs, rnn_gradients)``: the
            gradients in ``work.trainable_weights`` order (None where a
            variable got none); the layer paths in call order and their
            outputs by path (None, None without activation recording); and
            d loss / d input of each recurrent layer by path.
        """
        tf, keras, work = self.tf, self.keras, self.work
        variables = work.trainable_weights
        with tf.GradientTape() as tape:
            tracer, y_pred = self._forward(x, tape)
            loss = self.loss_fn(y, y_pred)
            if work.losses:
                loss = loss + tf.add_n([tf.cast(extra, loss.dtype) for extra in work.losses])
        rnn_paths = list(tracer.rnn_inputs) if tracer else []
        sources = list(variables) + [tracer.rnn_inputs[p] for p in rnn_paths]
        gradients = tape.gradient(loss, sources)
        if tracer is None:
            return loss, gradients[:len(variables)], None, None, {}
        return (loss, gradients[:len(variables)], tracer.order, tracer.outputs,
                dict(zip(rnn_paths, gradients[len(variables):])))

    def _forward(self, x, tape):
        """``(tracer, y_pred)``: the forward pass, leaf by leaf when outputs are recorded.

        Shared by the single-device step and each replica of the multi-device one.
        """
        if not self.record_activations:
            return None, self.work(x[0] if len(x) == 1 else x, training=True)
        tracer = _Tracer(self.keras, watch=tape.watch)
        return tracer, tracer.run(self.work, x, training=True)

    def _layer_by_path(self, path):
        for name, layer, _ in self.groups:
            if name == path:
                return layer
        return None

    def _activation_stats(self, output, activation):
        return activation_stats(self.tf, output, activation)

    def run(self, data, steps, batch_size, seed, progress):
        tf = self.tf
        step = self._step_function()
        names = [getattr(t, "name", "") for t in (getattr(self.work, "inputs", None) or [])]
        batches = _batches(data, batch_size, seed, names)
        stats: dict = {}
        timestep_norms: dict = {}
        losses, global_norms = [], []
        nonfinite = None
        first = True
        for index in range(steps):
            x, y = next(batches)
            x = [tf.convert_to_tensor(a) for a in x]
            y = [tf.convert_to_tensor(t) for t in y] if isinstance(y, list) else tf.convert_to_tensor(y)
            try:
                vector, timesteps = step(x, y)
            except Exception:
                if not (first and self.record_activations):
                    raise
                # The layer-by-layer walk relies on Keras internals; fall back to a
                # plain forward pass (weights and gradients only) rather than fail.
                self.record_activations = False
                step = self._step_function()
                vector, timesteps = step(x, y)
            first = False
            vector = vector.numpy().astype("float64")
            timesteps = timesteps.numpy().astype("float64")
            for (path, name), value in zip(self.layout, vector):
                if path == "":
                    (losses if name == "loss" else global_norms).append(float(value))
                else:
                    stats.setdefault(path, {}).setdefault(name, []).append(float(value))
            offset = 0
            for path, length in self.timestep_layout:
                timestep_norms.setdefault(path, []).append(timesteps[offset:offset + length].tolist())
                offset += length
            if progress is not None:
                progress(index + 1, steps)
            nonfinite = self._first_nonfinite(index, stats, losses)
            if nonfinite is not None:
                break
        return {
            "layers": self._layer_infos(),
            "loss": losses,
            "global_grad_norm": global_norms,
            "stats": stats,
            "timestep_grad_norms": timestep_norms,
            "nonfinite": nonfinite,
            "activations_recorded": self.record_activations,
        }

    def _first_nonfinite(self, step, stats, losses):
        infos = self._layer_infos()
        bad_grads = [i.name for i in infos if stats.get(i.name, {}).get("nonfinite_grads", [0])[-1] > 0]
        bad_outputs = [i.name for i in infos
                       if stats.get(i.name, {}).get("nonfinite_activations", [0])[-1] > 0]
        loss_finite = math.isfinite(losses[-1])
        if loss_finite and not bad_grads:
            return None
        where = "loss" if not loss_finite else "gradients"
        return {
            "step": step,
            "where": where,
            "loss": losses[-1],
            "layers_with_nonfinite_gradients": bad_grads,
            "layers_with_nonfinite_outputs": bad_outputs,
            "first_layer_from_output": bad_grads[-1] if bad_grads else (bad_outputs[-1] if bad_outputs else None),
            "first_layer_from_input": (bad_outputs[0] if bad_outputs else (bad_grads[0] if bad_grads else None)),
        }

    def _layer_infos(self):
        if getattr(self, "_infos", None) is not None and self._infos_order == self.order:
            return self._infos
        infos = describe_layers(self.work, self.groups, self.order, self.keras)
        self._infos, self._infos_order = infos, list(self.order)
        return infos
