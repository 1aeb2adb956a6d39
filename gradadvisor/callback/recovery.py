"""GradientMonitor's ``on_problem="recover"``: the host snapshot, the remedies, the rebuilt train functions.

What a recovery does, in order:

1. Restore the snapshot: every variable of the model (weights, batch-norm
   statistics, dropout seeds) and of its optimizer (slots and ``iterations``,
   so a learning-rate schedule goes back to the snapshot's step too), as they
   were after the last healthy measurement.  The learning-rate variable of an
   optimizer with a float learning rate is not part of the snapshot: it is a
   setting (other callbacks change it), not training state.
2. Apply the remedies. A learning rate that rose more than
   :data:`RATE_ROSE` times since the snapshot's weights were trained is
   capped at the rate of then (:func:`rate_rise`, :func:`cap_learning_rate`),
   and nothing else changes: the rise is the likely cause.  Otherwise they
   escalate from one recovery to the next (see :func:`_plan`): global
   gradient clipping at a norm taken from the healthy measurements first,
   then the learning rate scaled down.
3. Rebuild the train functions when a remedy changed something they read
   while tracing (clipping, a learning-rate schedule).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from .. import _compat

#: The fixes a rollback can apply in flight; findings whose rules name neither
#: (vanishing gradients, dead units) are structural and only warned about.
RECOVERABLE_FIXES = ("clipping", "learning_rate")
#: The clipping norm is this percentile of the recent healthy measurements' global gradient norms.
CLIP_PERCENTILE = 90.0
#: How many of the most recent healthy global gradient norms the clipping norm is taken from.
#: Gradient norms drift as a model learns (the recovery benchmark's relu LSTM at rate 0.05: 0.16-0.35 over
#: its first 42 steps, 0.4-5.5 over steps 47-117): the measurements nearest the problem say
#: what a healthy step of the model being trained now looks like, not the early ones.
NUM_HEALTHY_NORMS = 5
#: A learning rate above this many times the one the restored snapshot was trained at is capped at it.
RATE_ROSE = 2.0


class _Snapshot:
    """One copy, on the host, of a model's and its optimizer's variables.

    The buffers are NumPy arrays allocated once and overwritten in place at
    each :meth:`take`, so the memory held is :attr:`num_bytes`, the sum of the
    variables' sizes, whatever the number of snapshots taken.
    """

    def __init__(self):
        self.variables: list = []
        self.buffers: list = []
        # The compiled metrics' and loss tracker's running state, restored when
        # the snapshot is of the same epoch, so an epoch's logs cover the kept steps.
        self.metric_variables: list = []
        self.metric_buffers: list = []
        self.epoch: int | None = None
        self.epoch_progress: tuple = (0, 0.0)
        self.step: int | None = None   # the last training step whose update the snapshot holds
        self.iterations: int | None = None
        self.num_taken = 0
        self.rate: float | None = None  # a float learning rate's value when taken (a schedule's is recomputed)
        self.has_metrics = False  # whether the last copy holds the metrics' state
        self.read = self.read_metrics = list  # set up (traced) when the variables to read are known
        self._iterations_index: int | None = None

    @property
    def num_bytes(self) -> int:
        return int(sum(buffer.nbytes for buffer in self.buffers + self.metric_buffers))

    @staticmethod
    def variables_of(model) -> list:
        """The variables a snapshot holds, in a fixed order (deduplicated by identity)."""
        found, seen = [], set()
        optimizer = getattr(model, "optimizer", None)
        optimizer_variables = list(optimizer.variables) if optimizer is not None else []
        optimizer_ids = {id(v) for v in optimizer_variables}
        for variable in list(model.variables) + optimizer_variables:
            if id(variable) in seen:
                continue
            if id(variable) in optimizer_ids and variable.name == "learning_rate":
                continue  # a setting, not state: see the module documentation
            seen.add(id(variable))
            found.append(variable)
        return found

    @staticmethod
    def size_of(variables) -> int:
        return int(sum(int(np.prod(v.shape)) * np.dtype(_numpy_dtype(v)).itemsize for v in variables))

    def take(self, model, step: int, epoch: int | None, epoch_progress: tuple, variables=None,
             metrics: bool = True) -> bool:
        """Copy the variables now; True when a copy was set up anew (its time includes a trace).

        ``metrics=False`` leaves the compiled metrics out: a snapshot of the
        weights a ``fit`` begins with never restores them (the epoch's
        metrics restart), and at that point Keras has not built its compiled
        metrics yet, so reading them would set up a copy that the first
        step's new metric variables make stale at once.
        """
        variables = self.variables_of(model) if variables is None else variables
        rebuilt = False
        if [id(v) for v in variables] != [id(v) for v in self.variables]:
            self.variables = variables
            self.buffers = [np.empty(tuple(v.shape), _numpy_dtype(v)) for v in variables]
            self.read = _read_function(variables)
            optimizer = getattr(model, "optimizer", None)
            iterations = getattr(optimizer, "iterations", None)
            self._iterations_index = next(
                (i for i, v in enumerate(variables) if v is iterations), None)
            rebuilt = True
        # One call reads every variable: per-variable eager reads cost far more than the copies.
        for value, buffer in zip(self.read(), self.buffers):
            np.copyto(buffer, value.numpy().reshape(buffer.shape))
        self.has_metrics = metrics
        if metrics:
            metric_variables = list(getattr(model, "metrics_variables", []))
            if [id(v) for v in metric_variables] != [id(v) for v in self.metric_variables]:
                self.metric_variables = metric_variables
                self.metric_buffers = [np.empty(tuple(v.shape), _numpy_dtype(v)) for v in metric_variables]
                self.read_metrics = _read_function(metric_variables) if metric_variables else list
                rebuilt = True
            for value, buffer in zip(self.read_metrics(), self.metric_buffers):
                np.copyto(buffer, value.numpy().reshape(buffer.shape))
        self.epoch, self.epoch_progress = epoch, epoch_progress
        self.step = int(step)
        # The optimizer's step count is one of the variables just copied: no second read.
        self.iterations = None if self._iterations_index is None else \
            int(self.buffers[self._iterations_index])
        self.num_taken += 1
        return rebuilt

    def restore(self, model, epoch: int, metrics: bool = True) -> tuple:
        """Assign the copies back; ``(epoch_steps, epoch_mean_loss)`` the epoch's logs restart from."""
        for variable, buffer in zip(self.variables, self.buffers):
            variable.assign(buffer)
        if not metrics:
            return None
        if epoch == self.epoch and self.has_metrics and self.metric_variables:
            for variable, buffer in zip(self.metric_variables, self.metric_buffers):
                variable.assign(buffer)
            return self.epoch_progress
        model.reset_metrics()
        return 0, 0.0


