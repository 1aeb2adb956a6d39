"""GradientMonitor's Keras hooks: when to measure, and what to do with the findings."""

from __future__ import annotations

import collections
import math
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import UsageError
from .findings import _caller_stacklevel, _describe_finding, _evaluate
from .probe_batch import _ProbeBatch
from .tensorboard import _TENSORBOARD_GROUPS, _write_histogram, _write_scalar
from .train_step import _LiveTrainStep, _train_step_unavailable, _unwrap

#: The values ``monitor.mode`` can take once training has begun.
MODES = ("train_step", "probe_batch")
_SEVERITY_RANK = {"error": 0, "warning": 1, "info": 2}
#: The largest gap between scheduled measurements that every_n_steps=None picks.
_MAX_GAP = 1000
#: Scheduled measurements made whatever they cost, so the rules always have a baseline.
_FREE_CHECKS = 3


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
            ``model.stop_training`` at the first finding; or a callable
            ``(finding, monitor) -> None`` called once per rule and layer.
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

    Attributes:
        mode: ``"auto"`` until training begins, then ``"train_step"`` or
            ``"probe_batch"``.
        history: One dict per measurement: ``step`` (training step, from 0,
            counted over every ``fit`` this monitor saw), ``epoch``, ``batch``,
            ``trigger``, ``loss``, ``global_grad_norm``, ``layers`` (``{layer:
            {stat: value}}``) and ``timestep_grad_norms``.
        findings: Every finding acted on, in order, each reported once per rule
            and layer.
        stop_reason: Why the monitor stopped training, or None.

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
                 report=None, force: bool = False, tensorboard_dir=None):
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
        if not callable(on_problem) and on_problem not in ("warn", "stop"):
            raise UsageError(
                "The 'on_problem' parameter of GradientMonitor must be 'warn', 'stop' or a callable "
                f"(finding, monitor) -> None. Got {on_problem!r} instead.")
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

    # ------------------------------------------------------------------
    # Keras hooks

    def on_train_begin(self, logs=None):
        tf, keras = _import()
        model = self.model
        self._active = True
        self._next_trigger = None
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

    def on_epoch_begin(self, epoch, logs=None):
        # fit() resets its metrics before each epoch: the running loss starts over.
        self._epoch = epoch
        self._epoch_steps = 0
        self._epoch_mean_loss = 0.0

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
                self.diagnosis().save_html(self.report, force=True)
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
        if not self._action_rules:
            return
        probe = self.probe_result()
        for finding in _evaluate(probe, self._action_rules):
            key = (finding.rule, finding.first_layer)
            if key in self._reported:
                continue
            self._reported.add(key)
            self.findings.append(finding)
            self._act(finding, probe, measurement)

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


def _import():
    from .._tf import import_keras

    return import_keras()


def _check_whole(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(
            f"The '{name}' parameter of GradientMonitor must be a whole number of at least {minimum}. "
            f"Got {value!r} instead.")
