"""Named signals: the numbers rules are written in.

A signal is a Python function registered by name with a unit, a scope and a
docstring.  Its scope says what it is measured on:

* ``model``: one value for the whole probe;
* ``layer``: one value per layer (model-scope signals are visible too);
* ``timestep``: one value per recurrent layer, from its per-timestep gradients
  (model- and layer-scope signals of that layer are visible too).

A signal returns ``None`` where it does not apply (a dead-unit fraction for a
layer without ReLU); a comparison with ``None`` is false.  Signal names are a
contract between the probe, the rules and the report: stable snake_case.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Callable

import numpy as np

from ..probe import ProbeResult
from ..probe.outputs import (ACTIVATION_RANGES, logits_into_probability_loss, nonprobability_into_probability_loss,
                             probabilities_into_logits_loss, sigmoid_multiclass, softmax_one_unit,
                             softmax_rows_not_one, targets_out_of_range)

#: Floor for logarithms of gradient norms that are exactly zero.
_TINY = 1e-30
#: Layer classes whose gradients do not say anything about depth-wise flow.
_NORMALIZATION = ("BatchNormalization", "LayerNormalization", "GroupNormalization",
                  "UnitNormalization", "RMSNormalization")


@dataclasses.dataclass(frozen=True)
class Signal:
    """A registered signal: its name, scope, unit, documentation and function."""

    name: str
    scope: str
    unit: str
    doc: str
    function: Callable


REGISTRY: dict[str, Signal] = {}


def signal(name: str, scope: str, unit: str):
    """Register ``function`` as the signal ``name`` (decorator)."""
    if scope not in ("model", "layer", "timestep"):
        raise ValueError(f"Unknown signal scope {scope!r}")

    def register(function):
        doc = " ".join((function.__doc__ or "").split())
        REGISTRY[name] = Signal(name, scope, unit, doc, function)
        return function

    return register


# --------------------------------------------------------------------------
# Helpers over a probe

def _finite(values) -> np.ndarray:
    values = np.asarray(values, dtype="float64")
    return values[np.isfinite(values)]


def _median(values) -> float | None:
    # np.median, by sorting: for a few values it is several times faster, and
    # the rules take hundreds of medians each time they run.
    values = np.sort(_finite(values))
    size = values.size
    if not size:
        return None
    middle = size // 2
    return float(values[middle]) if size % 2 else float((values[middle - 1] + values[middle]) / 2)


def flow_layers(probe: ProbeResult) -> list:
    """Weighted layers whose gradient magnitude speaks for depth-wise flow.

    Normalization layers are left out: their scale and shift parameters get
    gradients of a different nature from kernels.
    """
    return [info for info in probe.weighted_layers() if info.class_name not in _NORMALIZATION]


def _reference_layer(probe: ProbeResult):
    layers = flow_layers(probe)
    if not layers:
        return None
    outputs = [info for info in layers if info.is_output]
    return outputs[-1] if outputs else layers[-1]


def _depths(probe: ProbeResult) -> dict:
    layers = flow_layers(probe)
    return {info.name: len(layers) - 1 - position for position, info in enumerate(layers)}


def _robust_slope(xs, ys) -> float | None:
    """Slope of ys against xs by Huber regression, so one odd point cannot decide."""
    xs = np.asarray(xs, dtype="float64")
    ys = np.asarray(ys, dtype="float64")
    if len(xs) < 3 or np.ptp(xs) == 0:
        return None
    if np.ptp(ys) == 0:
        return 0.0
    from sklearn.linear_model import HuberRegressor

    # Both axes brought to unit size: the fit then converges in about half the
    # iterations, to the same slope.
    scale = max(np.std(ys), 1e-6)
    span = float(np.ptp(xs))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = HuberRegressor(epsilon=1.35, alpha=0.0, max_iter=500)
        model.fit((xs / span).reshape(-1, 1), ys / scale)
    return float(model.coef_[0] * scale / span)


def layer_grad_rms(probe: ProbeResult, name: str) -> float | None:
    """Median over the finite steps of a layer's RMS gradient."""
    return _median(probe.series(name, "grad_rms"))


