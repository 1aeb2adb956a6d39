"""GradientMonitor: the probe's statistics and rules, live inside ``model.fit``.

The monitor measures the same per-layer statistics as the probe
(:data:`~gradadvisor.probe.WEIGHT_STATS` and
:data:`~gradadvisor.probe.ACTIVATION_STATS`, computed by the same functions),
keeps the last few measurements, runs the rules over them and warns, stops
training or calls you back when one fires.

How it sees the batches
-----------------------
Keras 3 callbacks never see the training batch, so the monitor works in one of
two modes, chosen when training begins and shown as ``monitor.mode``:

``"train_step"`` (the default where possible)
    For the TensorFlow backend, a model that keeps Keras' own ``train_step`` and
    no ``tf.distribute`` strategy.  While the monitor is on, ``fit`` runs one
    train function built from a copy of Keras' train step that walks the model
    layer by layer (to record each layer's output).  On measured steps it also
    reduces the gradients the optimizer applies, the weights before and after
    the update and the layer outputs to one vector of numbers inside the
    graph; those parts sit in conds that unmeasured steps skip, so they cost
    nothing there.  There is no second forward or backward pass of the model
    and the update is the one Keras makes: training with and without the
    monitor gives the same weights.  (The one exception is recurrent layers:
    the gradient reaching each timestep of their input is found, on measured
    steps only, by running that layer once more on its recorded input.)  The
    optimizer's and metrics' variables are created before the first trace, so
    the function is traced once where Keras' own is traced twice.  ``fit``
    builds its train function just before ``on_train_begin``; the monitor
    replaces it there and puts it back in ``on_train_end``.

``"probe_batch"``
    For everything else (a custom ``train_step``, a distribution strategy):
    on measured steps the monitor runs its own forward and backward pass on a
    fixed batch you pass as ``probe_data=(x, y)``, without applying any update
    and restoring every non-trainable variable (batch-norm statistics, dropout
    seeds) afterwards.  Update sizes come from the live step: the weights are
    copied before it and compared after it.

When it measures
----------------
With gaps of 1, 2, 4, 8, ... steps (steps 0, 1, 3, 7, ...) until the gap
reaches ``every_n_steps``, then every ``every_n_steps`` steps.  By default
(``every_n_steps=None``) the gap and the start are fitted into a time budget,
``max_overhead`` of the training time.  The running loss in ``logs`` is read
after every batch (it costs nothing: Keras converts it anyway); the step after
one whose batch loss was NaN or infinite, or more than ``loss_spike`` times
the loss of the last measurement, is always measured.  So a divergence gets
measured while it happens, usually before the loss turns NaN, and the cost is
paid only on the steps measured.
"""

from __future__ import annotations

import collections
import functools
import logging
import math
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import UsageError

__all__ = ["GradientMonitor", "GradientWarning", "MODES"]

#: The values ``monitor.mode`` can take once training has begun.
MODES = ("train_step", "probe_batch")
_SEVERITY_RANK = {"error": 0, "warning": 1, "info": 2}
#: The largest gap between scheduled measurements that every_n_steps=None picks.
_MAX_GAP = 1000
#: Scheduled measurements made whatever they cost, so the rules always have a baseline.
_FREE_CHECKS = 3
#: Key under which the measuring train function returns its statistics; it is
#: removed from the logs before Keras or any callback sees them.
_LOG_KEY = "_gradadvisor_statistics"
_HISTOGRAM_BUCKETS = 30
_TENSORBOARD_GROUPS = {
    "grad_norm": "gradients", "grad_rms": "gradients", "grad_max_abs": "gradients",
    "zero_grad_fraction": "gradients", "nonfinite_grads": "gradients",
    "weight_norm": "weights", "update_ratio": "updates",
    "activation_mean": "activations", "activation_std": "activations",
    "dead_fraction": "activations", "saturated_fraction": "activations",
    "nonfinite_activations": "activations",
}

logger = logging.getLogger(__name__)


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
        from .engine import load_rules, select_rules

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
            from .files import check_output_path

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
        """The :class:`~gradadvisor.diagnosis.Diagnosis` of the latest measurements.

        All selected rules run, whatever ``min_severity`` is, over the last
        ``window`` measurements.

        Raises:
            UsageError: nothing has been measured yet.
        """
        from .diagnosis import Diagnosis, versions

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


