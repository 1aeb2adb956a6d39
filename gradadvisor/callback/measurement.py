"""GradientMonitor's measurements: the statistics graph, the vector layout and the ProbeResult.

What both modes share; :mod:`.train_step` and :mod:`.probe_batch` build on it.
"""

from __future__ import annotations

import math

import numpy as np

from .findings import _first_nonfinite
from .tensorboard import _HISTOGRAM_BUCKETS, _histogram


class _Layout:
    """Where each number sits in a measurement vector, decided while tracing."""

    def __init__(self):
        self.entries: list = []   # (path, name, length)
        self.order: list = []     # layer paths in call order

    def reset(self):
        self.entries, self.order = [], []

    def add(self, path, name, length=1):
        self.entries.append((path, name, length))

    def parse(self, vector: np.ndarray) -> dict:
        """Split a measurement vector into the fields of one history entry."""
        header: dict = {}
        layers: dict = {}
        timesteps: dict = {}
        histograms: dict = {}
        offset = 0
        for path, name, length in self.entries:
            values = vector[offset:offset + length]
            offset += length
            if path == "":
                header[name] = float(values[0])
            elif name == "timestep_grad_norms":
                timesteps[path] = [float(v) for v in values]
            elif name == "histogram":
                histograms[path] = (float(values[0]), float(values[1]), values[2:].astype("float64"))
            else:
                layers.setdefault(path, {})[name] = float(values[0])
        return {
            "trigger": "schedule",
            "loss": header.get("loss", math.nan),
            "global_grad_norm": header.get("global_grad_norm", math.nan),
            "batch_size": int(header.get("batch_size", 0)),
            "layers": layers,
            "timestep_grad_norms": timesteps,
            "histograms": histograms,
        }