def finite_steps(probe: ProbeResult) -> int:
    """Steps before the first non-finite one."""
    return probe.nonfinite["step"] if probe.nonfinite else probe.steps_run


def depth_profile(probe: ProbeResult):
    """``(depths, log10 RMS gradients, names)`` of the flow layers, input to output."""
    depths = _depths(probe)
    names, xs, ys = [], [], []
    for info in flow_layers(probe):
        rms = layer_grad_rms(probe, info.name)
        if rms is None:
            continue
        names.append(info.name)
        xs.append(depths[info.name])
        ys.append(math.log10(max(rms, _TINY)))
    return xs, ys, names


# --------------------------------------------------------------------------
# Model-scope signals

@signal("depth_decay_factor", "model", "ratio per layer")
def depth_decay_factor(probe: ProbeResult, layer=None):
    """Factor by which the RMS gradient changes per layer, going from the output
    toward the input: a robust (Huber) fit of log10 RMS gradient against the
    distance from the output layer, over layers with kernels (median over the
    finite steps). Below 1 gradients shrink toward the input (vanishing); above 1
    they grow (exploding). None with fewer than three such layers.

    Kept on the probe: ``depth_trend_total`` reads it too, and the fit is the
    same."""
    cached = probe.__dict__.get("_depth_decay_factor")
    if cached is not None and cached[0] == probe.steps_run:
        return cached[1]
    xs, ys, _ = depth_profile(probe)
    slope = _robust_slope(xs, ys)
    value = None if slope is None else 10.0 ** slope
    probe.__dict__["_depth_decay_factor"] = (probe.steps_run, value)
    return value


@signal("depth_trend_total", "model", "ratio")
def depth_trend_total(probe: ProbeResult, layer=None):
    """The ratio of the first layer's RMS gradient to the output layer's that
    the depth trend alone predicts: ``depth_decay_factor`` to the power of the
    number of layers with kernels between them. A per-layer factor says little on
    its own in a deep network: 0.79 per layer is a gentle slope over 5 layers
    (0.3x) and a billionfold loss over 82 (4e-9x). None with fewer than three
    such layers."""
    factor = depth_decay_factor(probe)
    return None if factor is None else factor ** (len(flow_layers(probe)) - 1)


@signal("num_flow_layers", "model", "count")
def num_flow_layers(probe: ProbeResult, layer=None):
    """Number of layers with kernels (normalization layers not counted)."""
    return len(flow_layers(probe))


@signal("global_grad_norm_growth", "model", "ratio")
def global_grad_norm_growth(probe: ProbeResult, layer=None):
    """Largest finite global gradient norm over the first non-zero one: how far
    gradients grew across the probe's steps. Infinite when the gradients turned
    non-finite after the first step; 1 when every gradient was exactly zero (a
    norm that stays at zero did not grow; GA601 reports it)."""
    norms = np.asarray(probe.global_grad_norm, dtype="float64")
    if norms.size < 2 or not math.isfinite(norms[0]):
        return None
    # Measured from the first step with any gradient: a zero first norm leaves
    # the ratio undefined, and rules reading it (GA203, GA401) would go silent.
    positive = np.flatnonzero(norms > 0)
    if positive.size == 0:
        return 1.0 if np.all(np.isfinite(norms)) else math.inf
    start = int(positive[0])
    later = norms[start + 1:]
    if not np.all(np.isfinite(later)):
        return math.inf
    if later.size == 0:
        return 1.0
    return float(later.max() / norms[start])


