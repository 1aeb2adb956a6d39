"""Per-layer statistics, shared with :class:`gradadvisor.callback.GradientMonitor`.

What is measured (:data:`WEIGHT_STATS`, :data:`ACTIVATION_STATS`), the functions
that measure it inside the graph, and how layers and their variables are
grouped and described, so a statistic means the same in a probe and during ``fit``.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np

from .. import _compat
from ..loading import RELU_FAMILY, SATURATING_ACTIVATIONS, activation_name
from .result import LayerInfo
from .walk import is_graph_model, _is_recurrent, leaf_layers

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
_EPS = 1e-12


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


#: Variables of at most this many entries are measured together (see :class:`LayerReductions`).
BATCHED_VARIABLE_SIZE = 16384


class LayerReductions:
    """Per-layer sums and maxima over many variables' tensors, in few operations (traced).

    Each operation in a step costs executor time however small its input, so a
    model with many small variables (batch-norm scales and offsets, biases,
    depthwise kernels) paid more for a handful of reductions per variable than
    for the entries they read.  Variables of at most ``limit`` entries are
    flattened into one vector, ordered by layer, so a statistic over all of them
    is one sorted segment reduction (one pass, whatever their number); larger
    variables, which that copy would cost a pass over, are reduced one by one
    and their results combined by layer.  Sums of squares over the batched
    entries are accumulated in float64 (a segment sum adds entries one after
    another), so they round no worse than a per-variable float32 reduction.

    Args:
        shapes: The shape of each variable, in the order tensors will be given.
        segments: Per variable, the index of its layer.
        count: The number of layers.
        limit: The largest variable (in entries) that is batched; 0 batches none.
    """

    def __init__(self, shapes, segments, count, limit=BATCHED_VARIABLE_SIZE):
        sizes = [int(np.prod(shape)) for shape in shapes]
        self.count = count
        # Sorted by layer: the sorted segment reductions need it, and are far
        # faster than the unsorted ones, which add entry by entry.
        self.small = sorted((i for i, size in enumerate(sizes) if size <= limit), key=lambda i: (segments[i], i))
        self.large = [i for i, size in enumerate(sizes) if size > limit]
        self._entry_segments = np.repeat([segments[i] for i in self.small],
                                         [sizes[i] for i in self.small]).astype("int32")
        self._large_segments = np.array([segments[i] for i in self.large], dtype="int32")
        if not len(self._entry_segments):  # only empty variables: nothing to batch
            self.small = []

    def flatten(self, tf, tensors):
        """The batched variables' tensors as one float32 vector, or None when there are none.

        The other methods take it as ``flat`` so that several reductions of the
        same tensors share one copy.
        """
        if not self.small:
            return None
        shape = tf.constant([-1])
        # A vector (a bias, a batch-norm scale) needs no reshape: one operation fewer each.
        return tf.concat([tf.cast(tensors[i], "float32") if len(tensors[i].shape) == 1
                          else tf.reshape(tf.cast(tensors[i], "float32"), shape) for i in self.small], 0)

    def _small_by_layer(self, tf, reduce, values):
        """A sorted segment reduction of the batched entries: per layer, 0 for a layer with none."""
        result = reduce(values, tf.constant(self._entry_segments))
        missing = self.count - (int(self._entry_segments[-1]) + 1)
        return tf.pad(result, [[0, missing]]) if missing else result

    def _large_by_layer(self, tf, reduce, values):
        return reduce(values, tf.constant(self._large_segments), self.count)

    def square_sums(self, tf, tensors, flat=None):
        """Per layer, the sum of the squared entries of its variables' ``tensors``: a ``(count,)`` vector."""
        total = tf.zeros([self.count], "float32")
        if self.large:
            halves = tf.stack([tf.nn.l2_loss(tf.cast(tensors[i], "float32")) for i in self.large])
            total = 2.0 * self._large_by_layer(tf, tf.math.unsorted_segment_sum, halves)
        flat = self.flatten(tf, tensors) if flat is None else flat
        if flat is not None:
            wide = tf.cast(flat, "float64")
            total += tf.cast(self._small_by_layer(tf, tf.math.segment_sum, tf.square(wide)), "float32")
        return total

    def count_where(self, tf, test, tensors, flat=None):
        """Per layer, the number of entries of ``tensors`` for which ``test`` holds (float32)."""
        total = tf.zeros([self.count], "float32")
        if self.large:
            counts = tf.stack([tf.reduce_sum(tf.cast(test(tensors[i]), "float32")) for i in self.large])
            total = self._large_by_layer(tf, tf.math.unsorted_segment_sum, counts)
        flat = self.flatten(tf, tensors) if flat is None else flat
        if flat is not None:
            total += self._small_by_layer(tf, tf.math.segment_sum, tf.cast(test(flat), "float32"))
        return total

    def largest_absolute(self, tf, tensors, finite, flat=None):
        """Per layer, the largest absolute entry of ``tensors``; NaN where some entry is NaN.

        With ``finite`` (the caller knows every entry is finite) it is read as
        ``max(max(x), -min(x))``, without writing ``|x|`` back.
        """
        flat = self.flatten(tf, tensors) if flat is None else flat
        result, flags = None, None
        if self.large:
            if finite:
                largest = tf.maximum(tf.stack([tf.reduce_max(tensors[i]) for i in self.large]),
                                     -tf.stack([tf.reduce_min(tensors[i]) for i in self.large]))
            else:
                largest = tf.stack([tf.reduce_max(tf.abs(tensors[i])) for i in self.large])
                # segment_max skips NaN where reduce_max keeps it; a NaN entry must show.
                flags = self._large_by_layer(tf, tf.math.unsorted_segment_sum, largest)
            # A layer without large variables gets the lowest float32, below any |x|.
            result = self._large_by_layer(tf, tf.math.unsorted_segment_max, largest)
        if flat is not None:
            if finite:
                largest = tf.maximum(self._small_by_layer(tf, tf.math.segment_max, flat),
                                     -self._small_by_layer(tf, tf.math.segment_min, flat))
            else:
                magnitudes = tf.abs(flat)
                largest = self._small_by_layer(tf, tf.math.segment_max, magnitudes)
                # A sum of absolute values is NaN exactly when one of them is.
                flag = self._small_by_layer(tf, tf.math.segment_sum, magnitudes)
                flags = flag if flags is None else flags + flag
            # A layer without batched entries gets 0, which no |x| is below.
            result = largest if result is None else tf.maximum(result, largest)
        if flags is not None:
            result = tf.where(tf.math.is_nan(flags), float("nan"), result)
        return result


