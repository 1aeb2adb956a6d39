"""The compiled training step the probe runs, and what it reduces to scalars.

:class:`ProbeStep` runs one probe over a working copy: each step is one
``tf.function`` that runs the forward pass layer by layer, computes the loss and
gradients, applies the optimizer and reduces every statistic in the graph.
:class:`~.mirrored.MirroredProbe` changes only the forward and backward pass.
"""

from __future__ import annotations

import math

import numpy as np

from ..loading import activation_name
from .batches import training_batches
from .gradients import forward_and_gradients, model_forward
from .stats import (BATCHED_VARIABLE_SIZE, WEIGHT_STATS, LayerReductions, describe_layers, group_variables,
                    layer_output_stats, timestep_norms, weight_stats_matrix)
from .updates import UpdatesNotSeen, apply_and_measure, updates_can_be_recorded
from .walk import is_graph_model


class ProbeStep:
    """One probe run over a working copy; :meth:`run` returns ProbeResult fields."""

    #: Variables of at most this many entries have their statistics reduced
    #: together (:class:`~.stats.LayerReductions`); 0 reduces each on its own.
    batched_variable_size = BATCHED_VARIABLE_SIZE

    def __init__(self, work, tf, keras, record_activations, loss_fn, optimizer):
        self.work, self.tf, self.keras = work, tf, keras
        self.loss_fn, self.optimizer = loss_fn, optimizer
        self.record_activations = record_activations and is_graph_model(work, keras)
        self.groups = self._group_variables()
        self.record_updates = updates_can_be_recorded(optimizer, getattr(self, "strategy", None))
        self.layout: list = []
        self.timestep_layout: list = []
        self.order: list = []

    def _group_variables(self):
        return group_variables(self.work, self.keras)

    def _step_function(self):
        tf, work = self.tf, self.work
        variables = work.trainable_weights
        optimizer = self.optimizer
        # Creating the optimizer's slots inside the first trace would force a
        # second trace; fit() builds them up front too.
        if not optimizer.built:
            optimizer.build(variables)
        groups = [(path, group) for path, _, group in self.groups if group]
        sizes = [float(sum(int(np.prod(v.shape)) for v in group)) for _, group in groups]
        layer_of = {id(v): number for number, (_, group) in enumerate(groups) for v in group}
        reductions = LayerReductions([v.shape for v in variables], [layer_of[id(v)] for v in variables],
                                     len(groups), self.batched_variable_size)

        def step(x, y):
            self.layout, self.timestep_layout = [], []
            loss, variable_grads, order, outputs, rnn_grads = self._gradients(x, y)
            variable_grads = [g if g is not None else tf.zeros_like(v) for v, g in zip(variables, variable_grads)]
            weight_squares, delta_squares = apply_and_measure(
                tf, optimizer, variable_grads, variables, self.record_updates,
                lambda tensors: reductions.square_sums(tf, tensors))
            matrix, total_square = weight_stats_matrix(
                tf, [tf.cast(g, "float32") for g in variable_grads], weight_squares, delta_squares, reductions, sizes)
            self.layout.append(("", "loss"))
            self.layout.extend((path, name) for path, _ in groups for name in WEIGHT_STATS)
            self.layout.append(("", "global_grad_norm"))
            values = [tf.reshape(tf.cast(loss, "float32"), [1]), tf.reshape(matrix, [-1]),
                      tf.reshape(tf.sqrt(total_square), [1])]
            if order is not None:
                self.order = list(order)
                vector, entries = layer_output_stats(
                    tf, outputs, order, lambda path: activation_name(self._layer_by_path(path)))
                self.layout.extend(entries)
                values.append(vector)
            timestep_values = []
            for path, grad in rnn_grads.items():
                norms = timestep_norms(tf, grad)
                if norms is not None:
                    self.timestep_layout.append((path, int(norms.shape[0])))
                    timestep_values.append(norms)
            vector = tf.concat(values, 0)
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
        result = forward_and_gradients(self.tf, self.work, lambda y_pred: self.loss_fn(y, y_pred),
                                       lambda watch: self._forward(x, watch))
        tracer = result.tracer
        if tracer is None:
            return result.loss, result.gradients, None, None, {}
        return result.loss, result.gradients, tracer.order, tracer.outputs, result.recurrent

    def _forward(self, x, watch):
        """``(y_pred, tracer)``: the forward pass, leaf by leaf when outputs are recorded.

        Shared by the single-device step and each replica of the multi-device one.
        """
        return model_forward(self.keras, self.work, x[0] if len(x) == 1 else x, self.record_activations, watch)

    def _layer_by_path(self, path):
        for name, layer, _ in self.groups:
            if name == path:
                return layer
        return None

    def run(self, data, steps, batch_size, seed, progress):
        tf = self.tf
        step = self._step_function()
        names = [getattr(t, "name", "") for t in (getattr(self.work, "inputs", None) or [])]
        batches = training_batches(data, batch_size, seed, names)
        vectors, timestep_vectors = [], []
        nonfinite = None
        watched = None
        for index in range(steps):
            x, y = next(batches)
            x = [tf.convert_to_tensor(a) for a in x]
            y = [tf.convert_to_tensor(t) for t in y] if isinstance(y, list) else tf.convert_to_tensor(y)
            vector, timesteps = self._call(step, x, y, first=index == 0)
            if index == 0:
                step = self._step
                # The loss and every non-finite count: what the early stop reads each step.
                watched = np.array([i for i, (path, name) in enumerate(self.layout)
                                    if (path, name) == ("", "loss") or name.startswith("nonfinite_")])
            vector = vector.numpy()
            vectors.append(vector)
            timestep_vectors.append(timesteps.numpy())
            if progress is not None:
                progress(index + 1, steps)
            flags = vector[watched]
            if not (math.isfinite(float(flags[0])) and not flags[1:].any()):
                stats, losses = self._parse(vectors)[:2]
                nonfinite = self._first_nonfinite(index, stats, losses)
                if nonfinite is not None:
                    break
        stats, losses, global_norms = self._parse(vectors)
        timestep_norms: dict = {}
        for values in timestep_vectors:
            offset = 0
            for path, length in self.timestep_layout:
                timestep_norms.setdefault(path, []).append(
                    values[offset:offset + length].astype("float64").tolist())
                offset += length
        return {
            "layers": self._layer_infos(),
            "loss": losses,
            "global_grad_norm": global_norms,
            "stats": stats,
            "timestep_grad_norms": timestep_norms,
            "nonfinite": nonfinite,
            "activations_recorded": self.record_activations,
        }

    def _call(self, step, x, y, first):
        """Run one step; on the first, fall back where tracing fails (see below)."""
        self._step = step
        try:
            return step(x, y)
        except UpdatesNotSeen:
            # The optimizer writes some variable another way: measure updates from copies.
            self.record_updates = False
        except Exception:
            if not (first and self.record_activations):
                raise
            # The layer-by-layer walk relies on Keras internals; fall back to a
            # plain forward pass (weights and gradients only) rather than fail.
            self.record_activations = False
        return self._call(self._step_function(), x, y, first)

    def _parse(self, vectors):
        """``(stats, losses, global_norms)`` from the steps' vectors, in float64."""
        table = np.stack(vectors).astype("float64")
        stats: dict = {}
        losses, global_norms = [], []
        for column, (path, name) in enumerate(self.layout):
            series = table[:, column].tolist()
            if path == "":
                if name == "loss":
                    losses = series
                else:
                    global_norms = series
            else:
                stats.setdefault(path, {})[name] = series
        return stats, losses, global_norms

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