@signal("peak_loss_ratio", "model", "ratio")
def peak_loss_ratio(probe: ProbeResult, layer=None):
    """The largest loss from the step of the largest global gradient norm to two
    steps after it, over the loss at the start (median of the first three
    steps). Above 1, the gradient peak came with (or threw the weights into) a
    loss worse than the untrained model's: divergence. Below 1, the peak is a
    spike on a loss that keeps its progress, such as one hard batch after
    convergence. Infinite when the loss turned non-finite."""
    losses = np.asarray(probe.loss, dtype="float64")
    norms = np.asarray(probe.global_grad_norm, dtype="float64")
    if not np.all(np.isfinite(losses)) or not np.all(np.isfinite(norms)):
        return math.inf
    if losses.size < 3 or norms.size == 0:
        return None
    start = float(np.median(losses[:3]))
    if start <= 0:
        return None
    peak = int(np.argmax(norms))
    return float(losses[peak:peak + 3].max() / start)


@signal("global_grad_norm_max", "model", "gradient units")
def global_grad_norm_max(probe: ProbeResult, layer=None):
    """Largest finite global gradient norm over the probe's steps: exactly 0
    when no trainable weight received any gradient at any step."""
    norms = _finite(probe.global_grad_norm)
    return float(norms.max()) if norms.size else None


@signal("grad_norm_relative_range", "model", "ratio")
def grad_norm_relative_range(probe: ProbeResult, layer=None):
    """(largest - smallest) finite global gradient norm over their median. Near
    0 over several batches and weight updates means the gradient depends on
    neither: the loss does not see the model's output. None with fewer than
    three finite steps or a zero median."""
    norms = _finite(probe.global_grad_norm)
    if norms.size < 3:
        return None
    middle = float(np.median(norms))
    return None if middle <= 0 else float(np.ptp(norms) / middle)


@signal("loss_relative_range", "model", "ratio")
def loss_relative_range(probe: ProbeResult, layer=None):
    """(largest - smallest) finite loss over the probe over the size of the
    median loss (at least 1e-12): 0 for a loss that did not move at all across
    batches and updates. None with fewer than three finite steps."""
    losses = _finite(probe.loss)
    if losses.size < 3:
        return None
    return float(np.ptp(losses) / max(abs(float(np.median(losses))), 1e-12))


@signal("probe_steps", "model", "steps")
def probe_steps(probe: ProbeResult, layer=None):
    """Number of steps the probe ran before any non-finite value."""
    return float(finite_steps(probe))


@signal("loss_ratio", "model", "ratio")
def loss_ratio(probe: ProbeResult, layer=None):
    """Last finite loss over the first one (median of the first and last three
    steps); infinite when the loss turned non-finite."""
    losses = np.asarray(probe.loss, dtype="float64")
    if losses.size < 2:
        return None
    if not np.all(np.isfinite(losses)):
        return math.inf
    head = float(np.median(losses[:3]))
    tail = float(np.median(losses[-3:]))
    if head <= 0:
        return None
    return tail / head


@signal("loss_end_to_untrained", "model", "ratio")
def loss_end_to_untrained(probe: ProbeResult, layer=None):
    """Last loss (median of the last three steps) over the loss of the first
    step, measured before any update: about 1 when the model ends where the
    untrained one started. Unlike ``loss_ratio`` its start is one step, so a
    blow-up in the second and third steps cannot inflate it. Infinite when the
    loss or any gradient turned non-finite (the probe stopped there: the run
    did not end anywhere); None with fewer than two steps or a first loss of 0."""
    losses = np.asarray(probe.loss, dtype="float64")
    if losses.size < 2:
        return None
    if probe.nonfinite or not np.all(np.isfinite(losses)):
        return math.inf
    if losses[0] <= 0:
        return None
    return float(np.median(losses[-3:]) / losses[0])


@signal("loss_nonfinite", "model", "flag (0 or 1)")
def loss_nonfinite(probe: ProbeResult, layer=None):
    """1 when the loss or any gradient became NaN or infinite during the probe."""
    return 1.0 if probe.nonfinite else 0.0


@signal("nonfinite_step", "model", "step")
def nonfinite_step(probe: ProbeResult, layer=None):
    """The step (from 0) at which values first became non-finite, or None."""
    return None if not probe.nonfinite else float(probe.nonfinite["step"])


