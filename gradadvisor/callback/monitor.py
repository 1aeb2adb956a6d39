"""GradientMonitor's Keras hooks: when to measure, and what to do with the findings."""

from __future__ import annotations

import collections
import math
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from .. import _compat
from ..errors import UsageError
from .findings import _caller_stacklevel, _describe_finding, _evaluate
from .probe_batch import _ProbeBatch
from .recovery import (CLIP_PERCENTILE, NUM_HEALTHY_NORMS, RATE_ROSE, RECOVERABLE_FIXES, _plan, _Snapshot,
                       apply_clipping, cap_learning_rate, clip_norm_from, rate_now, rate_rise, rebuild_train_functions,
                       scale_learning_rate)
from .tensorboard import _TENSORBOARD_GROUPS, _write_histogram, _write_scalar
from .train_step import _LiveTrainStep, _train_step_unavailable, _unwrap

#: The values ``monitor.mode`` can take once training has begun.
MODES = ("train_step", "probe_batch")
_SEVERITY_RANK = {"error": 0, "warning": 1, "info": 2}
#: The largest gap between scheduled measurements that every_n_steps=None picks.
_MAX_GAP = 1000
#: Scheduled measurements made whatever they cost, so the rules always have a baseline.
_FREE_CHECKS = 3
#: A batch loss is a spike, for on_problem="recover", against the median of this many recent ones.
_RECENT_LOSSES = 50
#: A sustained rise compares the median of this many batch losses with the lowest median of _RECENT_LOSSES.
_RISE_LOSSES = 10
#: The snapshot gap is fitted once this many copies are timed (the first ones run cold).
_TIMED_COPIES = 4
#: A climb counts only once the loss is above this share of the loss the run started at (the
#: median of its first _RISE_LOSSES batch losses): below it, the model has converged, and a few
#: times a median near zero is noise, not divergence.
_CONVERGED_FRACTION = 0.1
#: A batch loss spike counts only above this share of the loss the run started at (and only when
#: the next batch's loss spikes too): a model that does worse on two batches in a row than it did
#: untrained has lost what it learned. A converged model's hard batches swing far above a median
#: near zero and the loss comes back on its own (a MobileNetV2 at a median of 0.004 had batches at
#: 0.39, 1.28 and 0.40 in a row, all below its starting 2.7; at a rate jumping 300x its losses were
#: 42, 110, 73).
_SPIKE_FRACTION = 1.0
#: The loss curve kept for the report holds at most this many points (thinned by two when full).
_MAX_LOSS_POINTS = 20000


class GradientWarning(UserWarning):
    """Issued by :class:`GradientMonitor` when a rule fires during training.

    Filter it like any warning, e.g. ``warnings.simplefilter("error",
    GradientWarning)`` to turn findings into exceptions.
    """