# --------------------------------------------------------------------------
# Measuring

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
        from .probe import _is_graph_model

        self.monitor, self.model, self.tf, self.keras = monitor, model, tf, keras
        self.layout = _Layout()
        self.use_tracer = monitor.record_activations and _is_graph_model(model, keras) \
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
        from .probe import _Tracer

        model, keras = self.model, self.keras
        if self.use_tracer:
            tracer = _Tracer(keras, watch=watch)
            return tracer.run(model, _standardize_inputs(model, x, keras), training=True), tracer
        if getattr(model, "_call_has_training_arg", True):
            return model(x, training=True), None
        return model(x), None

    def ensure_groups(self):
        from .probe import group_variables

        if self.groups is None:
            self.groups = group_variables(self.model, self.keras)
        return self.groups

    def statistics(self, loss, gradients_by_id, before_by_id, tracer, timestep_norms, batch_size,
                   gradient_scale=None):
        """One float32 vector holding every statistic of this step (traced)."""
        from .loading import activation_name
        from .probe import activation_stats, layer_weight_stats

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
        if tracer is not None:
            layout.order = list(tracer.order)
            by_path = {path: layer for path, layer, _ in self.groups}
            for path in tracer.order:
                output = tracer.outputs[path]
                if not isinstance(output, tf.Tensor) or not output.dtype.is_floating:
                    continue
                for name, value in activation_stats(tf, output, activation_name(by_path.get(path))).items():
                    layout.add(path, name)
                    values.append(value)
        vector = [tf.stack([tf.cast(v, "float32") for v in values])]
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
        from .probe import describe_layers

        if self._infos is None:
            self._infos = describe_layers(self.model, self.ensure_groups(), self.layout.order, self.keras)
        return self._infos

    def probe_result(self, window: list):
        from .loading import resolve_loss
        from .probe import ProbeResult, describe_optimizer

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