@signal("first_step_grad_rms_max", "model", "gradient units")
def first_step_grad_rms_max(probe: ProbeResult, layer=None):
    """Largest RMS gradient of any layer at the first step, before any update
    could blow weights up: large values point at the initial weights."""
    values = [probe.series(info.name, "grad_rms")[:1] for info in flow_layers(probe)]
    values = _finite(np.concatenate(values)) if values else np.array([])
    return float(values.max()) if values.size else None


# --------------------------------------------------------------------------
# Layer-scope signals

@signal("grad_rms_ratio_to_output", "layer", "ratio")
def grad_rms_ratio_to_output(probe: ProbeResult, layer):
    """The layer's RMS gradient over the output layer's (medians over the finite
    steps). Tiny values mean gradient barely reaches the layer; huge values mean
    it grows on the way back."""
    if layer.class_name in _NORMALIZATION or layer.num_params == 0:
        return None
    reference = _reference_layer(probe)
    mine = layer_grad_rms(probe, layer.name)
    theirs = layer_grad_rms(probe, reference.name) if reference else None
    if mine is None or not theirs:
        return None
    return mine / theirs


@signal("depth_from_output", "layer", "layers")
def depth_from_output(probe: ProbeResult, layer):
    """How many layers with kernels separate this layer from the output layer (0
    for the output layer itself)."""
    return _depths(probe).get(layer.name)


@signal("is_output", "layer", "flag (0 or 1)")
def is_output(probe: ProbeResult, layer):
    """1 for a layer that produces a model output."""
    return 1.0 if layer.is_output else 0.0