def weight_stats_matrix(tf, gradients, weight_squares, delta_squares, reductions, sizes):
    """The :data:`WEIGHT_STATS` of every layer at once: a ``(layers, 7)`` float32 matrix.

    The probe's fused form of :func:`layer_weight_stats`, with the same values:
    every statistic is a per-layer reduction of :class:`LayerReductions`, so the
    number of operations grows with the number of large variables only.
    Non-finite entries are counted, and the largest absolute entry taken from
    ``|g|``, only when the sum of squares says there are any (a finite sum of
    squares means every entry is finite), so a healthy step does not pay for them.

    Args:
        tf: The TensorFlow module.
        gradients: One float32 gradient per variable (zeros for none).
        weight_squares: Per layer, the sum of squared weights before the update
            (:meth:`LayerReductions.square_sums`).
        delta_squares: Per layer, the sum of squared entries of the update.
        reductions: The :class:`LayerReductions` of the variables.
        sizes: Per layer, its number of parameters.

    Returns:
        ``(matrix, total_square)``: one row per layer in :data:`WEIGHT_STATS`
        order, and the sum of squared gradient entries of the whole model.
    """
    sizes = tf.constant(sizes, "float32")
    flat = reductions.flatten(tf, gradients)
    squares = reductions.square_sums(tf, gradients, flat)
    total = tf.reduce_sum(squares)
    largest = reductions.largest_absolute(tf, gradients, True, flat)

    def count_nonfinite():
        # Where NaN may stand, max/min would not say which way it goes: |g| does.
        return (reductions.count_where(tf, lambda g: tf.logical_not(tf.math.is_finite(g)), gradients, flat),
                reductions.largest_absolute(tf, gradients, False, flat))

    nonfinite, largest = tf.cond(tf.math.is_finite(total), lambda: (tf.zeros_like(squares), largest),
                                 count_nonfinite)
    zeros = reductions.count_where(tf, lambda g: tf.equal(g, 0.0), gradients, flat)
    grad_norm = tf.sqrt(squares)
    weight_norm = tf.sqrt(weight_squares)
    matrix = tf.stack([
        grad_norm,
        grad_norm / tf.sqrt(sizes),
        largest,
        weight_norm,
        tf.sqrt(delta_squares) / (weight_norm + _EPS),
        zeros / sizes,
        nonfinite,
    ], axis=1)
    return matrix, total


