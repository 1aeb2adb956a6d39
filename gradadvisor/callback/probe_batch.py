"""GradientMonitor's mode "probe_batch": a separate forward and backward pass on a fixed batch."""

from __future__ import annotations

import math

from .. import _compat
from .measurement import _Measurement


class _ProbeBatch(_Measurement):
    """Mode "probe_batch": a separate forward and backward pass on a fixed batch."""

    data_source = "probe_data passed to GradientMonitor"

    def __init__(self, monitor, model, tf, keras):
        super().__init__(monitor, model, tf, keras)
        data = monitor.probe_data
        self.x = keras.tree.map_structure(tf.convert_to_tensor, data[0])
        self.y = keras.tree.map_structure(tf.convert_to_tensor, data[1])
        self.sample_weight = tf.convert_to_tensor(data[2]) if len(data) == 3 and data[2] is not None else None
        self.snapshots = None
        self.function = None
        self.snapshot_function = None
        self.has_snapshot = False

    def _ensure_snapshots(self):
        tf = self.tf
        self.ensure_groups()
        if self.snapshots is None:
            variables = [v for _, _, group in self.groups for v in group]
            self.snapshots = {id(v): tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False)
                              for v in variables}

            def copy():
                for v in variables:
                    self.snapshots[id(v)].assign(v)

            self.snapshot_function = tf.function(copy, autograph=False)

    def before_step(self):
        """Copy the weights before a measured step, for its update size."""
        self._ensure_snapshots()
        self.snapshot_function()
        self.has_snapshot = True

    def measure(self, step: int) -> dict:
        tf = self.tf
        self._ensure_snapshots()
        if self.function is None:
            self.function = tf.function(self._statistics_step, autograph=False)
        vector = self.function()
        measurement = self.entry(vector.numpy(), step)
        if not self.has_snapshot:
            # Without a copy from before this step there is no update to measure.
            for stats in measurement["layers"].values():
                if "update_ratio" in stats:
                    stats["update_ratio"] = math.nan
        self.has_snapshot = False
        return measurement

    def _statistics_step(self):
        from ..probe import forward_and_gradients, timestep_norms

        tf, model = self.tf, self.model
        # Reading every non-trainable variable first and writing it back last
        # leaves batch-norm statistics and dropout seeds as training left them.
        saved = [(v, tf.identity(v)) for v in model.non_trainable_variables]
        x, y = self.x, self.y
        weights = [v for _, _, group in self.groups for v in group]
        # Keras' compute_loss adds the model's own losses itself.
        result = forward_and_gradients(
            tf, model, lambda y_pred: _compat.compute_loss(model, x=x, y=y, y_pred=y_pred,
                                                           sample_weight=self.sample_weight, training=True),
            lambda watch: self.forward(x, watch), variables=weights, model_loss_weight=None)
        loss, tracer, gradients = result.loss, result.tracer, result.gradients
        timesteps = [(path, timestep_norms(tf, gradient)) for path, gradient in result.recurrent.items()]
        batch_size = tf.shape(next(i for i in self.keras.tree.flatten(x) if i is not None))[0]
        vector = self.statistics(loss, {id(v): g for v, g in zip(weights, gradients)}, self.snapshots, tracer,
                                 [(path, norms) for path, norms in timesteps if norms is not None], batch_size)
        with tf.control_dependencies([vector]):
            for variable, value in saved:
                variable.assign(value)
            return tf.identity(vector)

    def restore(self):
        pass
