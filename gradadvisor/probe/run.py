"""The probe itself: :func:`run_probe` and the compiled step it runs.

:func:`run_probe` checks its arguments, sets up the working copy, loss and
optimizer, and turns what :class:`~.step.ProbeStep` measured into a :class:`ProbeResult`.
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable

import numpy as np

from .._tf import import_keras
from ..errors import UsageError
from ..loading import Data, resolve_loss, synthetic_data
from .result import ProbeResult
from .stats import describe_outputs
from .step import ProbeStep
from .working_copy import fresh_optimizer, make_working_copy, describe_optimizer, make_loss_function


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
            See :mod:`gradadvisor.probe.mirrored`; the numbers are the same.

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
    # Synthetic targets are made up to fit the output, so they say nothing of it.
    user_targets = data.y if data is not None else None
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
    started, cpu_started = time.perf_counter(), time.process_time()
    with make_working_copy(model, keras, in_place, strategy) as (work, copy_mode):
        loss_choice = resolve_loss(model, data.y if data.y is not None and not isinstance(data.y, list) else None)
        strategy, strategy_note = usable_strategy(strategy, work, batch_size)
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            optimizer, optimizer_inferred = fresh_optimizer(model, keras)
        loss_fn = make_loss_function(loss_choice.loss, keras)
        if strategy is None:
            probe = ProbeStep(work, tf, keras, record_activations, loss_fn, optimizer)
        else:
            probe = MirroredProbe(work, tf, keras, record_activations, loss_fn, optimizer, strategy=strategy)
        result = probe.run(data, steps, batch_size, seed, progress)
    result.update(
        model_name=model.name, model_class=type(model).__name__,
        num_params=int(sum(np.prod(v.shape) for v in model.trainable_weights)),
        loss_name=loss_choice.name, loss_inferred=loss_choice.inferred,
        optimizer=dict(describe_optimizer(optimizer), inferred=optimizer_inferred),
        data_source=data.source, batch_size=batch_size, num_steps=steps, seed=seed,
        copy_mode=copy_mode, seconds=round(time.perf_counter() - started, 3),
        cpu_seconds=round(time.process_time() - cpu_started, 3),
        outputs=describe_outputs(model, loss_choice.loss, user_targets))
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