def _read_function(variables: list):
    """A traced function returning the current value of every variable, in order."""
    from .._tf import import_keras

    tf, _ = import_keras()
    return tf.function(lambda: [tf.identity(v.value) for v in variables], autograph=False)


def _numpy_dtype(variable) -> str:
    dtype = variable.dtype
    return getattr(dtype, "name", None) or str(dtype)


def clip_norm_from(norms) -> float | None:
    """The clipping norm: :data:`CLIP_PERCENTILE` of the finite, positive healthy norms."""
    values = np.asarray([n for n in norms if math.isfinite(n) and n > 0], dtype="float64")
    if values.size == 0:
        return None
    return float(np.percentile(values, CLIP_PERCENTILE))


def _plan(candidates: set, clipped_by_monitor: bool, repeated: bool) -> tuple:
    """``(clip, scale_learning_rate)``: what this recovery changes.

    The first recovery that may clip installs clipping alone: it tames a
    gradient spike without slowing the rest of training.  If the run diverges
    again before a new healthy snapshot (``repeated``: the same snapshot is
    restored again), the remedy did not hold and the learning rate is scaled
    down (or, for a finding that names clipping but not the learning rate,
    the clipping tightened).  A problem after healthy training under the
    remedy (a bad batch, say) is rolled back and skipped, with no new change.
    A problem that calls for the learning rate alone (a loss that climbs
    with no spike) has it scaled down every time.
    """
    clip = "clipping" in candidates
    scale = "learning_rate" in candidates
    if clip and not clipped_by_monitor:
        return True, False
    if clip and not repeated and clipped_by_monitor:
        return False, False
    if scale:
        return False, True
    return clip, False


def rate_now(optimizer, keras, iterations=None) -> float | None:
    """The learning rate in effect: a schedule's at ``iterations`` (default: the optimizer's), or the variable's."""
    setting = _compat.optimizer_learning_rate_setting(optimizer)
    try:
        if isinstance(setting, keras.optimizers.schedules.LearningRateSchedule):
            step = optimizer.iterations if iterations is None else iterations
            return float(np.asarray(setting(step)))
        if is_schedule(setting, keras):
            return float(np.asarray(setting()))
        return float(np.asarray(optimizer.learning_rate))
    except (TypeError, ValueError):
        return None


def rate_rise(optimizer, snapshot, keras, now: float | None) -> float | None:
    """How many times the rate ``now`` exceeds the one the snapshot was trained at (None when unknown).

    A schedule's rate at the snapshot is recomputed from its step count; a
    float rate's is the value :class:`_Snapshot` recorded (the variable is a
    setting the snapshot does not restore).
    """
    if now is None:
        return None
    setting = _compat.optimizer_learning_rate_setting(optimizer)
    if isinstance(setting, keras.optimizers.schedules.LearningRateSchedule):
        then = None if snapshot.iterations is None else rate_now(optimizer, keras, snapshot.iterations)
    else:
        then = snapshot.rate
    if then is None or not then > 0 or not math.isfinite(now):
        return None
    return now / then