class _LiveTrainStep(_Measurement):
    """Mode "train_step": measure inside the train step the optimizer runs."""

    data_source = "model.fit training batches"

    def __init__(self, monitor, model, original, tf, keras):
        super().__init__(monitor, model, tf, keras)
        self.original = original
        self.function = None
        # Read by the train step: whether this call measures. Assigned only when it changes.
        self.measuring = tf.Variable(False, trainable=False, name="gradadvisor_measuring")
        self.measuring_value = False

    def set_measuring(self, value: bool):
        if value != self.measuring_value:
            self.measuring.assign(value)
            self.measuring_value = value

    def install(self):
        """Put the measuring train function on the model (built on first use)."""
        model, keras = self.model, self.keras
        optimizer = model.optimizer
        if model.built and model.trainable_weights and not optimizer.built:
            # What optimizer.apply() does on its first call. Done here, the
            # train function traces once instead of twice (creating variables
            # in a first trace forces a second one).
            with keras.name_scope(optimizer.name, caller=optimizer):
                optimizer.build(model.trainable_weights)
            optimizer.built = True
        if self.function is None:
            # make_train_function() wraps whatever model.train_step is, so an
            # instance attribute set for the call is all it takes; it is removed
            # at once so the model keeps its own train_step.
            model.train_step = self.train_step
            try:
                model.make_train_function(force=True)
                monitored = model.train_function
            finally:
                del model.train_step
            self.function = _MonitoredTrainFunction(self, monitored)
        model.train_function = self.function

    def restore(self):
        if self.model.train_function is self.function:
            self.model.train_function = self.original

    def train_step(self, data):
        """Keras' TensorFlow train step, plus every statistic on measured steps (traced).

        The statistics, and the copies of the weights they need from before the
        update, sit in two conds on ``self.measuring``: unmeasured steps run
        Keras' step and nothing more.
        """
        tf, keras, model = self.tf, self.keras, self.model
        from keras.src.losses.loss import unscale_loss_for_distribution

        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        batch_size = tf.shape(next(i for i in keras.tree.flatten(x) if i is not None))[0]
        with tf.GradientTape() as tape:
            y_pred, tracer = self.forward(x)
            loss = model._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
            model._loss_tracker.update_state(unscale_loss_for_distribution(loss), sample_weight=batch_size)
            unscaled_loss = loss
            if model.optimizer is not None:
                loss = model.optimizer.scale_loss(loss)
        logs_extra = {}
        if model.trainable_weights:
            trainable_weights = list(model.trainable_weights)
            recurrent = _timed_recurrent_calls(tracer)
            # The gradient reaching each recurrent layer's output is part of
            # the backward pass anyway; asking for it costs nothing.
            outputs = [keras.tree.flatten(tracer.outputs[path]) for path, _ in recurrent]
            all_gradients = tape.gradient(loss, trainable_weights + [o for group in outputs for o in group])
            gradients = all_gradients[:len(trainable_weights)]
            output_gradients, offset = [], len(trainable_weights)
            for group in outputs:
                output_gradients.append(all_gradients[offset:offset + len(group)])
                offset += len(group)
            self.ensure_groups()
            measuring = self.measuring
            scale = _loss_scale(model.optimizer)

            sizes = [int(np.prod(v.shape)) for v in trainable_weights]
            lengths = [int(call[1][0].shape[1]) for _, call in recurrent]

            def measured():
                # A copy of the weights from before the update, taken on
                # measured steps only. Each branch returns two tensors, whatever
                # the model: every tensor in or out of a cond costs every step.
                weights = tf.concat([tf.reshape(tf.cast(v, "float32"), [-1]) for v in trainable_weights], 0)
                norms = [_recurrent_timestep_norms(tf, call, grads, scale)
                         for (_, call), grads in zip(recurrent, output_gradients)]
                return weights, tf.concat(norms, 0) if norms else tf.zeros([0])

            def unmeasured():
                return tf.zeros([0]), tf.zeros([sum(lengths)])

            packed, packed_norms = _cond(tf, measuring, measured, unmeasured)
            model.optimizer.apply_gradients(zip(gradients, trainable_weights))

            def statistics():
                before = {id(v): tf.reshape(part, v.shape) for v, part in
                          zip(trainable_weights, tf.split(packed, sizes))}
                timesteps = list(zip([path for path, _ in recurrent],
                                     tf.split(packed_norms, lengths) if lengths else []))
                return self.statistics(
                    unscaled_loss, {id(v): g for v, g in zip(trainable_weights, gradients)}, before, tracer,
                    timesteps, batch_size, gradient_scale=scale)

            logs_extra[_LOG_KEY] = _cond(tf, measuring, statistics, lambda: tf.zeros([0], "float32"))
        else:
            warnings.warn("The model does not have any trainable weights.")
        logs = dict(model.compute_metrics(x, y, y_pred, sample_weight=sample_weight))
        logs.update(logs_extra)
        return logs


class _MonitoredTrainFunction:
    """The train function fit() calls while the monitor is on.

    It tells the monitored train function whether this call measures, runs it,
    and hands the statistics of a measured call to the monitor (dropping them
    from the logs either way).  If the monitor is no longer training (fit()
    was interrupted before on_train_end could restore the model), it puts
    Keras' own train function back and runs that.
    """

    def __init__(self, state, monitored):
        self.state, self.monitored = state, monitored
        self.prepared = False

    @property
    def original(self):
        """Keras' own train function, which the monitor puts back when training ends."""
        return self.state.original

    def __call__(self, iterator):
        monitor = self.state.monitor
        if not monitor._active:
            model = monitor.model
            if model is not None and model.train_function is self:
                model.train_function = self.original
            return self.original(iterator)
        if not self.prepared:
            self.prepared = True
            _build_metrics(monitor.model, iterator)
        measure = monitor._measure_trigger is not None
        self.state.set_measuring(measure)
        logs = self.monitored(iterator)
        vector = logs.pop(_LOG_KEY, None)
        if measure:
            monitor._pending_vector = vector
        return logs


def _build_metrics(model, iterator):
    """Create the compiled metrics' and loss's variables before any trace.

    Keras creates them while tracing the first train step, which makes
    TensorFlow trace it a second time. Keras' own symbolic build (what fit()
    runs first under a distribution strategy) creates them from the shapes of
    a batch, which the iterator tells without giving up a batch.
    """
    compile_metrics = getattr(model, "_compile_metrics", None)
    compile_loss = getattr(model, "_compile_loss", None)
    if not ((compile_metrics is not None and not compile_metrics.built)
            or (compile_loss is not None and not compile_loss.built)):
        return
    try:
        model._symbolic_build(data_batch=iterator.element_spec)
    except Exception:  # only an extra trace is lost
        logger.debug("GradientMonitor could not build the metrics ahead of tracing.", exc_info=True)