class _Measurement:
    """What both modes share: the statistics graph and the ProbeResult."""

    def __init__(self, monitor, model, tf, keras):
        from ..probe import is_graph_model

        self.monitor, self.model, self.tf, self.keras = monitor, model, tf, keras
        self.layout = _Layout()
        self.use_tracer = monitor.record_activations and is_graph_model(model, keras) \
            and _tracer_works(model, keras)
        note = (f"Layer outputs were not measured: the model '{model.name}' cannot be walked layer by "
                "layer (only Sequential and Functional models can).")
        if monitor.record_activations and not self.use_tracer and note not in monitor.notes:
            monitor.notes.append(note)
        self.groups = None
        self._infos = None
        self.histograms = monitor.tensorboard_dir is not None

    def forward(self, x, watch=None):
        """``(y_pred, tracer)``: the model's forward pass, recorded layer by layer when possible.

        ``watch`` (a tape's ``watch``) is called on each recurrent layer's input.
        """
        from ..probe import Tracer

        model, keras = self.model, self.keras
        if self.use_tracer:
            tracer = Tracer(keras, watch=watch)
            return tracer.run(model, _standardize_inputs(model, x, keras), training=True), tracer
        if getattr(model, "_call_has_training_arg", True):
            return model(x, training=True), None
        return model(x), None

    def ensure_groups(self):
        from ..probe import group_variables

        if self.groups is None:
            self.groups = group_variables(self.model, self.keras)
        return self.groups

    def activation_statistics(self, tracer):
        """``(order, entries, vector)``: every recorded layer output's statistics (traced).

        ``order`` lists the layer paths in call order, ``entries`` the
        ``(path, name)`` of each number of the float32 ``vector``.
        """
        from ..loading import activation_name
        from ..probe import layer_output_stats

        by_path = {path: layer for path, layer, _ in self.ensure_groups()}
        vector, entries = layer_output_stats(
            self.tf, tracer.outputs, tracer.order, lambda path: activation_name(by_path.get(path)))
        return list(tracer.order), entries, vector

    def statistics(self, loss, gradients_by_id, before_by_id, tracer, timestep_norms, batch_size,
                   gradient_scale=None, activations=None):
        """One float32 vector holding every statistic of this step (traced).

        ``activations``, an :meth:`activation_statistics` result computed
        elsewhere, takes the place of reducing ``tracer``'s layer outputs here.
        """
        from ..probe import layer_weight_stats

        tf, layout = self.tf, self.layout
        layout.reset()
        values = [tf.cast(loss, "float32")]
        layout.add("", "loss")
        total_sq = tf.constant(0.0)
        per_layer, histograms = [], []
        for path, _, group in self.groups:
            if not group:
                continue
            grads = [gradients_by_id.get(id(v)) for v in group]
            if gradient_scale is not None:
                grads = [None if g is None else tf.cast(g, "float32") / gradient_scale for g in grads]
            stats, square = layer_weight_stats(tf, group, grads, [before_by_id[id(v)] for v in group])
            total_sq = total_sq + square
            for name, value in stats.items():
                per_layer.append((path, name, value))
            if self.histograms:
                histograms.append((path, _histogram(tf, group, grads)))
        values.append(tf.sqrt(total_sq))
        layout.add("", "global_grad_norm")
        values.append(tf.cast(batch_size, "float32"))
        layout.add("", "batch_size")
        for path, name, value in per_layer:
            layout.add(path, name)
            values.append(value)
        if activations is None and tracer is not None:
            activations = self.activation_statistics(tracer)
        vector = [tf.stack([tf.cast(v, "float32") for v in values])]
        if activations is not None:
            layout.order, entries, activation_vector = activations
            for path, name in entries:
                layout.add(path, name)
            vector.append(activation_vector)
        for path, norms in timestep_norms:
            vector.append(norms)
            layout.add(path, "timestep_grad_norms", int(norms.shape[0]))
        for path, histogram in histograms:
            vector.append(histogram)
            layout.add(path, "histogram", _HISTOGRAM_BUCKETS + 2)
        return tf.concat(vector, 0)

    def entry(self, vector, step) -> dict:
        measurement = self.layout.parse(np.asarray(vector, dtype="float64"))
        measurement["step"] = int(step)
        return measurement

    def layer_infos(self):
        from ..probe import describe_layers

        if self._infos is None:
            self._infos = describe_layers(self.model, self.ensure_groups(), self.layout.order, self.keras)
        return self._infos

    def probe_result(self, window: list):
        from ..loading import resolve_loss
        from ..probe import ProbeResult, describe_optimizer

        model = self.model
        infos = self.layer_infos()
        stats: dict = {}
        timesteps: dict = {}
        for entry in window:
            for info in infos:
                for name, value in entry["layers"].get(info.name, {}).items():
                    stats.setdefault(info.name, {}).setdefault(name, []).append(value)
            for path, norms in entry["timestep_grad_norms"].items():
                timesteps.setdefault(path, []).append(norms)
        try:
            loss = resolve_loss(model)
            loss_name, loss_inferred = loss.name, loss.inferred
        except Exception:  # an unusual loss object only costs its name
            loss_name, loss_inferred = type(getattr(model, "loss", None)).__name__, False
        optimizer = describe_optimizer(model.optimizer) if getattr(model, "optimizer", None) else {}
        steps = [entry["step"] for entry in window]
        return ProbeResult(
            model_name=model.name, model_class=type(model).__name__,
            num_params=int(sum(int(np.prod(v.shape)) for v in model.trainable_weights)),
            loss_name=loss_name, loss_inferred=loss_inferred, optimizer=dict(optimizer, inferred=False),
            data_source=self.data_source, batch_size=window[-1]["batch_size"], num_steps=len(window),
            seed=0, layers=infos, loss=[entry["loss"] for entry in window],
            global_grad_norm=[entry["global_grad_norm"] for entry in window], stats=stats,
            timestep_grad_norms=timesteps, nonfinite=_first_nonfinite(window, infos),
            activations_recorded=self.use_tracer, copy_mode=self.monitor.mode,
            notes=[f"Measured by GradientMonitor during model.fit at training steps "
                   f"{', '.join(str(s) for s in steps)}."] + list(self.monitor.notes))


def _tracer_works(model, keras) -> bool:
    """Whether the layer-by-layer walk runs on this model (checked symbolically, no state changes)."""
    from ..probe import Tracer

    try:
        Tracer(keras).run(model, model.inputs, training=True)
        return True
    except Exception:
        return False


def _standardize_inputs(model, x, keras):
    """The inputs as ``model(x)`` would see them: ordered, converted, rank-adjusted."""
    target = getattr(model, "_functional", None) if isinstance(model, keras.Sequential) else model
    standardize = getattr(target, "_standardize_inputs", None)
    return standardize(x) if standardize is not None else x
