"""The optimizer's update, and how large it was for each variable (traced).

``update_ratio`` needs ``||w_after - w_before||`` per layer.  A copy of every
weight from before the update costs a full pass over the parameters and their
memory on every step.  Keras' optimizers write every variable through their
public ``assign`` / ``assign_add`` / ``assign_sub`` methods, handing over the
update itself; :func:`apply_and_measure` records those values while the step
is traced, so the size of the update comes from the tensor the optimizer
computes anyway.  Where that cannot be relied on (weight decay and EMA write
variables another way; a loss-scaling or accumulating optimizer wraps or defers
the update; several replicas each write their own copy) it falls back to a
copy taken before the update, which measures the same quantity.
"""

from __future__ import annotations

import contextlib


class UpdatesNotSeen(RuntimeError):
    """The optimizer wrote some variable without going through its assign methods."""


def updates_can_be_recorded(optimizer, strategy=None) -> bool:
    """Whether :func:`apply_and_measure` may read the updates from ``optimizer``."""
    if strategy is not None:
        return False
    if getattr(optimizer, "inner_optimizer", None) is not None:  # LossScaleOptimizer
        return False
    return not (getattr(optimizer, "weight_decay", None) or getattr(optimizer, "use_ema", False)
                or getattr(optimizer, "gradient_accumulation_steps", None))


@contextlib.contextmanager
def _recording(tf, optimizer, variables):
    """Yield, per variable, the ``(sign, update)`` pairs the optimizer writes to it.

    The optimizer hands its ``update_step`` the backend variable behind each
    Keras variable (``.value``), so both are looked up.
    """
    index = {id(v): i for i, v in enumerate(variables)}
    index.update({id(getattr(v, "value", v)): i for i, v in enumerate(variables)})
    updates: list = [[] for _ in variables]

    def wrap(name):
        original = getattr(optimizer, name)

        def record(variable, value):
            position = index.get(id(variable))
            if position is not None:
                update = tf.cast(value, "float32")
                if name == "assign":
                    update = update - tf.cast(variable, "float32")
                updates[position].append((-1.0 if name == "assign_sub" else 1.0, update))
            return original(variable, value)

        return record

    names = ("assign", "assign_add", "assign_sub")
    for name in names:
        setattr(optimizer, name, wrap(name))
    try:
        yield updates
    finally:
        for name in names:
            with contextlib.suppress(AttributeError):
                delattr(optimizer, name)


def apply_and_measure(tf, optimizer, gradients, variables, record: bool, square_sums=None):
    """Apply ``gradients`` and return ``(weight_squares, delta_squares)``.

    ``weight_squares`` measure the weights before the update, ``delta_squares``
    the update, each as ``square_sums`` reduces a list of per-variable tensors
    (by default half the sum of squares of each, as ``tf.nn.l2_loss``; the probe
    passes :meth:`~.stats.LayerReductions.square_sums`, per layer).

    Raises:
        UpdatesNotSeen: ``record`` was asked for and some variable was written
            another way; trace again with ``record=False``.
    """
    if square_sums is None:
        def square_sums(tensors):
            return [tf.nn.l2_loss(tf.cast(t, "float32")) for t in tensors]
    weight_squares = square_sums([tf.cast(v, "float32") for v in variables])
    after_reads = tf.nest.flatten(weight_squares)
    if not record:
        before = [tf.identity(v) for v in variables]
        with tf.control_dependencies(after_reads):
            optimizer.apply(gradients, variables)
        deltas = square_sums([tf.cast(v, "float32") - tf.cast(b, "float32") for v, b in zip(variables, before)])
        return weight_squares, deltas
    # The norms read the weights before the update: done first, they need no copy.
    with tf.control_dependencies(after_reads), _recording(tf, optimizer, variables) as updates:
        optimizer.apply(gradients, variables)
    if any(not written for written in updates):
        raise UpdatesNotSeen("the optimizer wrote a variable without its assign methods")
    # A norm does not need the sign of a single write; several are summed with theirs.
    deltas = square_sums([written[0][1] if len(written) == 1 else tf.add_n([sign * u for sign, u in written])
                          for written in updates])
    return weight_squares, deltas