def _unwrap(function):
    while isinstance(function, _MonitoredTrainFunction):
        function = function.original
    return function


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
        from .probe import timestep_norms

        tf, model = self.tf, self.model
        # Reading every non-trainable variable first and writing it back last
        # leaves batch-norm statistics and dropout seeds as training left them.
        saved = [(v, tf.identity(v)) for v in model.non_trainable_variables]
        x, y = self.x, self.y
        with tf.GradientTape() as tape:
            y_pred, tracer = self.forward(x, tape.watch)
            loss = model._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=self.sample_weight,
                                       training=True)
        weights = [v for _, _, group in self.groups for v in group]
        rnn_paths = list(tracer.rnn_inputs) if tracer is not None else []
        all_gradients = tape.gradient(loss, weights + [tracer.rnn_inputs[p] for p in rnn_paths])
        gradients = all_gradients[:len(weights)]
        timesteps = [(path, timestep_norms(tf, gradient))
                     for path, gradient in zip(rnn_paths, all_gradients[len(weights):])]
        batch_size = tf.shape(next(i for i in self.keras.tree.flatten(x) if i is not None))[0]
        vector = self.statistics(loss, {id(v): g for v, g in zip(weights, gradients)}, self.snapshots, tracer,
                                 [(path, norms) for path, norms in timesteps if norms is not None], batch_size)
        with tf.control_dependencies([vector]):
            for variable, value in saved:
                variable.assign(value)
            return tf.identity(vector)

    def restore(self):
        pass


# --------------------------------------------------------------------------
# Helpers

def _import():
    from ._tf import import_keras

    return import_keras()


def _caller_stacklevel() -> int:
    """The stacklevel that points a warning at the user's line calling fit()."""
    import os
    import sys

    folders = tuple(os.path.dirname(module.__file__) + os.sep
                    for module in (sys.modules.get(name) for name in ("keras", "tensorflow", "gradadvisor"))
                    if module is not None and getattr(module, "__file__", None))
    frame, level = sys._getframe(1), 1
    while frame is not None:
        if not frame.f_code.co_filename.startswith(folders):
            return level
        frame, level = frame.f_back, level + 1
    return 2


