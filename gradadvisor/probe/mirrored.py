"""The probe's training step across several devices, with ``tf.distribute``.

When more than one device is visible (two or more GPUs, or a CPU split into
logical devices), the probe and the search's confirmation run train with
``tf.distribute.MirroredStrategy``: the working copy and its optimizer are
created in the strategy's scope, and every step runs under ``strategy.run``.
One device keeps the plain single-device step, unchanged.

The statistics mean exactly what they mean on one device.  Each replica takes a
contiguous slice of the batch and weights its mean loss by its share of the
batch, so the replicas' gradients *sum* to the full batch's gradient; that sum
is what the optimizer applies and what the per-layer statistics describe.
Layer outputs and the gradients at recurrent inputs are gathered back into
full batches before they are measured.  (Batch normalization normalises each
replica's slice on its own, as ``fit()`` under the same strategy does, so a
model with it trains slightly differently on several devices.)
"""

from __future__ import annotations

import contextlib
import functools

from .._tf import import_keras
from ..errors import UsageError
from .gradients import forward_and_gradients
from .step import ProbeStep

#: Read by :func:`resolve_strategy`; an explicit strategy or None bypasses it.
AUTO = "auto"


def resolve_strategy(strategy=AUTO):
    """The ``tf.distribute`` strategy the probe should use, or None for one device.

    Args:
        strategy: ``"auto"``: the strategy whose scope is active if it has several
            replicas, else a MirroredStrategy over the visible GPUs when there are
            at least two, else over the logical CPUs when there are at least two,
            else None.  A ``tf.distribute.Strategy`` is used as given (None when it
            has a single replica).  None means one device.

    Raises:
        UsageError: ``strategy`` is none of these.
    """
    if strategy is None:
        return None
    tf, _ = import_keras()
    if isinstance(strategy, tf.distribute.Strategy):
        return strategy if strategy.num_replicas_in_sync > 1 else None
    if strategy != AUTO:
        raise UsageError(f"The 'strategy' parameter must be 'auto', None or a tf.distribute.Strategy. "
                         f"Got {strategy!r} instead.")
    if tf.distribute.has_strategy():
        active = tf.distribute.get_strategy()
        return active if active.num_replicas_in_sync > 1 else None
    for kind in ("GPU", "CPU"):
        devices = tuple(device.name for device in tf.config.list_logical_devices(kind))
        if len(devices) > 1:
            return _mirrored(devices)
    return None


@functools.lru_cache(maxsize=None)
def _mirrored(devices: tuple):
    # One strategy per set of devices: variables made in its scope (search
    # candidates) must be trained under that very strategy object.
    tf, _ = import_keras()
    return tf.distribute.MirroredStrategy(list(devices))


def usable_strategy(strategy, work, batch_size: int):
    """``(strategy or None, note or None)`` for training ``work``.

    Falls back to one device, with a note saying why, when ``work``'s variables
    were not created in the strategy's scope (a subclassed model trained in
    place) or a batch is smaller than the number of replicas.
    """
    if strategy is None:
        return None, None
    replicas = strategy.num_replicas_in_sync
    variables = [getattr(v, "value", v) for v in work.weights]
    if not all(strategy.extended.variable_created_in_scope(v) for v in variables):
        return None, (f"The model's variables were not created in the scope of the {replicas}-device "
                      f"{type(strategy).__name__}, so the probe ran on one device.")
    if batch_size < replicas:
        return None, (f"The batch size {batch_size} is smaller than the {replicas} devices, so the probe "
                      "ran on one device.")
    return strategy, None


def replicas_note(strategy) -> str:
    """The probe note saying which devices trained the model."""
    devices = ", ".join(getattr(strategy.extended, "worker_devices", ()) or ())
    return (f"Each step ran on {strategy.num_replicas_in_sync} devices with "
            f"{type(strategy).__name__} ({devices}); the statistics describe the whole batch.")


def scope(strategy):
    """``strategy.scope()``, or a context that does nothing for None."""
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


class MirroredProbe(ProbeStep):
    """The probe with each batch split across the strategy's replicas.

    Only the forward and backward pass differ from :class:`~gradadvisor.probe.step.ProbeStep`:
    it runs under ``strategy.run`` and returns full-batch quantities, so the
    update and every statistic are computed by the same code as on one device.
    """

    def __init__(self, *args, strategy, **kwargs):
        self.strategy = strategy
        super().__init__(*args, **kwargs)

    def _step_function(self):
        if not self.optimizer.built:
            with self.strategy.scope():
                self.optimizer.build(self.work.trainable_weights)
        return super()._step_function()

    def _gradients(self, x, y):
        tf, work, strategy = self.tf, self.work, self.strategy
        variables = work.trainable_weights
        # Facts known only while a replica is traced; every replica traces the
        # same graph, so the last one's are everyone's.
        traced: dict = {}

        def replica_step(x, y):
            context = tf.distribute.get_replica_context()
            replica, count = context.replica_id_in_sync_group, context.num_replicas_in_sync
            size = tf.shape(x[0])[0]
            start, end = replica * size // count, (replica + 1) * size // count
            x = [a[start:end] for a in x]
            y = [t[start:end] for t in y] if isinstance(y, list) else y[start:end]
            share = tf.cast(end - start, "float32") / tf.cast(size, "float32")
            # multiply_no_nan: an empty slice's NaN mean counts for nothing.
            result = forward_and_gradients(
                tf, work, lambda y_pred: tf.math.multiply_no_nan(tf.cast(self.loss_fn(y, y_pred), "float32"), share),
                lambda watch: self._forward(x, watch), variables=variables, model_loss_weight=1.0 / count)
            loss, tracer = result.loss, result.tracer
            rnn_paths = list(result.recurrent)
            variable_grads = [g if g is not None else tf.zeros_like(v) for v, g in zip(variables, result.gradients)]
            rnn = {p: g for p, g in result.recurrent.items() if g is not None}
            outputs = {}
            if tracer is not None:
                outputs = {p: o for p, o in tracer.outputs.items()
                           if isinstance(o, tf.Tensor) and o.dtype.is_floating}
                traced["order"] = list(tracer.order)
            traced["rnn_paths"] = rnn_paths
            return loss, variable_grads, outputs, rnn

        loss, grads, outputs, rnn = strategy.run(replica_step, args=(x, y))
        loss = strategy.reduce("SUM", loss, axis=None)
        grads = [strategy.reduce("SUM", g, axis=None) for g in grads]
        if not self.record_activations:
            return loss, grads, None, None, {}
        outputs = {path: self._gather(value) for path, value in outputs.items()}
        rnn = {path: self._gather(rnn[path]) if path in rnn else None for path in traced["rnn_paths"]}
        return loss, grads, traced["order"], outputs, rnn

    def _gather(self, per_replica):
        """The replicas' slices as one batch, keeping the static non-batch shape."""
        whole = self.strategy.gather(per_replica, axis=0)
        local = self.strategy.experimental_local_results(per_replica)[0]
        whole.set_shape([None] + list(local.shape[1:]))
        return whole