def group_variables(model, keras) -> list:
    """``[(path, layer, variables)]`` for every leaf layer, input to output, with
    each trainable variable in exactly one group (shared weights go to the first
    layer that holds them; variables no layer holds go to ``"(model)"``)."""
    seen, groups = set(), []
    walk = list(leaf_layers(model)) if is_graph_model(model, keras) else [
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
    :class:`Tracer` records them); layers not in it follow in group order.
    """
    position = {path: i for i, path in enumerate(order)}
    groups = sorted(groups, key=lambda g: position.get(g[0], len(position) + groups.index(g)))
    output_layer_ids = set()
    if is_graph_model(model, keras):
        from ..loading import output_layers
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


def layer_output_stats(tf, outputs: dict, order, activation_of):
    """The statistics of every floating-point layer output, in call order (traced).

    Args:
        tf: The TensorFlow module.
        outputs: ``{path: output}`` as a :class:`~gradadvisor.probe.walk.Tracer` records them.
        order: The layer paths in call order.
        activation_of: ``activation_of(path)``: the name of the activation that
            produced that output.

    Returns:
        ``(vector, entries)``: the float32 statistics (:func:`activation_stats_vector`)
        and the ``(path, name)`` of each of its numbers. Outputs that are not
        floating-point tensors are left out.
    """
    measured = [path for path in order
                if isinstance(outputs.get(path), tf.Tensor) and outputs[path].dtype.is_floating]
    vector, names = activation_stats_vector(tf, [(outputs[path], activation_of(path)) for path in measured])
    return vector, [(path, name) for path, layer_names in zip(measured, names) for name in layer_names]


def activation_stats_vector(tf, items):
    """The :data:`ACTIVATION_STATS` of several layer outputs, as one float32 vector.

    ``saturated_fraction`` is measured for sigmoid- and tanh-like activations,
    ``dead_fraction`` for the ReLU family (a unit is dead when none of its
    outputs over the batch is positive); the other statistics always.

    A layer's output is as large as the batch times its width, so the number of
    passes over it is what this costs.  On a step where every output is finite
    (the usual case) each output is read by reductions that write nothing back:
    its sum, its sum of squares, and the one or two its activation needs; the
    standard deviation comes from those two sums (float32, so it loses digits
    when it is below about 1e-3 of the mean).  One check on the sums of squares
    (a finite one means every entry is finite) decides for all outputs at once;
    only when some output holds a NaN or an infinity are the same reductions
    run again on the outputs with those entries set to zero, and the entries
    counted.  Both cases share the arithmetic after the reductions, so the
    branch a healthy step never runs adds few operations to the traced step.

    Args:
        tf: The TensorFlow module.
        items: ``[(output, activation)]``: a floating-point tensor and the name of
            the activation that produced it (:func:`~gradadvisor.loading.activation_name`).

    Returns:
        ``(vector, names)``: the statistics of every output, one after another,
        and per output the names of its statistics in the vector's order.
    """
    if not items:
        return tf.zeros([0], "float32"), []
    outputs = [tf.cast(output, "float32") for output, _ in items]
    activations = [activation for _, activation in items]
    sizes = tf.stack([tf.cast(tf.size(x), "float32") if not x.shape.is_fully_defined()
                      else tf.constant(float(np.prod(x.shape))) for x in outputs])

    def reduce(xs):
        # Per output, only the passes over it; the arithmetic on their results is
        # done once on vectors, put in order by one gather.
        shape_stats = [_activation_shape_stats(tf, x, activation) for x, activation in zip(xs, activations)]
        values = [value for stats in shape_stats for value in stats.values()]
        return (tf.stack([tf.reduce_sum(x) for x in xs]), 2.0 * tf.stack([tf.nn.l2_loss(x) for x in xs]),
                tf.stack(values) if values else tf.zeros([0])), [list(stats) for stats in shape_stats]

    (sums, squares, shape_stats), extra_names = reduce(outputs)
    names, index, fractions = [], [], 0
    for layer, extra in enumerate(extra_names):
        names.append(["activation_mean", "activation_std", "nonfinite_activations"] + extra)
        index.append([("mean", layer), ("std", layer), ("nonfinite", layer)]
                     + [("fraction", fractions + i) for i in range(len(extra))])
        fractions += len(extra)

    def masked():
        finite = [tf.math.is_finite(x) for x in outputs]
        counts = sizes - tf.stack([tf.reduce_sum(tf.cast(f, "float32")) for f in finite])
        return reduce([tf.where(f, x, 0.0) for f, x in zip(finite, outputs)])[0] + (counts,)

    sums, squares, shape_stats, nonfinite = tf.cond(
        tf.reduce_all(tf.math.is_finite(squares)), lambda: (sums, squares, shape_stats, tf.zeros_like(sizes)),
        masked)
    means = sums / sizes
    stds = tf.sqrt(tf.maximum(squares / sizes - tf.square(means), 0.0))
    parts = {"mean": means, "std": stds, "nonfinite": nonfinite, "fraction": shape_stats}
    offsets, offset = {}, 0
    for key in parts:
        offsets[key] = offset
        offset += len(items) if key != "fraction" else fractions
    order = [offsets[key] + position for layer in index for key, position in layer]
    return tf.gather(tf.concat(list(parts.values()), 0), order), names


def _activation_shape_stats(tf, x, activation):
    """``saturated_fraction`` and ``dead_fraction`` where ``activation`` has them.

    A ReLU's output is positive or zero, so a unit is alive when its largest
    output over the batch is positive: one reduction, with nothing written back.
    """
    stats = {}
    if activation in ("sigmoid", "hard_sigmoid"):
        near = tf.logical_or(x < 0.01, x > 0.99)
        stats["saturated_fraction"] = tf.reduce_mean(tf.cast(near, "float32"))
    elif activation in SATURATING_ACTIVATIONS:
        stats["saturated_fraction"] = tf.reduce_mean(tf.cast(tf.abs(x) > 0.99, "float32"))
    if activation in RELU_FAMILY and len(x.shape) >= 2:
        alive = tf.reduce_max(x, axis=list(range(len(x.shape) - 1))) > 0.0
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


#: Losses (by name fragment) that read class probabilities or, with
#: ``from_logits=True``, logits.
_CROSSENTROPY = ("crossentropy", "binary_focal", "categorical_focal")


def describe_outputs(model, loss, targets=None) -> list:
    """What the output-configuration rules need, one dict per model output.

    Args:
        model: The model (its output layers and output widths are read).
        loss: The loss the probe trains with: a name, function or Loss object,
            or a list/dict of them for several outputs.
        targets: The user's target array (a list of them for several outputs),
            or None (synthetic data, a ``tf.data`` stream): then the targets
            are not described.

    Returns:
        ``[{"layer", "activation", "units", "loss", "loss_kind", "from_logits",
        "targets"}]``: ``activation`` is ``"linear"`` for a layer whose
        activation is the identity and None where the layer has none to read
        (a reshape); ``from_logits`` is None for a loss whose expectations
        cannot be read (a custom function); ``targets`` is
        :func:`describe_targets` of that output's targets, or None. Shapes and
        label ranges are checked when the data is loaded; what is described
        here is whether the output's activation can reach the targets at all.
    """
    from ..loading import output_layers
    from ..loading.loss import LossChoice, describe_loss
    from .outputs import describe_targets

    tensors = list(getattr(model, "outputs", None) or [])
    try:
        layers = output_layers(model)
    except (AttributeError, IndexError, TypeError, ValueError):
        # A model whose outputs cannot be traced to layers (subclassed, unbuilt):
        # the output rules then have nothing to judge, the probe goes on.
        return []
    names = [getattr(_compat.producer(t), "name", None) for t in tensors]
    described = []
    for position, layer in enumerate(layers):
        if isinstance(loss, dict):
            item = loss.get(names[position]) if position < len(names) else None
        elif isinstance(loss, (list, tuple)):
            item = loss[position] if position < len(loss) else None
        else:
            item = loss
        units = None
        if position < len(tensors) and tensors[position].shape and tensors[position].shape[-1] is not None:
            units = int(tensors[position].shape[-1])
        name = describe_loss(item) if item is not None else None
        activation = activation_name(layer)
        if activation is None and callable(getattr(layer, "activation", None)):
            # A layer that has an activation and it is linear: the output is
            # logits. A layer without one (a reshape) says nothing either way.
            activation = "linear"
        described.append({
            "layer": layer.name,
            "activation": activation,
            "units": units,
            "loss": name,
            "loss_kind": LossChoice(item, name, False).kind if name else None,
            "from_logits": _from_logits(item, name),
            "targets": describe_targets(_target_for(targets, position, len(layers))),
        })
    return described


def _target_for(targets, position: int, count: int):
    if targets is None:
        return None
    if isinstance(targets, (list, tuple)):
        return targets[position] if position < len(targets) else None
    return targets if count == 1 else None


def _from_logits(loss, name) -> bool | None:
    """Whether a crossentropy loss reads logits; None when that cannot be known."""
    if loss is None or not name or not any(part in name.lower() for part in _CROSSENTROPY):
        return None
    if isinstance(loss, str):
        return False
    flag = getattr(loss, "from_logits", None)
    if isinstance(flag, bool):
        return flag
    # Keras' own loss functions default to probabilities; a custom function's
    # expectations cannot be read.
    module = getattr(loss, "__module__", "") or ""
    return False if module.startswith("keras") else None