def apply_clipping(optimizer, norm: float) -> tuple:
    """Set the optimizer's global gradient clipping; ``(changed, text)``."""
    if getattr(optimizer, "clipnorm", None) or getattr(optimizer, "clipvalue", None):
        kind = "clipnorm" if getattr(optimizer, "clipnorm", None) else "clipvalue"
        return False, (f"gradient clipping unchanged: the optimizer already has {kind}="
                       f"{getattr(optimizer, kind):.3g} and Keras allows one kind of clipping at a time")
    current = getattr(optimizer, "global_clipnorm", None)
    if current and current <= norm:
        return False, f"gradient clipping unchanged: global_clipnorm is already {current:.3g}"
    optimizer.global_clipnorm = float(norm)
    return True, f"global gradient clipping at norm {norm:.3g}"


def scale_learning_rate(optimizer, factor: float, keras) -> tuple:
    """Scale the learning rate by ``factor`` on top of what the user gave; ``(needs_retrace, text)``.

    A float learning rate is a variable: it is assigned the scaled value. A
    :class:`~keras.optimizers.schedules.LearningRateSchedule` (or a callable)
    is wrapped, not replaced, so the schedule still decides the rate and the
    factor multiplies it; a wrapped one has its factor multiplied again.
    """
    current = _compat.optimizer_learning_rate_setting(optimizer)
    if is_schedule(current, keras):
        wrapper = _wrapped_schedule(optimizer, current)
        wrapper.scale *= factor
        return True, f"learning rate scaled by {factor:g} (now {wrapper.scale:.3g}x the schedule)"
    value = float(np.asarray(optimizer.learning_rate))
    optimizer.learning_rate = value * factor
    return False, f"learning rate scaled by {factor:g} (from {value:.3g} to {value * factor:.3g})"


def cap_learning_rate(optimizer, ceiling: float, keras) -> tuple:
    """Keep the learning rate at most ``ceiling`` from now on; ``(needs_retrace, text)``.

    A float rate is assigned the ceiling if above it; a schedule is wrapped
    (or its wrapper given the ceiling) so it keeps deciding the rate below
    the ceiling, and a later scaling scales the ceiling too.
    """
    current = _compat.optimizer_learning_rate_setting(optimizer)
    if is_schedule(current, keras):
        wrapper = _wrapped_schedule(optimizer, current)
        raw = ceiling / wrapper.scale
        wrapper.ceiling = raw if wrapper.ceiling is None else min(wrapper.ceiling, raw)
        return True, f"learning rate capped at {ceiling:.3g} (the schedule keeps deciding it below that)"
    value = float(np.asarray(optimizer.learning_rate))
    optimizer.learning_rate = min(value, ceiling)
    return False, f"learning rate capped at {ceiling:.3g} (from {value:.3g})"


def is_schedule(setting, keras) -> bool:
    """Whether an optimizer's learning-rate setting is a schedule or another callable, not a variable."""
    return isinstance(setting, keras.optimizers.schedules.LearningRateSchedule) or (
        callable(setting) and not hasattr(setting, "assign"))


def _wrapped_schedule(optimizer, schedule):
    """The optimizer's schedule wrapped for scaling and capping (wrapped now, at factor 1, if it is not yet)."""
    scaled_class = _scaled_schedule_class()
    if not isinstance(schedule, scaled_class):
        schedule = optimizer.learning_rate = scaled_class(schedule, 1.0)
    return schedule


@functools.lru_cache(maxsize=1)
def _scaled_schedule_class():
    """The schedule wrapper class (created on first use: it subclasses a Keras class)."""
    from .._tf import import_keras

    _, keras = import_keras()

    @keras.saving.register_keras_serializable(package="gradadvisor")
    class ScaledSchedule(keras.optimizers.schedules.LearningRateSchedule):
        """The user's learning-rate schedule, capped at a ceiling, times a factor GradientMonitor lowered."""

        def __init__(self, schedule, scale, ceiling=None):
            super().__init__()
            self.schedule = schedule
            self.scale = float(scale)
            self.ceiling = None if ceiling is None else float(ceiling)

        def __call__(self, step=None):
            value = self.schedule(step) if isinstance(
                self.schedule, keras.optimizers.schedules.LearningRateSchedule) else self.schedule()
            if self.ceiling is not None:
                value = keras.ops.minimum(value, self.ceiling)
            return value * self.scale

        def get_config(self):
            return {"schedule": keras.saving.serialize_keras_object(self.schedule), "scale": self.scale,
                    "ceiling": self.ceiling}

        @classmethod
        def from_config(cls, config):
            return cls(keras.saving.deserialize_keras_object(config["schedule"]), config["scale"],
                       config.get("ceiling"))

    return ScaledSchedule


def rebuild_train_functions(monitor):
    """Trace the train functions again, so that they read the optimizer's new settings.

    Keras' optimizer reads its clipping and its learning-rate schedule while a
    train function is traced; a traced function keeps what it read.  In mode
    ``"train_step"`` both the monitor's train function and Keras' own (which
    runs unmeasured steps late in training) are rebuilt; otherwise Keras' own.
    """
    model = monitor.model
    state = monitor._state
    model.make_train_function(force=True)
    if monitor.mode == "train_step" and state is not None:
        state.original = model.train_function
        state.function = None
        state.install()
    # The next call of each function traces it: not a step's time.
    monitor._timed_calls = {"plain": False, "measured": False}