class _GradientMonitor:
    """Watch gradients during ``model.fit`` and act when a rule fires.

    The statistics are those of the probe, measured on the live training
    batches (see the module documentation for the two modes).  The last
    ``window`` measurements form a :class:`~gradadvisor.probe.ProbeResult` over
    which the rules run after every measurement.

    Args:
        every_n_steps: The gap, in training steps, between measurements once
            past the start (the first gaps are 1, 2, 4, 8, ... until they reach
            it). None, the default, fits the measurements into a time budget:
            the monitor times its measurements (rules included) and the plain
            steps, holds a scheduled measurement back while the time spent
            measuring exceeds ``max_overhead`` of the training time so far (the
            first three are free), and lets the gap settle where the budget
            allows (1 to 1000 steps).
        max_overhead: With ``every_n_steps=None``, the fraction of training
            time measurements may take (0.01: 1%). Tracing the statistics is a
            fixed cost on top, paid in the first step of the first fit(); it
            is smaller than the trace it saves (see the module documentation).
            In mode ``"train_step"``, once the training time reaches the
            monitored function's first call divided by ``max_overhead``,
            Keras' own train function is traced and runs the unmeasured steps.
        window: How many recent measurements the rules see; rules about growth
            compare the oldest with the newest of them.
        on_problem: ``"warn"`` issues one :class:`GradientWarning` per rule and
            layer, with the numbers; ``"stop"`` also sets
            ``model.stop_training`` at the first finding; ``"recover"`` rolls
            the run back to its last healthy state, applies a remedy and
            keeps training (see "Recovering" below); or a callable
            ``(finding, monitor) -> None`` called once per rule and layer,
            which may call :meth:`recover`.
        min_severity: The least severe findings that trigger ``on_problem``:
            ``"error"``, ``"warning"`` or ``"info"``.
        rules_dirs: Extra folders of rule files, as for :func:`gradadvisor.diagnose`.
        select, ignore: Rule ids to keep or drop.
        probe_data: ``(x, y)`` or ``(x, y, sample_weight)``: one batch used in
            ``"probe_batch"`` mode (required there, unused otherwise).
        mode: ``"auto"`` (``"train_step"`` where possible, else
            ``"probe_batch"``), ``"train_step"`` or ``"probe_batch"``. After
            training begins, ``monitor.mode`` holds the mode in use.
        loss_spike: Also measure the step after one whose loss exceeds this
            many times the loss of the last measurement (None turns it off).
        record_activations: Measure layer outputs (dead and saturated units,
            where a NaN first appears). Needs a Sequential or Functional model.
        report: Write the HTML report of the final diagnosis there when
            training ends.
        force: Allow ``report`` to replace an existing file.
        tensorboard_dir: Write per-layer statistics as TensorBoard scalars
            (``gradients/<layer>/grad_norm``, ``updates/<layer>/update_ratio``,
            ...) and gradient histograms (``gradients/<layer>/histogram``) there
            at every measurement. The ``tensorboard`` package is only needed to
            view them.
        max_recoveries: With ``on_problem="recover"``, how many recoveries
            one monitor makes (over every ``fit`` it sees); the next problem
            stops training as ``"stop"`` does, after restoring the last
            healthy snapshot.
        recovery_lr_factor: The factor (between 0 and 1) a recovery that
            lowers the learning rate multiplies it by.
        max_snapshot_bytes: The most host memory the snapshot may take; a
            model whose variables and optimizer state are larger is refused
            when training begins (``on_problem="recover"``) or keeps no
            snapshot (a callable ``on_problem``).

    Recovering:
        With ``on_problem="recover"`` (or a callable ``on_problem``, so that it
        can call :meth:`recover`) the monitor keeps one snapshot of the
        model's variables and its optimizer's (slots and ``iterations``) in
        host memory, overwritten in place: ``monitor.snapshot_bytes`` bytes
        (the sum of the variables' sizes, the compiled metrics' included).
        It is taken when training begins, after each healthy measurement
        (finite loss and gradient norm, no finding that a rollback can fix,
        a loss within ``loss_spike`` times the median of the last 50 batch
        losses and a largest per-layer update ratio within ``loss_spike``
        times that of the recent healthy measurements), and with
        ``"recover"`` also between measurements, every so many steps whose
        batch losses vouch for the weights (below): the gap is fitted so
        the copies take at most ``max_overhead`` of the training time, on
        top of the measurements' share (so a healthy run pays at most about
        twice ``max_overhead`` for measuring and snapshots together; the
        gap is fitted on the fastest recent copy and the lower quartile of
        recent steps, so other work on a shared machine stretching a few
        timings does not hold it hundreds of steps wide). A recovery happens when a
        finding at ``min_severity`` or above whose rule names clipping or the
        learning rate as a fix appears (other findings, such as vanishing
        gradients or dead units, are warned about), when a batch's loss is
        NaN or infinite (at once, always), when two batches in a row have
        a loss above ``loss_spike`` times the median of the last 50 batch
        losses and above the loss the run started at (the median of its
        first 10 batch losses: a model that does worse than it did
        untrained, and not on one batch only, has lost what it learned; the
        recovery comes at the second batch and undoes both), or when the
        median of the last 10 batch losses exceeds ``loss_spike ** 0.5``
        times the lowest median of 50 seen (a climb with no single spike: a
        learning rate creeping too high) and a tenth of the loss the run
        started at (below that the model has converged, and a few times a
        median near zero is noise). A converged model's hard batches swing
        far above its median and come back on their own (a MobileNetV2 at a
        median of 0.004 had batches at 0.39, 1.28 and 0.40 in a row, and
        one at 2.72, just above its starting 2.68, followed by 0.0044);
        after a 300x rate jump its batch losses stayed above 4 and
        reached 115. A divergence that stays below the starting loss is left
        to the climb. Also, between a recovery and the next snapshot, when the median of the last 10 batch losses exceeds
        ``loss_spike ** 0.25`` times the median of 50 when the snapshot
        restored was taken (a remedy that leaves the loss high is
        escalated). Snapshots between measurements wait for 50 batch
        losses, no climb, and that median within ``loss_spike ** 0.25``
        times the last snapshot's, and none is taken right after a batch
        whose loss is above ``loss_spike`` times the median.

        A recovery restores the snapshot, then changes the optimizer, the
        more so the more the run resists:

        - when the learning rate in effect at the problem is more than twice
          the one the restored weights were trained at (a schedule that
          steps up, a warm-up past what the model takes, a callback that
          raised it), and the problem names the learning rate (a NaN or
          spiking loss, a climb, a finding that names it): the rate is
          capped at that earlier one, and nothing else changes. A float
          rate is assigned it; a schedule is wrapped, so it keeps deciding
          the rate below the cap. A schedule's earlier rate is computed at
          the snapshot's step; a float rate's is read when the snapshot is
          taken. A warm-up from zero whose problem comes long after the
          last snapshot is capped at the low rate of then;
        - otherwise, the first time clipping is called for (a NaN or spiking loss, a
          finding that names clipping): global gradient clipping
          (``global_clipnorm``) at the 90th percentile of the global
          gradient norms of the last 5 healthy measurements (those nearest
          the problem: norms drift as a model learns), then doubled at each
          new healthy snapshot (vouched for by a measurement or by 50 good
          batch losses) up to ``loss_spike`` (10 when None) times that
          norm: measurements are sparse once training is under way, so the
          healthy ones can be hundreds of steps old, and a model clipped
          far below its current gradients barely learns;
        - when the run diverges again before a new snapshot (the remedy did
          not hold), and at every climbing loss: the learning rate times
          ``recovery_lr_factor``. A float learning rate is assigned its new
          value; a schedule is wrapped, so it keeps deciding the rate and
          the factor multiplies it;
        - a problem after a new snapshot, with clipping in place (a bad
          batch, say): rolled back and skipped, nothing else changed.

        An optimizer that already clips by ``clipnorm`` or ``clipvalue``
        keeps its own clipping (Keras allows one kind at a time) and has its
        learning rate scaled instead. The train
        functions are traced again when clipping or a schedule changed.
        The batches between the snapshot and the problem are skipped: their
        updates are undone and, as ``fit`` moves on to the next batch, not
        made again in this epoch, whether the data is a ``tf.data.Dataset``
        or NumPy arrays. Their samples come back in later epochs when the
        data is iterated again (NumPy arrays, a finite Dataset); only a
        stream that never repeats (a generator, a Dataset read once with
        ``steps_per_epoch``) never shows them again. A recovery also puts
        the epoch's running loss and metrics back to their state at the
        snapshot (or restarts them when the snapshot is from an earlier
        epoch), so an epoch's logs cover the batches whose updates were kept.

    Attributes:
        mode: ``"auto"`` until training begins, then ``"train_step"`` or
            ``"probe_batch"``.
        history: One dict per measurement: ``step`` (training step, from 0,
            counted over every ``fit`` this monitor saw), ``epoch``, ``batch``,
            ``trigger``, ``loss``, ``global_grad_norm``, ``layers`` (``{layer:
            {stat: value}}``) and ``timestep_grad_norms``.
        findings: Every finding acted on, in order, each reported once per rule
            and layer (with ``"recover"``, once per rule and layer between
            recoveries).
        stop_reason: Why the monitor stopped training, or None.
        recoveries: One dict per recovery: ``step``, ``epoch``, ``batch``,
            ``trigger`` (``"finding"``, ``"nonfinite_loss"``,
            ``"loss_spike"``, ``"loss_rise"`` or ``"callable"``), ``rules``, ``problem`` (in
            words), ``loss``, ``restored_step`` (the last step whose update
            the snapshot holds; -1 for the weights training began with),
            ``restored_iterations``, ``skipped_steps`` (``[first, last]``,
            the steps whose updates were undone), ``global_clipnorm``,
            ``learning_rate_scale`` (the product of every factor so far)
            and ``learning_rate_ceiling`` (the cap on a rate that rose,
            scaled by the factors since, or None) after it, ``changes`` (in words) and ``message`` (the warning's
            text). Each epoch's ``logs`` (and so ``model.history.history``
            and callbacks listed after the monitor) hold ``recoveries``, the
            number made in that epoch.
        snapshot_bytes: Host memory the snapshot takes, in bytes (0 until
            one is taken).

    Raises:
        UsageError: a parameter is out of range (at construction), or the mode
            cannot work for the model being trained (when training begins).

    Example:
        >>> monitor = gradadvisor.GradientMonitor(on_problem="stop", report="grads.html")
        >>> model.fit(x, y, epochs=10, callbacks=[monitor])
        >>> monitor.mode, monitor.stop_reason
        ('train_step', None)
        >>> print(monitor.diagnosis().to_text())
    """

    def __init__(self, every_n_steps: int | None = None, *, max_overhead: float = 0.01, window: int = 10,
                 on_problem: str | Callable = "warn", min_severity: str = "error",
                 rules_dirs=(), select=None, ignore=None, probe_data=None, mode: str = "auto",
                 loss_spike: float | None = 10.0, record_activations: bool = True,
                 report=None, force: bool = False, tensorboard_dir=None, max_recoveries: int = 5,
                 recovery_lr_factor: float = 0.1, max_snapshot_bytes: int = 2**30):
        super().__init__()
        from ..analysis.engine import load_rules, select_rules

        if every_n_steps is not None:
            _check_whole(every_n_steps, "every_n_steps", 1)
        if isinstance(max_overhead, bool) or not isinstance(max_overhead, (int, float)) \
                or not 0 < max_overhead < 1:
            raise UsageError(
                "The 'max_overhead' parameter of GradientMonitor must be a fraction between 0 and 1, "
                f"like 0.02 for 2%. Got {max_overhead!r} instead.")
        _check_whole(window, "window", 2)
        if not callable(on_problem) and on_problem not in ("warn", "stop", "recover"):
            raise UsageError(
                "The 'on_problem' parameter of GradientMonitor must be 'warn', 'stop', 'recover' or a "
                f"callable (finding, monitor) -> None. Got {on_problem!r} instead.")
        _check_whole(max_recoveries, "max_recoveries", 0)
        _check_whole(max_snapshot_bytes, "max_snapshot_bytes", 1)
        if isinstance(recovery_lr_factor, bool) or not isinstance(recovery_lr_factor, (int, float)) \
                or not 0 < recovery_lr_factor < 1:
            raise UsageError(
                "The 'recovery_lr_factor' parameter of GradientMonitor must be a number between 0 and 1, "
                f"like 0.1. Got {recovery_lr_factor!r} instead.")
        if min_severity not in _SEVERITY_RANK:
            raise UsageError(
                "The 'min_severity' parameter of GradientMonitor must be 'error', 'warning' or 'info'. "
                f"Got {min_severity!r} instead.")
        if mode not in ("auto",) + MODES:
            raise UsageError(
                "The 'mode' parameter of GradientMonitor must be 'auto', 'train_step' or 'probe_batch'. "
                f"Got {mode!r} instead.")
        if loss_spike is not None and (isinstance(loss_spike, bool) or not isinstance(loss_spike, (int, float))
                                       or not loss_spike > 1):
            raise UsageError(
                "The 'loss_spike' parameter of GradientMonitor must be a number above 1, or None to "
                f"turn the loss-spike trigger off. Got {loss_spike!r} instead.")
        if probe_data is not None and (not isinstance(probe_data, (tuple, list))
                                       or len(probe_data) not in (2, 3)):
            raise UsageError(
                "The 'probe_data' parameter of GradientMonitor must be a tuple (x, y) or (x, y, "
                f"sample_weight) holding one batch. Got {type(probe_data).__name__} instead.")
        if report is not None:
            from ..files import check_output_path

            report = check_output_path(report, force=force, suffix=".html")
        self.every_n_steps = every_n_steps
        self.max_overhead = float(max_overhead)
        self.window = window
        self.on_problem = on_problem
        self.min_severity = min_severity
        self.rules = select_rules(load_rules(rules_dirs), select, ignore)
        self._action_rules = {rule_id: rule for rule_id, rule in self.rules.items()
                              if _SEVERITY_RANK[rule.severity] <= _SEVERITY_RANK[min_severity]}
        self.probe_data = probe_data
        self.requested_mode = mode
        self.mode = mode
        self.loss_spike = None if loss_spike is None else float(loss_spike)
        self.record_activations = record_activations
        self.report = report
        self.tensorboard_dir = None if tensorboard_dir is None else Path(tensorboard_dir)
        self.history: list = []
        self.findings: list = []
        self.stop_reason: str | None = None
        self.notes: list = []
        self._window: collections.deque = collections.deque(maxlen=window)
        self._reported: set = set()
        self._state = None  # _Measurement for the model being trained
        self._states: dict = {}
        self._steps_done = 0
        self._epoch = 0
        self._batch_begin = 0
        self._epoch_steps = 0
        self._epoch_mean_loss = 0.0
        self._measure_trigger = None
        self._next_trigger = None
        self._pending_vector = None
        self._next_check = 0
        self._gap = 1
        self._batch_started = 0.0
        self._step_seconds: collections.deque = collections.deque(maxlen=64)
        self._check_seconds: collections.deque = collections.deque(maxlen=8)
        self._seconds_measuring = 0.0  # beyond what plain steps would have taken
        self._seconds_training = 0.0   # timed steps, plain and measured
        self._writer = None
        self._diagnosis_cache = None
        self._active = False
        self.max_recoveries = max_recoveries
        self.recovery_lr_factor = float(recovery_lr_factor)
        self.max_snapshot_bytes = max_snapshot_bytes
        self.recoveries: list = []
        self._snapshot = _Snapshot() if self._keeps_snapshots() else None
        self._healthy_norms: collections.deque = collections.deque(maxlen=NUM_HEALTHY_NORMS)
        self._recent_losses: collections.deque = collections.deque(maxlen=_RECENT_LOSSES)
        self._first_losses: list = []  # the run's first _RISE_LOSSES finite batch losses
        self._start_level = None       # their median, once known
        self._best_median = None
        self._reference = math.nan  # the median of the recent batch losses, refreshed with _levels
        self._levels = (None, None)
        self._losses_since_stats = 0
        self._gap_cache, self._gap_refreshed = None, 0
        self._snapshot_best_median = None
        self._snapshot_median = None
        self._awaiting_snapshot = False
        self._pending_spike = None  # (step, loss) of a spiking batch the next one must confirm
        self._snapshot_seconds: collections.deque = collections.deque(maxlen=8)
        self._healthy_updates: collections.deque = collections.deque(maxlen=window)
        self._clipped_by_monitor = False
        self._clip_installed = None  # the norm the last recovery that clipped set
        self._last_recovery_snapshot = None
        self._learning_rate_scale = 1.0
        self._learning_rate_ceiling = None  # the cap a recovery set on a rate that rose (before the scale)
        self._epoch_recoveries = 0
        self._recovered_step = None
        self._loss_curve: list = []   # (step, batch loss), thinned to _MAX_LOSS_POINTS
        self._loss_stride = 1

    @property
    def snapshot_bytes(self) -> int:
        return self._snapshot.num_bytes if self._snapshot is not None else 0

    # ------------------------------------------------------------------
    # Keras hooks

    def on_train_begin(self, logs=None):
        tf, keras = _import()
        model = self.model
        self._active = True
        self._next_trigger = None
        self._pending_spike = None
        self._timed_calls = {"plain": False, "measured": False}
        self.mode = self._choose_mode(model, tf, keras)
        if self.mode == "train_step":
            self._state = self._live_state(model, tf, keras)
        else:
            key = (id(model), "probe_batch")
            state = self._states.get(key)
            if state is None or state.model is not model:
                state = self._states[key] = _ProbeBatch(self, model, tf, keras)
            self._state = state
        if self.tensorboard_dir is not None and self._writer is None:
            self.tensorboard_dir.mkdir(parents=True, exist_ok=True)
            self._writer = tf.summary.create_file_writer(str(self.tensorboard_dir))
        if self._snapshot is not None:
            self._snapshot_at_begin(model)

    def on_epoch_begin(self, epoch, logs=None):
        # fit() resets its metrics before each epoch: the running loss starts over.
        self._epoch = epoch
        self._epoch_steps = 0
        self._epoch_mean_loss = 0.0
        self._epoch_recoveries = 0

    def on_epoch_end(self, epoch, logs=None):
        if self.on_problem == "recover" and logs is not None:
            logs["recoveries"] = self._epoch_recoveries

    def on_train_batch_begin(self, batch, logs=None):
        self._batch_begin = batch
        trigger = "schedule" if self._scheduled() else self._next_trigger
        self._measure_trigger = trigger
        self._next_trigger = None
        if trigger is not None and self.mode == "probe_batch":
            self._state.before_step()
        self._batch_started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        steps = max(1, batch - self._batch_begin + 1)
        first_step = self._steps_done
        self._steps_done += steps
        last_step = self._steps_done - 1
        trigger, self._measure_trigger = self._measure_trigger, None
        was_finite = math.isfinite(self._epoch_mean_loss)
        batch_loss = self._batch_loss((logs or {}).get("loss"), steps)
        if trigger is None:
            # A function's first call in a fit() may include tracing it: not timed.
            if self._timed_calls["plain"]:
                elapsed = time.perf_counter() - self._batch_started
                self._step_seconds.append(elapsed / steps)
                self._seconds_training += elapsed
            self._timed_calls["plain"] = True
        else:
            if self.mode == "train_step":
                vector, self._pending_vector = self._pending_vector, None
                measurement = None if vector is None else self._state.entry(vector, last_step)
            else:
                measurement = self._state.measure(last_step)
            if measurement is not None:
                measurement["trigger"] = trigger
                self._check(measurement, batch)
            if self._timed_calls["measured"]:
                self._record_check_cost(steps)
            self._timed_calls["measured"] = True
            if trigger == "schedule":
                self._next_check = first_step + self._gap
                self._gap = min(2 * self._gap, self._interval())
        if batch_loss is None:
            return
        if self._snapshot is not None:
            self._record_loss(last_step, batch_loss)
        if self.on_problem == "recover":
            if self._recovered_step == last_step or self.model.stop_training:
                return
            if not math.isfinite(batch_loss):
                self._recover_or_stop("nonfinite_loss", [], f"the batch loss was {batch_loss}", batch_loss,
                                      batch)
                return
            if self._start_level is None:
                self._first_losses.append(batch_loss)
                if len(self._first_losses) == _RISE_LOSSES:
                    self._start_level = float(np.median(self._first_losses))
            reference = self._reference
            hard = self.loss_spike is not None and reference > 0 and batch_loss > self.loss_spike * reference
            spiking = hard and self._above_start(batch_loss, _SPIKE_FRACTION)
            pending, self._pending_spike = self._pending_spike, None
            if spiking and pending is not None:
                above = "" if self._start_level is None else \
                    f" and the loss the run started at ({self._start_level:.4g})"
                self._recover_or_stop(
                    "loss_spike", [], f"the batch losses of steps {pending[0]} and {last_step} were {pending[1]:.4g} "
                    f"and {batch_loss:.4g}, more than {self.loss_spike:g} times the median of the last "
                    f"{len(self._recent_losses)} batch losses ({reference:.4g}){above}", batch_loss, batch)
                return
            if spiking:
                self._pending_spike = (last_step, batch_loss)  # judged with the next batch, left out of the median
                return
            if pending is not None:
                self._recent_losses.append(pending[1])  # the loss came back: one hard batch, part of the run
            self._recent_losses.append(batch_loss)
            # Medians every step would cost more than the step of a small model: once
            # the window is full they are refreshed every few steps, and judged then.
            self._losses_since_stats += 1
            if len(self._recent_losses) >= _RECENT_LOSSES and self._losses_since_stats < _RISE_LOSSES:
                return
            self._losses_since_stats = 0
            self._reference = float(np.median(self._recent_losses))
            rise, level = self._levels = self._loss_levels()
            if self.loss_spike is not None and rise is not None and rise > self.loss_spike ** 0.5 \
                    and self._above_start(rise * self._best_median, _CONVERGED_FRACTION):
                self._recover_or_stop(
                    "loss_rise", [], f"the median of the last {_RISE_LOSSES} batch losses rose to {rise:.3g} "
                    f"times the lowest median of {_RECENT_LOSSES} batch losses ({self._best_median:.4g})",
                    batch_loss, batch)
                return
            # Until a snapshot vouches for it, a remedy must bring the loss back to the snapshot's level.
            if self.loss_spike is not None and self._awaiting_snapshot and level is not None \
                    and level > self.loss_spike ** 0.25:
                self._recover_or_stop(
                    "loss_rise", [], f"after the last recovery the median of the last {_RISE_LOSSES} batch "
                    f"losses stayed at {level:.3g} times that of the snapshot restored "
                    f"({self._snapshot_median:.4g})", batch_loss, batch)
                return
            # A hard batch's large update is not vouched for by the losses before it: no snapshot after it.
            if not hard and self._snapshot_due(last_step) and self._losses_vouch(rise, level):
                self._take_snapshot(last_step)
                self._loosen_clipping(last_step)
            return
        if not math.isfinite(batch_loss):
            if not was_finite:
                return  # the running mean stays NaN until the epoch ends: measured already
            if self.mode == "probe_batch" and trigger is None:
                # The probe batch can be measured at once, on the weights that just broke.
                measurement = self._state.measure(last_step)
                measurement["trigger"] = "nonfinite_loss"
                self._check(measurement, batch)
            else:
                self._next_trigger = "nonfinite_loss"
            return
        reference = self._window[-1]["loss"] if self._window else math.nan
        if self.loss_spike is not None and reference > 0 and batch_loss > self.loss_spike * reference:
            self._next_trigger = "loss_spike"

    def on_train_end(self, logs=None):
        self._active = False
        if self.mode == "train_step" and self._state is not None:
            self._state.restore()
        if self._writer is not None:
            self._writer.flush()
        if self.report is not None and self._window:
            try:
                self._save_report()
            except Exception as exc:  # a failed report must not lose a finished training
                warnings.warn(
                    f"GradientMonitor could not write the report '{self.report}' ({exc}). The "
                    "diagnosis is still available from monitor.diagnosis().", GradientWarning,
                    stacklevel=_caller_stacklevel())

    # ------------------------------------------------------------------
    # Public helpers

    def diagnosis(self):
        """The :class:`~gradadvisor.Diagnosis` of the latest measurements.

        All selected rules run, whatever ``min_severity`` is, over the last
        ``window`` measurements.

        Raises:
            UsageError: nothing has been measured yet.
        """
        from ..analysis.diagnosis import Diagnosis, versions

        if not self._window:
            raise UsageError(
                "GradientMonitor has measured nothing yet: call diagnosis() after model.fit has run "
                "at least one step with the monitor in its callbacks.")
        key = (self._num_checks_total(), id(self._state))
        if self._diagnosis_cache is None or self._diagnosis_cache[0] != key:
            probe = self.probe_result()
            diagnosis = Diagnosis(probe=probe, findings=_evaluate(probe, self.rules),
                                  command="GradientMonitor", versions=versions(),
                                  rules_used=list(self.rules))
            self._diagnosis_cache = (key, diagnosis)
        return self._diagnosis_cache[1]

    def probe_result(self):
        """The last ``window`` measurements as a :class:`~gradadvisor.probe.ProbeResult`.

        Each of its "steps" is one measurement; ``nonfinite["step"]`` is the
        training step (from 0) where values first stopped being finite.
        """
        if not self._window:
            raise UsageError("GradientMonitor has measured nothing yet: there is no probe result.")
        return self._state.probe_result(list(self._window))

    # ------------------------------------------------------------------
    # Internals

    def _num_checks_total(self):
        return len(self.history)

    def _scheduled(self) -> bool:
        """Whether the coming step is due a scheduled measurement."""
        if self._steps_done < self._next_check:
            return False
        if self.every_n_steps is not None or len(self.history) < _FREE_CHECKS:
            return True
        return self._seconds_measuring <= self.max_overhead * self._seconds_training

    def _record_check_cost(self, steps: int):
        """Time a measured step took beyond a plain one, checks included."""
        elapsed = time.perf_counter() - self._batch_started
        self._seconds_training += elapsed
        # Until a plain step has been timed, the whole measured step counts.
        plain = float(np.median(self._step_seconds)) if self._step_seconds else 0.0
        cost = max(0.0, elapsed - steps * plain)
        self._check_seconds.append(cost)
        self._seconds_measuring += cost

    def _interval(self) -> int:
        """The gap between scheduled measurements once past the start."""
        if self.every_n_steps is not None:
            return self.every_n_steps
        if not self._step_seconds or not self._check_seconds:
            return _MAX_GAP
        step = float(np.median(self._step_seconds))
        cost = float(np.median(self._check_seconds))
        if step <= 0:
            return _MAX_GAP
        return int(min(_MAX_GAP, max(1, math.ceil(cost / (self.max_overhead * step)))))

    def _batch_loss(self, running_loss, steps: int) -> float | None:
        """The mean loss of the steps just run, recovered from fit()'s running mean.

        The running mean weighs each step by its batch size; batches of one size
        (all but maybe the last of an epoch) make this exact up to rounding.
        """
        if running_loss is None:
            return None
        try:
            running_loss = float(running_loss)
        except (TypeError, ValueError):
            return None
        before, after = self._epoch_steps, self._epoch_steps + steps
        previous = self._epoch_mean_loss
        self._epoch_steps, self._epoch_mean_loss = after, running_loss
        if not math.isfinite(running_loss):
            return running_loss
        return (after * running_loss - before * previous) / steps

    def _choose_mode(self, model, tf, keras) -> str:
        reason = _train_step_unavailable(model, tf, keras)
        wanted = self.requested_mode
        if wanted == "train_step" and reason:
            raise UsageError(f"GradientMonitor cannot use mode='train_step': {reason}. Use "
                             "mode='probe_batch' with probe_data=(x, y), or mode='auto'.")
        if wanted == "train_step" or (wanted == "auto" and not reason):
            return "train_step"
        if self.probe_data is None:
            why = f"it cannot read the training batches ({reason})" if reason else \
                "mode='probe_batch' measures on a batch you give"
            raise UsageError(
                f"GradientMonitor needs probe_data for model '{model.name}': {why}. Pass "
                "probe_data=(x, y), one batch of your training data, to GradientMonitor.")
        return "probe_batch"

    def _live_state(self, model, tf, keras):
        """The train-step measurement for ``model``, reused across fit() calls."""
        original = _unwrap(model.train_function)
        key = (id(model), "train_step")
        state = self._states.get(key)
        if state is None or state.model is not model or state.original is not original:
            state = self._states[key] = _LiveTrainStep(self, model, original, tf, keras)
        state.install()
        return state

    def _check(self, measurement: dict, batch: int):
        """Record one measurement, run the rules, act on what is new."""
        histograms = measurement.pop("histograms", {})
        measurement.update(epoch=self._epoch, batch=batch)
        self.history.append(measurement)
        self._window.append(measurement)
        if self._writer is not None:
            self._write_tensorboard(measurement, histograms)
        if not self._action_rules and self._snapshot is None:
            return
        probe = self.probe_result()
        found = _evaluate(probe, self._action_rules) if self._action_rules else []
        if self._snapshot is not None and self._healthy(measurement, found):
            self._take_snapshot(measurement["step"], measurement)
            self._loosen_clipping(measurement["step"])
        new = []
        for finding in found:
            key = (finding.rule, finding.first_layer)
            if key in self._reported:
                continue
            self._reported.add(key)
            self.findings.append(finding)
            new.append(finding)
        if self.on_problem == "recover":
            fixable = [finding for finding in new if _recoverable(finding)]
            for finding in new:
                if not any(finding is other for other in fixable):
                    self._warn_finding(finding, probe, measurement)
            if fixable and not self.model.stop_training:
                text = " ".join(_describe_finding(finding, probe, measurement, self._window[0]["step"])
                                for finding in fixable)
                self._recover_or_stop("finding", fixable, text, measurement["loss"], batch)
            return
        for finding in new:
            self._act(finding, probe, measurement)

    def _warn_finding(self, finding, probe, measurement):
        text = _describe_finding(finding, probe, measurement, self._window[0]["step"])
        warnings.warn(f"GradientMonitor, at step {measurement['step']}: {text}", GradientWarning,
                      stacklevel=_caller_stacklevel())

    def _act(self, finding, probe, measurement):
        if callable(self.on_problem):
            self.on_problem(finding, self)
            return
        text = _describe_finding(finding, probe, measurement, self._window[0]["step"])
        if self.on_problem == "stop" and not self.model.stop_training:
            self.model.stop_training = True
            self.stop_reason = f"GradientMonitor stopped training at step {measurement['step']}: {text}"
            warnings.warn(self.stop_reason, GradientWarning, stacklevel=_caller_stacklevel())
        elif self.on_problem == "warn" or self.model.stop_training:
            warnings.warn(f"GradientMonitor, at step {measurement['step']}: {text}", GradientWarning,
                          stacklevel=_caller_stacklevel())

    # ------------------------------------------------------------------
    # Recovering

    def recover(self, finding=None, reason: str | None = None) -> dict | None:
        """Roll back to the last healthy snapshot, apply a remedy, keep training.

        What ``on_problem="recover"`` does at a problem, for a callable
        ``on_problem`` to call (``monitor.recover(finding)``) when it decides
        to; ``max_recoveries`` is not checked here: the callable decides.

        Args:
            finding: The :class:`~gradadvisor.Finding` that called for it;
                its rule's fixes choose the remedies (clipping, the learning
                rate). None applies both kinds, as for a NaN loss.
            reason: The problem in words, for the warning (defaults to the
                finding's message).

        Returns:
            The record appended to :attr:`recoveries`, or None when there is
            no snapshot to restore (a warning says why).

        Raises:
            UsageError: called outside ``model.fit``.
        """
        if not self._active:
            raise UsageError("GradientMonitor.recover() was called outside model.fit: call it from the "
                             "on_problem callable, while the monitor trains a model.")
        findings = [] if finding is None else [finding]
        text = reason or (f"{finding.rule} {finding.name}: {finding.message}" if finding is not None
                          else "recovery requested")
        loss = self._loss_curve[-1][1] if self._loss_curve else math.nan
        return self._recover("callable", findings, text, loss, self._batch_begin)

    def _keeps_snapshots(self) -> bool:
        return self.on_problem == "recover" or callable(self.on_problem)

    def _snapshot_at_begin(self, model):
        """Check the snapshot's size and take the first one, of the weights training begins with."""
        optimizer = getattr(model, "optimizer", None)
        if not model.built or optimizer is None:
            return  # taken at the first healthy measurement instead
        variables = _Snapshot.variables_of(model)
        size = _Snapshot.size_of(variables)
        if size > self.max_snapshot_bytes:
            message = (f"The snapshot GradientMonitor keeps to recover would take {size:,} bytes of host "
                       f"memory for model '{model.name}', more than max_snapshot_bytes="
                       f"{self.max_snapshot_bytes:,}. Raise max_snapshot_bytes, or use on_problem='stop'.")
            if self.on_problem == "recover":
                raise UsageError(message)
            warnings.warn(message + " No snapshot is kept: recover() will not restore anything.",
                          GradientWarning, stacklevel=_caller_stacklevel())
            self._snapshot = None
            return
        if self.mode != "train_step" and optimizer.built is False:
            return  # its slots appear at the first step: taken at the first healthy measurement
        self._take_snapshot(self._steps_done - 1, metrics=False)
        self._snapshot.epoch = None  # before any epoch: restoring it restarts the epoch's metrics

    def _healthy(self, measurement: dict, found: list) -> bool:
        if not (math.isfinite(measurement["loss"]) and math.isfinite(measurement["global_grad_norm"])):
            return False
        # Right after a recovery the remedy is untested: the next scheduled measurement decides.
        if measurement["trigger"] in ("nonfinite_loss", "loss_spike", "recovery"):
            return False
        if any(_recoverable(finding) for finding in found):
            return False
        if self.loss_spike is None:
            return True
        # The snapshot holds the weights after this step's update, which the
        # loss and gradient measured before it cannot vouch for; an update
        # far larger than the healthy ones (a learning rate that jumped) can.
        if measurement["loss"] > self.loss_spike * self._reference:
            return False
        rise, level = self._levels
        if rise is None and not self._awaiting_snapshot:
            pass  # early in training: the measurement alone vouches
        elif not self._losses_vouch(rise, level):
            return False
        update = _largest_update(measurement)
        return not (self._healthy_updates and math.isfinite(update)
                    and update > self.loss_spike * float(np.median(self._healthy_updates)))

    def _loss_levels(self) -> tuple:
        """``(rise, level)``: the median of the last few batch losses over the lowest median of 50
        seen, and over the median of 50 when the snapshot was taken (each None until known).

        A learning rate that creeps too high makes the loss climb over
        hundreds of steps with no single spike: ``rise`` catches the climb.
        """
        if len(self._recent_losses) < _RECENT_LOSSES:
            return None, None
        median = float(np.median(self._recent_losses))
        if self._best_median is None or median < self._best_median:
            self._best_median = median
        recent = float(np.median(list(self._recent_losses)[-_RISE_LOSSES:]))
        rise = recent / self._best_median if self._best_median > 0 else None
        level = recent / self._snapshot_median if self._snapshot_median else None
        return rise, level

    def _above_start(self, loss: float, fraction: float) -> bool:
        """Whether ``loss`` is above ``fraction`` of the loss the run started at (True until that is known).

        See _CONVERGED_FRACTION (a climb) and _SPIKE_FRACTION (a single batch's spike).
        """
        return self._start_level is None or loss > fraction * self._start_level

    def _losses_vouch(self, rise, level) -> bool:
        """Whether the recent batch losses vouch for the weights: no climb, near the last snapshot's level."""
        if self.loss_spike is None:
            return True
        if rise is None:
            return False
        return rise <= self.loss_spike ** 0.5 and (level is None or level <= self.loss_spike ** 0.25)

    def _snapshot_gap(self) -> int:
        if self._steps_done >= self._gap_refreshed + _RISE_LOSSES or self._gap_cache is None:
            self._gap_cache, self._gap_refreshed = self._fit_snapshot_gap(), self._steps_done
        return self._gap_cache

    def _fit_snapshot_gap(self) -> int:
        """Steps between snapshots taken between measurements: their copies fit in ``max_overhead``.

        Fitted on the fastest of the recent copies and the lower quartile of
        the recent steps: on a shared machine other work stretches single
        timings several times over, and the copies (the same variables every
        time) are few, so one stretched among the first two or three held
        the gap where it set it, with no new copies to correct it (the
        recovery benchmark's LSTM on a loaded machine: copies of 5-6 ms,
        then 1.1 ms, a gap of 130-170 steps where 30 fit). The first copies
        run cold (its MLP's first two took 4.5 and 11 ms, a gap of 300 steps),
        so the gap stays at 10 until :data:`_TIMED_COPIES` copies are timed.
        """
        if len(self._snapshot_seconds) < _TIMED_COPIES or not self._step_seconds:
            return 10
        step = float(np.percentile(self._step_seconds, 25))
        cost = float(min(self._snapshot_seconds))
        if step <= 0:
            return _MAX_GAP
        return int(min(_MAX_GAP, max(1, math.ceil(cost / (self.max_overhead * step)))))

    def _snapshot_due(self, step: int) -> bool:
        """Whether to take a snapshot now, between measurements, vouched for by the batch losses."""
        snapshot = self._snapshot
        if snapshot is None or snapshot.step is None:
            return False
        gap = self._snapshot_gap()
        # Right after a recovery the remedy is untested: a full gap of good losses first.
        since_recovery = math.inf if self._recovered_step is None else step - self._recovered_step
        return step - snapshot.step >= gap and since_recovery >= gap

    def _take_snapshot(self, step: int, measurement: dict | None = None, metrics: bool = True):
        started = time.perf_counter()
        variables = _Snapshot.variables_of(self.model)
        if len(variables) != len(self._snapshot.variables) and \
                _Snapshot.size_of(variables) > self.max_snapshot_bytes:
            return  # the optimizer's slots appeared after training began and made it too large
        rebuilt = self._snapshot.take(self.model, step, self._epoch,
                                      (self._epoch_steps, self._epoch_mean_loss), variables, metrics)
        setting = _compat.optimizer_learning_rate_setting(self.model.optimizer)
        # A float rate is a variable the snapshot leaves out (a setting): its value now, for rate_rise.
        self._snapshot.rate = float(np.asarray(setting)) if hasattr(setting, "assign") else None
        if not rebuilt:  # a copy set up anew includes tracing its read: not what copies cost
            self._snapshot_seconds.append(time.perf_counter() - started)
        self._snapshot_best_median = self._best_median
        self._snapshot_median = float(np.median(self._recent_losses)) \
            if len(self._recent_losses) >= _RISE_LOSSES else None
        self._awaiting_snapshot = False
        if measurement is None:
            return
        self._healthy_norms.append(measurement["global_grad_norm"])
        update = _largest_update(measurement)
        if math.isfinite(update):
            self._healthy_updates.append(update)

    def _record_loss(self, step: int, loss: float):
        if step % self._loss_stride:
            return
        self._loss_curve.append((step, loss))
        if len(self._loss_curve) >= _MAX_LOSS_POINTS:
            self._loss_stride *= 2
            self._loss_curve = [(s, v) for s, v in self._loss_curve if s % self._loss_stride == 0]

    def _recover_or_stop(self, trigger: str, findings: list, problem: str, loss: float, batch: int):
        """``on_problem="recover"``: recover, or stop once ``max_recoveries`` are spent."""
        step = self._steps_done - 1
        if len(self.recoveries) < self.max_recoveries and self._snapshot is not None \
                and self._snapshot.step is not None:
            self._recover(trigger, findings, problem, loss, batch)
            return
        restored = ""
        if self._snapshot is not None and self._snapshot.step is not None:
            # The epoch's logs keep what happened: training stops here.
            self._snapshot.restore(self.model, self._epoch, metrics=False)
            restored = f" Restored the weights and optimizer state {_restored_words(self._snapshot.step)}."
        why = (f"after {len(self.recoveries)} recoveries (max_recoveries={self.max_recoveries})"
               if len(self.recoveries) >= self.max_recoveries else "with no healthy snapshot to restore")
        self.model.stop_training = True
        self._recovered_step = step
        self.stop_reason = f"GradientMonitor stopped training at step {step} {why}: {problem.rstrip('.')}.{restored}"
        warnings.warn(self.stop_reason, GradientWarning, stacklevel=_caller_stacklevel())

    def _recover(self, trigger: str, findings: list, problem: str, loss: float, batch: int) -> dict | None:
        _, keras = _import()
        model, snapshot = self.model, self._snapshot
        step = self._steps_done - 1
        if snapshot is None or snapshot.step is None:
            warnings.warn(f"GradientMonitor could not recover at step {step}: no healthy snapshot was "
                          "taken yet.", GradientWarning, stacklevel=_caller_stacklevel())
            return None
        rate = rate_now(model.optimizer, keras)
        self._epoch_steps, self._epoch_mean_loss = snapshot.restore(model, self._epoch)
        candidates = set(RECOVERABLE_FIXES)
        if trigger == "loss_rise":
            # A climb with no spike is a learning rate too high, which clipping does not tame.
            candidates = {"learning_rate"}
        elif findings:
            candidates = {fix for finding in findings for fix in finding.fixes} & candidates
        repeated = snapshot.num_taken == self._last_recovery_snapshot
        clip, scale = _plan(candidates, self._clipped_by_monitor, repeated)
        optimizer = model.optimizer
        changes, retrace = [], False
        rise = rate_rise(optimizer, snapshot, keras, rate) if "learning_rate" in candidates else None
        if rise is not None and rise > RATE_ROSE:
            # The rate rose since the weights restored were trained (a schedule stepping up, a
            # warm-up past what the model takes): that is the likely cause, and the remedy is to
            # undo the rise, nothing else; a recurrence escalates as usual.
            needs_retrace, words = cap_learning_rate(optimizer, rate / rise, keras)
            self._learning_rate_ceiling = rate / rise if self._learning_rate_ceiling is None else \
                min(self._learning_rate_ceiling, rate / rise)
            changes.append(f"{words}: it was {rate:.3g}, {rise:.3g} times the {rate / rise:.3g} the weights "
                           "restored were trained at")
            retrace |= needs_retrace
            clip = scale = False
        if clip:
            norm = clip_norm_from(self._healthy_norms)
            if norm is not None and self._clipped_by_monitor and "learning_rate" not in candidates:
                norm = min(norm, 0.5 * optimizer.global_clipnorm)
            if norm is None:
                changes.append("gradient clipping unchanged: no healthy measurement of the gradient norm yet")
                scale = "learning_rate" in candidates
            else:
                changed, words = apply_clipping(optimizer, norm)
                changes.append(words + (f" (the {CLIP_PERCENTILE:g}th percentile of the last "
                                        f"{len(self._healthy_norms)} healthy measurements' global gradient "
                                        "norms)" if changed else ""))
                retrace |= changed
                self._clipped_by_monitor |= changed
                if changed:
                    self._clip_installed = float(optimizer.global_clipnorm)
                if not changed:
                    scale = "learning_rate" in candidates
        if scale:
            needs_retrace, words = scale_learning_rate(optimizer, self.recovery_lr_factor, keras)
            self._learning_rate_scale *= self.recovery_lr_factor
            if self._learning_rate_ceiling is not None:
                self._learning_rate_ceiling *= self.recovery_lr_factor
            changes.append(words)
            retrace |= needs_retrace
        if not changes:
            changes.append("nothing else: the remedies in place held through a healthy measurement since "
                           "the last recovery" if not repeated else
                           "nothing else: the problem names no fix a rollback can apply")
        self._last_recovery_snapshot = snapshot.num_taken
        if retrace:
            rebuild_train_functions(self)
        self._window = collections.deque((entry for entry in self._window if entry["step"] <= snapshot.step),
                                         maxlen=self.window)
        for finding in findings:
            self._reported.discard((finding.rule, finding.first_layer))
        self._recovered_step = step
        # The losses since the snapshot describe the weights just undone, and
        # the lowest median is compared with the weights restored.
        self._recent_losses.clear()
        self._reference, self._levels, self._losses_since_stats = math.nan, (None, None), 0
        self._best_median = self._snapshot_best_median
        self._awaiting_snapshot = True
        self._pending_spike = None
        self._next_trigger = "recovery"
        self._epoch_recoveries += 1
        rules = [finding.rule for finding in findings]
        number = len(self.recoveries) + 1
        limit = f" of {self.max_recoveries}" if self.on_problem == "recover" else ""
        skipped = [snapshot.step + 1, step]
        message = (f"GradientMonitor recovered at step {step} (recovery {number}{limit}): {problem.rstrip('.')}. "
                   f"Restored the weights and optimizer state {_restored_words(snapshot.step)} "
                   f"({len(snapshot.variables)} variables, {snapshot.num_bytes:,} bytes, optimizer "
                   f"iterations {snapshot.iterations}); the updates of steps {skipped[0]}-{skipped[1]} were "
                   f"undone and those batches are skipped. Changed: {'; '.join(changes)}.")
        record = {
            "step": step, "epoch": self._epoch, "batch": batch, "trigger": trigger, "rules": rules,
            "problem": problem, "loss": float(loss), "restored_step": snapshot.step,
            "restored_iterations": snapshot.iterations, "skipped_steps": skipped,
            "global_clipnorm": getattr(optimizer, "global_clipnorm", None),
            "learning_rate_scale": self._learning_rate_scale,
            "learning_rate_ceiling": self._learning_rate_ceiling, "changes": changes, "message": message,
        }
        self.recoveries.append(record)
        if self._writer is not None:
            self._write_recovery(record)
        warnings.warn(message, GradientWarning, stacklevel=_caller_stacklevel())
        return record

    def _loosen_clipping(self, step: int):
        """Double the clipping a recovery set at each new healthy snapshot, up to ``loss_spike`` times it.

        The clipping norm comes from healthy measurements that can be far
        older than the problem (measurements are sparse once training is
        under way), and a model clipped well below its gradients barely
        learns; a snapshot vouched for under the clipping (by a measurement,
        or by a stretch of batch losses) earns it a little more room. At
        most four loosenings (and retraces) per clipping set.
        """
        optimizer = self.model.optimizer
        current = getattr(optimizer, "global_clipnorm", None)
        if not (self._clipped_by_monitor and current and self._clip_installed and self.recoveries):
            return
        ceiling = (self.loss_spike or 10.0) * self._clip_installed
        if current >= ceiling:
            return
        loosened = min(2 * current, ceiling)
        optimizer.global_clipnorm = float(loosened)
        rebuild_train_functions(self)
        words = (f"global gradient clipping loosened from norm {current:.3g} to {loosened:.3g} after a healthy "
                 f"snapshot (at most {ceiling:.3g}, {self.loss_spike or 10.0:g} times the norm set)")
        self.recoveries[-1]["changes"].append(words)
        warnings.warn(f"GradientMonitor, at step {step}: {words}.", GradientWarning,
                      stacklevel=_caller_stacklevel())

    def _write_recovery(self, record: dict):
        tf, _ = _import()
        step = record["step"]
        with self._writer.as_default():
            _write_scalar(tf, "recovery/count", len(self.recoveries), step)
            _write_scalar(tf, "recovery/restored_step", record["restored_step"], step)
            _write_scalar(tf, "recovery/learning_rate_scale", record["learning_rate_scale"], step)
            clip = record["global_clipnorm"]
            _write_scalar(tf, "recovery/global_clipnorm", math.nan if clip is None else clip, step)
        self._writer.flush()

    def _save_report(self):
        from ..files import write_text_atomic
        from ..report.html import render_html

        training = None
        if self._snapshot is not None:
            training = {"loss_steps": [step for step, _ in self._loss_curve],
                        "loss": [loss for _, loss in self._loss_curve],
                        "recoveries": [dict(record) for record in self.recoveries],
                        "snapshot_bytes": self.snapshot_bytes, "stop_reason": self.stop_reason}
        write_text_atomic(self.report, render_html(self.diagnosis(), training=training))

    def _write_tensorboard(self, measurement: dict, histograms: dict):
        tf, _ = _import()
        step = measurement["step"]
        with self._writer.as_default():
            _write_scalar(tf, "loss/batch", measurement["loss"], step)
            _write_scalar(tf, "gradients/global_norm", measurement["global_grad_norm"], step)
            for layer, stats in measurement["layers"].items():
                for name, value in stats.items():
                    group = _TENSORBOARD_GROUPS.get(name)
                    if group is not None:
                        _write_scalar(tf, f"{group}/{layer}/{name}", value, step)
            for layer, (low, high, counts) in histograms.items():
                _write_histogram(tf, f"gradients/{layer}/histogram", low, high, counts, step)


def _largest_update(measurement: dict) -> float:
    """The largest per-layer update ratio of a measurement (NaN when none was measured)."""
    ratios = [stats.get("update_ratio", math.nan) for stats in measurement["layers"].values()]
    ratios = [r for r in ratios if math.isfinite(r)]
    return max(ratios) if ratios else math.nan


def _recoverable(finding) -> bool:
    return finding.severity == "error" and any(fix in RECOVERABLE_FIXES for fix in finding.fixes)


def _restored_words(step: int) -> str:
    return "of the start of training" if step < 0 else f"as they were after step {step}"


def _import():
    from .._tf import import_keras

    return import_keras()


def _check_whole(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(
            f"The '{name}' parameter of GradientMonitor must be a whole number of at least {minimum}. "
            f"Got {value!r} instead.")
