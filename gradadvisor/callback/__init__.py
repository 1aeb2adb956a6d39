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
    graph; those parts sit in conds that unmeasured steps skip.  An unmeasured
    step still pays for the two conds and for holding the tensors they read
    until the update is done: about 0.15-0.2 ms, 2-5% of the small models'
    steps in ``scripts/bench_callback.py``, against the one trace saved (see
    below).  Once training has run long enough for a trace to fit in
    ``max_overhead`` of it, Keras' own train function is traced and runs the
    unmeasured steps, so a long training stops paying that cost.  Unmeasured
    steps run no second forward or backward pass.  On measured steps the layer
    outputs come from a forward pass of their own, on the same batch and
    weights inside the measuring branch, changing no state (a
    ``keras.StatelessScope`` drops its batch-norm and dropout-seed updates):
    reducing the update's own outputs would give TensorFlow's graph rewrites
    extra consumers to work around, and they then compile the forward pass
    differently (MobileNetV2's training drifted apart from the last bits on).
    Recurrent layers also run once more on measured steps, for the gradient
    reaching each timestep of their input.  The update is the one Keras
    makes: training with and without the monitor gives the same weights,
    batch-norm statistics and dropout seeds, bit for bit in the tests.  The
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

from .monitor import MODES, GradientWarning, _GradientMonitor, _import
from .train_step import _MonitoredTrainFunction  # noqa: F401  (re-exported: tests import it from here)

__all__ = ["GradientMonitor", "GradientWarning", "MODES"]

# Public classes show the path users import them from.
GradientWarning.__module__ = __name__


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