def _stat_signal(stat: str, how: str = "median"):
    def compute(probe: ProbeResult, layer):
        values = probe.series(layer.name, stat)
        if values.size == 0:
            return None
        if how == "max":
            return float(np.max(values))
        if how in ("late", "late_min"):
            # Units that die stay dead: the end of the probe says more than its start.
            late = values[-max(1, len(values) // 3):]
            if how == "late_min":
                late = _finite(late)
                return float(late.min()) if late.size else None
            return _median(late)
        return _median(values)

    return compute


for _name, _stat, _unit, _how, _doc in [
    ("dead_fraction", "dead_fraction", "fraction", "late",
     "Median over the last third of the steps of the fraction of ReLU units that output zero "
     "for the whole batch (dead units stay dead, so the latest steps count)."),
    ("dead_fraction_persistent", "dead_fraction", "fraction", "late_min",
     "Smallest fraction, over the last third of the steps, of ReLU units that output zero for "
     "the whole batch. Units dead on every sample are dead in every batch, so this is at least "
     "their share; a unit that is merely off for one small batch (a sparse unit, a batch of 16) "
     "does not count unless it is off in every late batch."),
    ("saturated_fraction", "saturated_fraction", "fraction", "median",
     "Median over steps of the fraction of sigmoid/tanh outputs within 1e-2 of an asymptote."),
    ("update_ratio", "update_ratio", "ratio", "median",
     "Median over finite steps of ||w_after - w_before|| / ||w_before|| per step."),
    ("zero_grad_fraction", "zero_grad_fraction", "fraction", "median",
     "Median over steps of the fraction of gradient entries that are exactly zero."),
    ("nonfinite_grads", "nonfinite_grads", "count", "max",
     "Largest number of NaN or infinite gradient entries at any step."),
    ("grad_rms", "grad_rms", "gradient units", "median",
     "Median over finite steps of the layer's RMS gradient."),
]:
    _function = _stat_signal(_stat, _how)
    _function.__doc__ = _doc
    signal(_name, "layer", _unit)(_function)


@signal("dead_fraction_rise", "layer", "fraction")
def dead_fraction_rise(probe: ProbeResult, layer):
    """Share of the layer's ReLU units that died during the probe: the
    persistent dead fraction (``dead_fraction_persistent``, dead for the whole
    batch in every one of the last third of the steps) minus the dead fraction
    at the first step. Units dead from the start do not count; units that a
    too-large update pushed off for good do."""
    values = _finite(probe.series(layer.name, "dead_fraction"))
    late = _stat_signal("dead_fraction", "late_min")(probe, layer)
    if values.size < 2 or late is None:
        return None
    return max(0.0, late - float(values[0]))


@signal("dead_fraction_persistent_max", "model", "fraction")
def dead_fraction_persistent_max(probe: ProbeResult, layer=None):
    """The largest ``dead_fraction_persistent`` of any layer: the share of the
    most damaged ReLU layer's units that output zero for the whole batch in
    every one of the last third of the steps. None without ReLU layers."""
    late_min = _stat_signal("dead_fraction", "late_min")
    values = [v for v in (late_min(probe, info) for info in probe.layers) if v is not None]
    return max(values) if values else None


@signal("update_ratio_max", "layer", "ratio")
def update_ratio_max(probe: ProbeResult, layer):
    """Largest ||w_after - w_before|| / ||w_before|| of any finite step: the
    biggest single update of the probe. Once units have died their weights get
    no gradient, so the median step (``update_ratio``) shrinks; the update that
    killed them stays in the maximum."""
    values = _finite(probe.series(layer.name, "update_ratio"))
    return float(values.max()) if values.size else None


#: Layer classes whose gradients are sparse by design: a lookup only updates
#: the rows the batch used.
_SPARSE = ("Embedding",)
#: A layer with at least this fraction of dead ReLU units (GA401) or saturated
#: sigmoid/tanh outputs (GA402) passes little or no gradient to the layers before it.
_BLOCKING = 0.5


@signal("zero_grads_explained", "layer", "flag (0 or 1)")
def zero_grads_explained(probe: ProbeResult, layer):
    """1 when exactly-zero gradient entries in this layer have a known reason
    that another rule reports or that is by design: the layer is a sparse lookup
    (Embedding: unused rows get no gradient), a layer at or after it in the
    forward pass has at least half its ReLU units dead (GA401) or half its
    sigmoid/tanh outputs saturated (GA402), no layer got any
    gradient (GA601), or layer outputs were not recorded, so dead units cannot be
    ruled out. 0 otherwise: then the zeros are the vanishing or frozen layer the
    gradient rules look for (an underflow to exactly zero, say)."""
    if any(kind in layer.class_name for kind in _SPARSE):
        return 1.0
    if not probe.activations_recorded or global_grad_norm_max(probe) == 0:
        return 1.0
    return 1.0 if layer.index <= _last_blocking_index(probe) else 0.0


def _last_blocking_index(probe: ProbeResult) -> int:
    """Index of the last layer with at least half its ReLU units dead or its
    saturating outputs saturated (these pass no gradient back), or -1.

    Kept on the probe: every layer of a rule asks, and the answer is the same.
    """
    cached = probe.__dict__.get("_last_blocking_index")
    if cached is not None and cached[0] == probe.steps_run:
        return cached[1]
    dead = _stat_signal("dead_fraction", "late")
    saturated = _stat_signal("saturated_fraction", "median")
    # An output sigmoid is left out, as GA402 leaves it out: the compiled
    # crossentropy trains through its logit, so saturation there blocks nothing.
    indices = [info.index for info in probe.layers
               if any(value is not None and value >= _BLOCKING
                      for value in (dead(probe, info), None if info.is_output else saturated(probe, info)))]
    value = max(indices, default=-1)
    probe.__dict__["_last_blocking_index"] = (probe.steps_run, value)
    return value


def _output_range_bound(which: int):
    def compute(probe: ProbeResult, layer):
        entry = _output_entry(probe, layer)
        if entry is None or entry.get("activation") is None:
            return None
        return ACTIVATION_RANGES.get(entry["activation"], (-math.inf, math.inf))[which]
    return compute


for _name, _which, _doc in [
    ("output_range_low", 0, "The lowest value the output layer's activation can produce (-inf for "
                            "none). None for a layer that is not an output."),
    ("output_range_high", 1, "The highest value the output layer's activation can produce (inf for "
                             "none). None for a layer that is not an output."),
]:
    _function = _output_range_bound(_which)
    _function.__doc__ = _doc
    signal(_name, "layer", "value")(_function)


def _target_value(key):
    def compute(probe: ProbeResult, layer):
        entry = _output_entry(probe, layer)
        targets = (entry or {}).get("targets") or {}
        return targets.get(key)
    return compute


for _name, _key, _doc in [
    ("target_p01", "p01", "1st percentile of the output's target values (the user's data only)."),
    ("target_p99", "p99", "99th percentile of the output's target values (the user's data only)."),
    ("target_row_sum_p99", "row_sum_p99",
     "99th percentile of each sample's targets summed over the output's last axis (1 for one "
     "label per sample; the user's data only)."),
]:
    _function = _target_value(_key)
    _function.__doc__ = _doc
    signal(_name, "layer", "value")(_function)


@signal("weight_norm_growth", "layer", "ratio")
def weight_norm_growth(probe: ProbeResult, layer):
    """Last finite weight norm over the first: how much the step updates grew
    the layer's weights during the probe."""
    values = _finite(probe.series(layer.name, "weight_norm"))
    if values.size < 2 or values[0] <= 0:
        return None
    return float(values[-1] / values[0])


# --------------------------------------------------------------------------
# Output configuration (layer scope: the output layer is what they name)

def _output_entry(probe: ProbeResult, layer):
    """The recorded description of ``layer`` as a model output, or None."""
    if not layer.is_output:
        return None
    for entry in probe.outputs or []:
        name = entry.get("layer")
        if name and (layer.name == name or layer.name.endswith("/" + name)):
            return entry
    return None


def _output_flag(check):
    def compute(probe: ProbeResult, layer):
        entry = _output_entry(probe, layer)
        if entry is None:
            return None
        verdict = check(entry)
        return None if verdict is None else (1.0 if verdict else 0.0)

    return compute


for _name, _check, _doc in [
    ("output_softmax_one_unit", softmax_one_unit,
     "1 for an output layer that applies softmax over a single unit: its output is 1.0 for "
     "every input and its gradient exactly zero. None for other layers."),
    ("output_sigmoid_multiclass", sigmoid_multiclass,
     "1 for an output layer with several sigmoid units trained with a categorical "
     "crossentropy: independent per-class probabilities where the loss expects a "
     "distribution that sums to 1. None for other layers or an unknown loss."),
    ("output_logits_to_probability_loss", logits_into_probability_loss,
     "1 for a linear (logit) output layer whose crossentropy loss expects probabilities "
     "(from_logits=False). None where the loss's expectation cannot be read."),
    ("output_probabilities_to_logits_loss", probabilities_into_logits_loss,
     "1 for a softmax or sigmoid output layer whose crossentropy loss expects logits "
     "(from_logits=True): the probabilities are squashed a second time. None where the "
     "loss's expectation cannot be read."),
    ("output_nonprobability_to_probability_loss", nonprobability_into_probability_loss,
     "1 for an output layer whose activation is neither linear nor a probability (ReLU, "
     "tanh, ...) under a crossentropy that expects probabilities (from_logits=False): "
     "outputs above 1 or rows that do not sum to 1 are clipped or divided by a sum that "
     "can be zero. None where the loss's expectation cannot be read."),
    ("output_targets_out_of_range", targets_out_of_range,
     "1 for an output layer whose activation cannot produce the targets: more than 1% of "
     "the target values lie outside the activation's range (a sigmoid output for a "
     "regression target above 1). None without the user's targets (synthetic data, a "
     "tf.data stream) or for sparse labels."),
    ("output_softmax_rows_not_one", softmax_rows_not_one,
     "1 for a softmax output whose target rows do not sum to 1 (more than 1% of them off "
     "by more than 0.01): several labels per sample, which a softmax distribution cannot "
     "give. None without the user's targets or for sparse labels."),
]:
    _function = _output_flag(_check)
    _function.__doc__ = _doc
    signal(_name, "layer", "flag (0 or 1)")(_function)


def output_problems(probe: ProbeResult) -> list:
    """``[(output layer, what is wrong)]`` for every misconfigured output, in words."""
    texts = {
        "output_softmax_one_unit": "softmax over one unit is 1.0 for every input and passes no gradient",
        "output_sigmoid_multiclass": "sigmoid units trained with a categorical crossentropy",
        "output_logits_to_probability_loss": "a linear output fed to a loss that expects probabilities",
        "output_probabilities_to_logits_loss": "probabilities fed to a loss that expects logits",
        "output_nonprobability_to_probability_loss":
            "an output that is not a probability fed to a loss that expects probabilities",
        "output_targets_out_of_range": "targets outside the range the output activation can produce",
        "output_softmax_rows_not_one": "a softmax output for targets with several labels per sample",
    }
    problems = []
    for info in probe.layers:
        if not info.is_output:
            continue
        for name, text in texts.items():
            if REGISTRY[name].function(probe, info) == 1.0:
                problems.append((info.name, text))
    return problems


# --------------------------------------------------------------------------
# Timestep-scope signals

def _timestep_profile(probe: ProbeResult, layer):
    steps = probe.timestep_grad_norms.get(layer.name)
    if not steps:
        return None
    matrix = np.asarray(steps, dtype="float64")
    matrix = matrix[np.all(np.isfinite(matrix), axis=1)]
    if matrix.size == 0:
        return None
    return np.median(matrix, axis=0)


@signal("num_timesteps", "timestep", "timesteps")
def num_timesteps(probe: ProbeResult, layer):
    """Length of the sequences the recurrent layer ran over."""
    profile = _timestep_profile(probe, layer)
    return None if profile is None else float(profile.size)


@signal("temporal_ratio", "timestep", "ratio")
def temporal_ratio(probe: ProbeResult, layer):
    """Norm of d loss / d input at the first timestep over that at the last
    (medians over steps). Tiny: early inputs no longer influence learning."""
    profile = _timestep_profile(probe, layer)
    if profile is None or profile.size < 2:
        return None
    last = profile[-1]
    if last <= 0:
        # Only the final state matters for the gradient path; fall back to the
        # largest timestep norm as the reference.
        last = profile.max()
        if last <= 0:
            return None
    return float(profile[0] / last)


@signal("temporal_decay_factor", "timestep", "ratio per timestep")
def temporal_decay_factor(probe: ProbeResult, layer):
    """Factor by which d loss / d input_t changes per timestep going back in
    time: a Huber fit of its log10 against the distance from the last timestep.
    Below 1 the gradient vanishes through time; above 1 it explodes."""
    profile = _timestep_profile(probe, layer)
    if profile is None or profile.size < 3:
        return None
    distance = np.arange(profile.size)[::-1]
    slope = _robust_slope(distance, np.log10(np.maximum(profile, _TINY)))
    return None if slope is None else 10.0 ** slope


# --------------------------------------------------------------------------

def evaluate_signals(probe: ProbeResult, names, layer=None, cache: dict | None = None) -> dict:
    """Compute the named signals for one layer (or the model when ``layer`` is None).

    ``cache``, a dict kept for one probe, holds every value computed so far:
    rules that share a signal (vanishing and exploding both read the depth
    profile and the decay through time) then compute it once.
    """
    values = {}
    for name in names:
        entry = REGISTRY[name]
        if entry.scope != "model" and layer is None:
            values[name] = None
            continue
        key = (name, None if entry.scope == "model" else layer.name)
        if cache is not None and key in cache:
            values[name] = cache[key]
            continue
        value = entry.function(probe, layer)
        values[name] = None if value is None else float(value)
        if cache is not None:
            cache[key] = values[name]
    return values