def _check_whole(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(
            f"The '{name}' parameter of GradientMonitor must be a whole number of at least {minimum}. "
            f"Got {value!r} instead.")


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return True


def _train_step_unavailable(model, tf, keras) -> str | None:
    """Why mode "train_step" cannot work for ``model``, or None if it can."""
    if keras.backend.backend() != "tensorflow":
        return f"the Keras backend is '{keras.backend.backend()}', not 'tensorflow'"
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

    if type(model).train_step is not TensorFlowTrainer.train_step:
        return f"{type(model).__name__} defines its own train_step"
    if getattr(model, "_distribute_strategy", None) is not None or tf.distribute.has_strategy():
        return "it is trained under a tf.distribute strategy"
    if getattr(model, "optimizer", None) is None:
        return "the model has no optimizer"
    if not all(hasattr(model, name) for name in ("_compute_loss", "_loss_tracker", "make_train_function")):
        return f"this Keras version ({keras.__version__}) lacks the train-step internals it relies on"
    return None


def _evaluate(probe, rules):
    """The engine's evaluate(), with BLAS on one thread.

    The signals fit tiny robust regressions; next to TensorFlow's threads a
    multi-threaded BLAS makes each fit many times slower, not faster.
    """
    from .engine import evaluate

    with _blas_controller().limit(limits=1, user_api="blas"):
        return evaluate(probe, rules)


@functools.lru_cache(maxsize=None)
def _blas_controller():
    """One threadpoolctl controller for the process.

    Finding the thread pools means walking every loaded library, which took
    a few milliseconds per measurement when done each time. The regressions'
    BLAS is loaded first, so the controller knows it.
    """
    import sklearn.linear_model  # noqa: F401  (loads the BLAS the signals use)
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _timed_recurrent_calls(tracer) -> list:
    """``[(path, (layer, args, kwargs))]``: recurrent calls with a known number of timesteps."""
    if tracer is None:
        return []
    return [(path, call) for path, call in tracer.rnn_calls.items()
            if len(call[1][0].shape) >= 3 and call[1][0].shape[1] is not None]


def _recurrent_timestep_norms(tf, call, output_gradients, scale):
    """Per-timestep norms of the gradient reaching a recurrent layer's input.

    The layer runs again on its recorded input, in inference mode (no dropout
    masks drawn) and with its state variables restored afterwards, and the
    gradient of the loss with respect to its output is pulled back through
    it. Done in the update's own backward pass, this gradient would cost every
    step; a model input, for one, needs no gradient otherwise.
    """
    from .probe import timestep_norms

    layer, args, kwargs = call
    if "training" in kwargs:
        kwargs = dict(kwargs, training=False)
    inputs = args[0]
    saved = [(v, tf.identity(v)) for v in layer.non_trainable_variables]
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        outputs = tf.nest.flatten(layer(*args, **kwargs))
    upstream = [tf.zeros_like(o) if g is None else tf.cast(g, o.dtype) for o, g in zip(outputs, output_gradients)]
    gradient = tape.gradient(outputs, inputs, output_gradients=upstream)
    for variable, value in saved:
        variable.assign(value)
    if gradient is None:
        return tf.zeros([inputs.shape[1]], "float32")
    norms = timestep_norms(tf, gradient)
    return norms if scale is None else norms / tf.cast(scale, "float32")


def _cond(tf, predicate, true_fn, false_fn):
    """``tf.cond`` whose branches stay functions that run only when taken.

    Inside a ``tf.function``, TensorFlow rewrites a cond into switch and merge
    operations, and then every operation of the branch not taken still passes
    a "dead" signal on each call: for the statistics branch, hundreds of
    operations on every unmeasured step (about a tenth of a small model's step
    time). Marking the cond not to be rewritten keeps it one function call.
    """
    outputs = tf.cond(predicate, true_fn, false_fn)
    if tf.executing_eagerly():
        return outputs
    try:
        from tensorflow.core.framework import attr_value_pb2

        first = tf.nest.flatten(outputs)[0]
        operation = first.op.inputs[0].op if first.op.type == "Identity" else first.op
        if operation.type in ("If", "StatelessIf"):
            operation._set_attr("_lower_using_switch_merge", attr_value_pb2.AttrValue(b=False))
    except Exception:  # only speed is lost: the rewritten cond computes the same
        logger.debug("GradientMonitor could not keep a cond as a function.", exc_info=True)
    return outputs


def _loss_scale(optimizer):
    """The factor the optimizer multiplies the loss by (mixed precision), or None."""
    scale = getattr(optimizer, "dynamic_scale", None)
    return scale if scale is not None else getattr(optimizer, "loss_scale_factor", None)


def _tracer_works(model, keras) -> bool:
    """Whether the layer-by-layer walk runs on this model (checked symbolically, no state changes)."""
    from .probe import _Tracer

    try:
        _Tracer(keras).run(model, model.inputs, training=True)
        return True
    except Exception:
        return False


def _standardize_inputs(model, x, keras):
    """The inputs as ``model(x)`` would see them: ordered, converted, rank-adjusted."""
    target = getattr(model, "_functional", None) if isinstance(model, keras.Sequential) else model
    standardize = getattr(target, "_standardize_inputs", None)
    return standardize(x) if standardize is not None else x


def _histogram(tf, variables, gradients):
    """``[low, high, counts...]`` of a layer's finite gradient entries, in fixed buckets."""
    flat = tf.concat([tf.reshape(tf.cast(g if g is not None else tf.zeros_like(v), "float32"), [-1])
                      for v, g in zip(variables, gradients)], 0)
    finite = tf.math.is_finite(flat)
    low = tf.reduce_min(tf.where(finite, flat, math.inf))
    high = tf.reduce_max(tf.where(finite, flat, -math.inf))
    width = tf.maximum(high - low, 1e-30) / _HISTOGRAM_BUCKETS
    index = tf.cast(tf.floor((tf.where(finite, flat, low) - low) / width), "int32")
    index = tf.clip_by_value(index, 0, _HISTOGRAM_BUCKETS - 1)
    counts = tf.math.unsorted_segment_sum(tf.cast(finite, "float32"), index, _HISTOGRAM_BUCKETS)
    return tf.concat([tf.stack([low, high]), counts], 0)


def _first_nonfinite(window: list, infos: list) -> dict | None:
    """The probe's ``nonfinite`` record for the first non-finite measurement, or None."""
    for entry in window:
        layers = entry["layers"]
        bad_grads = [i.name for i in infos if layers.get(i.name, {}).get("nonfinite_grads", 0) > 0]
        bad_outputs = [i.name for i in infos if layers.get(i.name, {}).get("nonfinite_activations", 0) > 0]
        if _finite(entry["loss"]) and not bad_grads:
            continue
        return {
            "step": entry["step"],
            "where": "loss" if not _finite(entry["loss"]) else "gradients",
            "loss": entry["loss"],
            "layers_with_nonfinite_gradients": bad_grads,
            "layers_with_nonfinite_outputs": bad_outputs,
            "first_layer_from_output": (bad_grads or bad_outputs or [None])[-1],
            "first_layer_from_input": (bad_outputs or bad_grads or [None])[0],
        }
    return None


def _fastest_growing_layer(probe) -> tuple | None:
    """``(layer, first, last)`` gradient norms of the layer whose gradient grew most."""
    best = None
    for info in probe.weighted_layers():
        norms = probe.series(info.name, "grad_norm")
        norms = norms[np.isfinite(norms)]
        if norms.size == 0:
            continue
        first, last = float(norms[0]), float(norms[-1])
        growth = last / first if first > 0 else math.inf
        score = (growth, last) if norms.size > 1 else (0.0, last)
        if best is None or score > best[0]:
            best = (score, info.name, first, last)
    return None if best is None else best[1:]


def _describe_finding(finding, probe, measurement, first_step: int) -> str:
    """One paragraph: rule, message, the layer and its numbers."""
    where = finding.first_layer
    text = f"{finding.rule} {finding.name} ({finding.severity}): {finding.message}"
    if where:
        stats = measurement["layers"].get(where, {})
        numbers = ", ".join(f"{name} {stats[name]:.3g}" for name in ("grad_norm", "update_ratio")
                            if name in stats)
        text += f" Layer: {where}" + (f" ({numbers} at this step)." if numbers else ".")
    else:
        growing = _fastest_growing_layer(probe)
        if growing is not None:
            layer, first, last = growing
            text += (f" Layer: {layer} has the fastest-growing gradient (norm {first:.3g} at step "
                     f"{first_step}, {last:.3g} now).")
    return text


@functools.lru_cache(maxsize=None)
def _metadata(plugin: str):
    """The summary metadata tf.summary.scalar/histogram write (TensorBoard's plugins)."""
    from tensorflow.core.framework import summary_pb2

    return summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin, content=b""))


