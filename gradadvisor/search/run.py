"""One training-and-measuring run, shared by trials and the confirmation, and its score.

A run trains the model with a plain compiled step (the fast part), then
probes it for a few more steps to judge its gradient health, then measures
its held-out loss.  The held-out loss before training is measured too, so a
run can say whether the model *learned*: a held-out loss at most
:data:`LEARNING_FACTOR` times its own start and, for a classifier, at most
that factor times the chance-level loss.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time

from .._tf import import_keras
from ..loading import Data
from .data import held_out

#: Score of a candidate whose loss or gradients became non-finite.
DIVERGED_SCORE = 1.0e6
#: Score (plus the held-out loss) of a candidate stopped early as hopeless.
HOPELESS_SCORE = 1.0e5
#: Added to the score of a candidate that trained without learning.
NOT_LEARNING_PENALTY = 1.0e3
#: A model learns when its held-out loss ends at most this factor times its
#: start (and, for a classifier, times the chance-level loss).
LEARNING_FACTOR = 0.9
#: A trial ends the search early (when the budget allows it) only if its
#: held-out loss is at most this factor times its start and chance: a trial
#: that learns by a hair at ``LEARNING_FACTOR`` may not learn in a
#: confirmation twice as long (a tanh network on raw breast-cancer features
#: went from 0.565 after 60 steps to 0.611 after 120, chance 0.657).
CLEAR_LEARNING_FACTOR = 0.8
#: Steps of the probe that ends each run; the rest train without statistics.
PROBE_STEPS = 15
_STATUS_PENALTY = {"healthy": 0.0, "warning": 10.0, "error": 100.0}


@dataclasses.dataclass
class RunResult:
    """How one model trained: probe measurements, health, learning and held-out numbers.

    Attributes:
        probe: The :class:`~gradadvisor.probe.ProbeResult` of the final probe
            (None when the run stopped before it).
        findings: The findings of that probe.
        status: ``healthy``, ``warning``, ``error``, ``diverged`` (non-finite
            loss or gradients) or ``stopped`` (cut off as hopeless).
        val_loss, val_metric: Held-out loss and accuracy after training.
        seconds: Wall time of the run.
        start_loss: Held-out loss before training.
        chance_loss: The chance-level loss of the task (None: not a classifier).
        losses: Training loss of every step, in order.
        stopped: Why training stopped early (None if it ran every step).
        step_seconds: CPU seconds of this process per plain training step
            (tracing excluded), which a busy machine does not inflate.
    """

    probe: object
    findings: list
    status: str
    val_loss: float | None
    val_metric: float | None
    seconds: float
    start_loss: float | None = None
    chance_loss: float | None = None
    losses: list = dataclasses.field(default_factory=list)
    stopped: str | None = None
    step_seconds: float | None = None

    @property
    def learns(self) -> bool:
        """Whether the held-out loss fell clearly below its start and below chance."""
        if self.val_loss is None or self.status in ("diverged", "stopped"):
            return False
        if self.start_loss is not None and not self.val_loss <= LEARNING_FACTOR * self.start_loss:
            return False
        return self.chance_loss is None or self.val_loss <= LEARNING_FACTOR * self.chance_loss

    @property
    def learns_clearly(self) -> bool:
        """Whether it learns with a margin: :attr:`learns`, at :data:`CLEAR_LEARNING_FACTOR`."""
        if not self.learns:
            return False
        bounds = [b for b in (self.start_loss, self.chance_loss) if b is not None]
        return all(self.val_loss <= CLEAR_LEARNING_FACTOR * bound for bound in bounds)

    @property
    def score(self) -> float:
        """Lower is better: learning first, then gradient health, then held-out loss."""
        if self.status == "diverged" or self.val_loss is None or not math.isfinite(self.val_loss):
            return DIVERGED_SCORE
        if self.status == "stopped":
            return HOPELESS_SCORE + min(self.val_loss, HOPELESS_SCORE / 10)
        penalty = 0.0 if self.learns else NOT_LEARNING_PENALTY
        return penalty + _STATUS_PENALTY[self.status] + min(self.val_loss, NOT_LEARNING_PENALTY / 10)

    def summary(self) -> dict:
        return {"loss": list(self.losses), "val_loss": self.val_loss, "val_metric": self.val_metric,
                "start_val_loss": self.start_loss, "chance_loss": self.chance_loss, "learns": self.learns,
                "stopped": self.stopped, "status": self.status,
                "findings": sorted({f.rule for f in self.findings})}


def train_and_measure(model, train: Data, val: Data, *, steps: int, batch_size: int, seed: int,
                      rules: dict, in_place: bool, loss, kind: str, strategy=None, chance_loss=None,
                      cut_off: bool = False) -> RunResult:
    """Train ``model`` (or a copy) for ``steps`` steps, probe the end, then evaluate it.

    With a ``tf.distribute`` strategy, an in-place ``model`` must have been
    built in its scope; a copy is made in it, and every step is a probe step.

    Args:
        cut_off: Stop early when the loss trend shows the run is hopeless
            (see :func:`hopeless`); for trials, not for the confirmation.
    """
    from ..probe import make_working_copy, make_loss_function

    _, keras = import_keras()
    started = time.perf_counter()
    loss_fn = make_loss_function(loss, keras)
    probe_steps = steps if strategy is not None else min(steps, PROBE_STEPS)
    with make_working_copy(model, keras, in_place, strategy) as (work, _):
        calibration = train if strategy is None else None
        start_loss, _ = held_out(work, loss_fn, val, kind, calibration)
        start_loss = start_loss if math.isfinite(start_loss) else None
        losses, stopped, step_seconds = _train(work, model, train, steps - probe_steps, batch_size, seed,
                                               loss_fn, cut_off, steps)
        result = RunResult(None, [], "stopped", None, None, 0.0, start_loss, chance_loss, losses, stopped,
                           step_seconds)
        if stopped == "non-finite loss":
            result.status = "diverged"
        elif stopped is None:
            _probe_and_evaluate(result, work, train, val, probe_steps, batch_size, seed, rules, loss_fn, kind,
                                strategy)
        else:
            val_loss, result.val_metric = held_out(work, loss_fn, val, kind, calibration)
            result.val_loss = val_loss if math.isfinite(val_loss) else None
    result.seconds = time.perf_counter() - started
    return result


def _probe_and_evaluate(result: RunResult, work, train, val, steps, batch_size, seed, rules, loss_fn, kind,
                        strategy) -> None:
    from ..analysis.diagnosis import Diagnosis
    from ..analysis.engine import evaluate
    from ..probe import run_probe

    probe = run_probe(work, train, steps=steps, batch_size=min(batch_size, train.num_samples),
                      seed=seed + 1, in_place=True, strategy=strategy)
    result.probe, result.findings = probe, evaluate(probe, rules)
    result.losses += list(probe.loss)
    result.status = Diagnosis(probe=probe, findings=result.findings).status
    if probe.nonfinite:
        result.status, result.val_loss = "diverged", None
        return
    val_loss, result.val_metric = held_out(work, loss_fn, val, kind, train if strategy is None else None)
    if math.isfinite(val_loss):
        result.val_loss = val_loss
    else:
        result.status = "diverged"


def _train(work, model, train: Data, steps: int, batch_size: int, seed: int, loss_fn, cut_off: bool,
           total_steps: int) -> tuple:
    """``(losses, why stopped or None, CPU seconds per step)``: plain training steps, no statistics.

    ``work`` trains with a fresh copy of ``model``'s optimizer, as the probe does.
    """
    from ..probe.working_copy import fresh_optimizer
    from ..probe.batches import training_batches

    tf, keras = import_keras()
    if steps <= 0:
        return [], None, None
    variables = work.trainable_weights
    optimizer, _ = fresh_optimizer(model, keras)
    optimizer.build(variables)

    def step(x, y):
        with tf.GradientTape() as tape:
            prediction = work(x[0] if len(x) == 1 else x, training=True)
            value = loss_fn(y, prediction)
            if work.losses:
                value = value + tf.add_n([tf.cast(extra, value.dtype) for extra in work.losses])
        gradients = tape.gradient(value, variables)
        optimizer.apply([g if g is not None else tf.zeros_like(v) for g, v in zip(gradients, variables)],
                        variables)
        return value

    step = tf.function(step, autograph=False)
    names = [getattr(t, "name", "") for t in (getattr(work, "inputs", None) or [])]
    batches = training_batches(train, min(batch_size, train.num_samples), seed, names)
    losses, timed_from = [], None
    for index in range(steps):
        x, y = next(batches)
        x = [tf.convert_to_tensor(a) for a in x]
        y = [tf.convert_to_tensor(t) for t in y] if isinstance(y, list) else tf.convert_to_tensor(y)
        losses.append(float(step(x, y)))
        if index == 0:
            timed_from = time.process_time()
        if not math.isfinite(losses[-1]):
            return losses, "non-finite loss", None
        reason = hopeless(losses, total_steps) if cut_off else None
        if reason:
            return losses, reason, _per_step(timed_from, len(losses) - 1)
    return losses, None, _per_step(timed_from, steps - 1)


def _per_step(since, count) -> float | None:
    return None if since is None or count < 1 else (time.process_time() - since) / count


def hopeless(losses: list, total_steps: int) -> str | None:
    """Why a run whose training losses so far are ``losses`` cannot end up learning, or None.

    The loss-trend cut-off: after a fifth of the run, a loss (median of the
    last five steps) over three times its start (median of the first five)
    is climbing away; after three fifths, a loss no lower than its start has
    not moved.  Medians keep one noisy batch from deciding.
    """
    done = len(losses)
    if done < max(10, total_steps // 5):
        return None
    start, recent = statistics.median(losses[:5]), statistics.median(losses[-5:])
    if recent > 3.0 * start:
        return f"loss rising ({start:.3g} to {recent:.3g} in {done} steps)"
    if done >= 0.6 * total_steps and recent >= start:
        return f"loss not falling ({start:.3g} to {recent:.3g} in {done} steps)"
    return None