def _write_scalar(tf, tag, value, step):
    # tf.summary.scalar needs the tensorboard package; this writes the same record without it.
    tf.summary.write(tag, tf.constant(value, "float32"), step=step, metadata=_metadata("scalars"))


def _write_histogram(tf, tag, low, high, counts, step):
    """A histogram record in the layout of tf.summary.histogram: rows of (left, right, count)."""
    buckets = len(counts)
    if not (math.isfinite(low) and math.isfinite(high)):
        data = np.zeros((buckets, 3))
    elif high == low:
        data = np.stack([np.full(buckets, low), np.full(buckets, high),
                         np.r_[np.zeros(buckets - 1), counts.sum()]], axis=1)
    else:
        edges = np.linspace(low, high, buckets + 1)
        data = np.stack([edges[:-1], edges[1:], counts], axis=1)
    tf.summary.write(tag, tf.constant(data, "float64"), step=step, metadata=_metadata("histograms"))


# --------------------------------------------------------------------------
# The public class is created on first use, so importing this module does not
# import TensorFlow (it must subclass keras.callbacks.Callback).

def __getattr__(name):
    if name == "GradientMonitor":
        _, keras = _import()
        monitor_class = type("GradientMonitor", (_GradientMonitor, keras.callbacks.Callback), {
            "__doc__": _GradientMonitor.__doc__, "__module__": __name__,
            "__qualname__": "GradientMonitor"})
        globals()["GradientMonitor"] = monitor_class
        return monitor_class
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
