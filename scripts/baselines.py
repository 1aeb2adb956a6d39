"""Peer detectors re-implemented over the zoo's own measurements.

Each baseline reads a :class:`zoo.Trace` (a plain ``tf.GradientTape`` training
run) and returns its verdict as ``{"category", "symptom", "layer", "epoch"}``
with ``category`` one of ``vanishing``, ``exploding``, ``dead_units``,
``saturation``, ``other`` (a problem outside these four) or None (nothing
found).  The code is a re-implementation from the papers and the public code,
not a copy; where the original needs something our models lack, the closest
faithful reading is used and said so below.

The baselines see the whole verification run: by default ``num_epochs = 20``
"epochs" of ``steps / 20`` steps each, far more than the 30 steps gradadvisor
probes.  Their monitors check at the end of an epoch, on the first
``batch_size`` training samples, as the originals do.

AUTOTRAINER
    Zhang, Zhai, Ma, Shen, "AUTOTRAINER: An Automatic DNN Training Problem
    Detection and Repair System", ICSE 2021, Section III (problem detection:
    the symptoms of vanishing gradient, exploding gradient, dying ReLU,
    oscillating loss and slow convergence).  Thresholds from the public code,
    github.com/shiningrain/AUTOTRAINER at commit 04f4033 (the ICSE release):
    ``AutoTrainer/utils/utils.py`` ``default_param`` (beta_1 = 1e-3,
    beta_2 = 1e-4, beta_3 = 70, gamma = 0.7, zeta = 0.03, eta = 0.2,
    delta = 0.01, Theta = 0.7) and ``AutoTrainer/utils/monitor.py``
    (``gradient_issue``, ``loss_issue``, ``ol_judge``, ``IssueMonitor.determine``;
    ``judgment_point = 0.3``, NaN-loss bound 1e5); ``model_train`` checks every
    3 epochs (``checktype='epoch_3'``) with ``determine_threshold = 1``, and
    ``AutoTrainer/utils/modules.py`` ``problem_evaluation`` orders the problems.

DeepDiagnosis
    Wardat, Cruz, Le, Rajan, "DeepDiagnosis: Automatically Diagnosing Faults
    and Recommending Actionable Fixes in Deep Learning Programs", ICSE 2022,
    Section 3 (the eight error conditions checked during training).
    Thresholds from the public code, github.com/DeepDiagnosis/ICSE2022
    ``callback/callbacks.py`` (class ``mapFaluireToFix``, commit 500b017):
    ``threshold_VG = 1e-7`` (mean absolute weight gradient, vanishing),
    ``threshold_layer_1 = 0.7`` (fraction of non-positive ReLU outputs, dead
    node), ``threshold_layer = 0.5`` with pre-activations beyond +-5 for
    sigmoid and tanh (saturated activation), NaN/Inf/zero means (numerical
    error), unchanged values over ``N = 5`` epochs and accuracy over
    ``FRQ = 20`` epochs.  The paper's ``threshold_low``/``threshold_high``
    names do not appear in that file; the constants above are what the code
    uses.
    Adaptations: the original reads pre-activations from the layer before a
    separate ``Activation`` layer; our layers fuse the activation, so the
    equivalent test is applied to their outputs (|z| >= 5 exactly when
    sigmoid(z) <= sigmoid(-5) or >= sigmoid(5), and when |tanh(z)| >= tanh(5)).
    Its gradient checks cover layers whose name contains ``dense``; here they
    cover every layer with a kernel except embeddings.  A "numerical error"
    caused by a NaN or infinity counts as exploding; one caused by an exactly
    zero mean (the code tests ``== 0`` too) counts as dead units when the layer
    is a ReLU layer, as other otherwise.  Note that the mean of a softmax output
    layer's kernel gradient is zero in exact arithmetic (each sample's
    probabilities minus its one-hot target sum to zero), so the published
    ``== 0`` test fires on healthy models whenever float32 rounding lands
    exactly on zero; that is the published behaviour and is kept.

Naive ratio
    The first kernel layer's gradient norm over the last one's, median over the
    first 30 training steps: vanishing below 1e-3, exploding above 1e3 or when
    a loss or gradient turns non-finite in those steps.
"""

from __future__ import annotations

import math

import numpy as np

#: AUTOTRAINER default_param (utils.py) and monitor.py keyword defaults.
AUTOTRAINER_PARAMS = {"beta_1": 1e-3, "beta_2": 1e-4, "beta_3": 70, "gamma": 0.7, "zeta": 0.03,
                      "eta": 0.2, "delta": 0.01, "Theta": 0.7}
AUTOTRAINER_CHECK_GAP = 3
AUTOTRAINER_JUDGMENT_POINT = 0.3
AUTOTRAINER_NAN_LOSS = 1e5
#: problem_evaluation in modules.py: the priority among several problems.
AUTOTRAINER_PRIORITY = {"vanish": 2, "explode": 2, "relu": 2, "not_converge": 1, "unstable": 1}
AUTOTRAINER_CATEGORY = {"vanish": "vanishing", "explode": "exploding", "relu": "dead_units",
                        "not_converge": "other", "unstable": "other"}

DEEPDIAGNOSIS_VANISHING = 1e-7
DEEPDIAGNOSIS_DEAD = 0.7
DEEPDIAGNOSIS_SATURATED = 0.5
DEEPDIAGNOSIS_N = 5
DEEPDIAGNOSIS_FRQ = 20

NAIVE_LOW, NAIVE_HIGH, NAIVE_STEPS = 1e-3, 1e3, 30


def _epoch_checks(trace):
    """The checks made at the end of each epoch (check 0 is before training)."""
    return trace.checks[1:]


def _verdict(category=None, symptom=None, layer=None, epoch=None):
    return {"category": category, "symptom": symptom, "layer": layer, "epoch": epoch}


# --------------------------------------------------------------------------
# AUTOTRAINER

def _ol_judge(accuracies, threshold, rate) -> bool:
    """Oscillation: enough local max/min pairs of the accuracy curve at least
    ``threshold`` apart (``ol_judge`` in monitor.py)."""
    maxima, minima = [], []
    for i in range(1, len(accuracies) - 1):
        before, here, after = accuracies[i - 1], accuracies[i], accuracies[i + 1]
        if here - before >= 0 and here - after >= 0:
            maxima.append(here)
        if here - before <= 0 and here - after <= 0:
            minima.append(here)
    count = sum(1 for high, low in zip(maxima, minima) if high - low >= threshold)
    return count >= rate * len(accuracies)


def _max_rise(values) -> float:
    """Largest increase between consecutive epochs (``max_delta_acc``)."""
    rises = [b - a for a, b in zip(values, values[1:])]
    return max([0.0] + rises)


def autotrainer(trace) -> dict:
    """AUTOTRAINER's monitor over the run; stops at the first problem found."""
    params = AUTOTRAINER_PARAMS
    flow = [name for name in trace.flow_layers
            if trace.layer_info[name]["class_name"] != "Embedding"] or trace.flow_layers
    first, last = flow[0], flow[-1]
    features = {"vanish": 0, "explode": 0, "relu": 0, "nan_gradient": False, "nan_weight": False,
                "nan_loss": False, "not_converge": False, "sc_accuracy": False, "unstable": False}
    history = {"loss": [], "acc": [], "val_loss": [], "val_acc": []}
    total_epochs = trace.num_epochs
    for epoch, check in enumerate(_epoch_checks(trace)):
        history["loss"].append(check["train_loss"])
        history["acc"].append(check["train_accuracy"])
        history["val_loss"].append(check["val_loss"])
        history["val_acc"].append(check["val_accuracy"])
        if epoch % AUTOTRAINER_CHECK_GAP != 0 and not check["nonfinite_grads"] and math.isfinite(
                check["train_loss"]):
            continue
        # gradient_issue: gradients of the first batch, kernels only.
        if check["nonfinite_grads"]:
            features["nan_gradient"] = True
        else:
            norm_first = check["kernel_grad_norm"][first]
            norm_last = check["kernel_grad_norm"][last]
            rate = norm_first / norm_last if norm_last > 0 else (math.inf if norm_first > 0 else math.nan)
            if rate < params["beta_1"] and norm_first < params["beta_2"]:
                features["vanish"] += 1
            if rate > params["beta_3"]:
                features["explode"] += 1
            if check["zero_grad_fraction"] >= params["gamma"]:
                features["relu"] += 1
        if check["nonfinite_weights"]:
            features["nan_weight"] = True
        # loss_issue
        losses, val_losses = np.asarray(history["loss"]), np.asarray(history["val_loss"])
        if (not np.all(np.isfinite(losses)) or not np.all(np.isfinite(val_losses))
                or val_losses[-1] >= AUTOTRAINER_NAN_LOSS):
            features["nan_loss"] = True
        elif len(losses) >= AUTOTRAINER_JUDGMENT_POINT * total_epochs:
            if _ol_judge(history["acc"], params["zeta"], params["eta"]):
                features["unstable"] = True
            if max(history["val_acc"]) < params["Theta"] or max(history["acc"]) < params["Theta"]:
                features["not_converge"] = True
            if (_max_rise(history["val_acc"]) < params["delta"]
                    and _max_rise(history["acc"]) < params["delta"]):
                features["sc_accuracy"] = True
        # IssueMonitor.determine
        issues = []
        if features["nan_loss"] or features["nan_weight"] or features["nan_gradient"]:
            issues.append("explode")
        if features["not_converge"] or features["sc_accuracy"]:
            if features["relu"] >= 1:
                issues.append("relu")
            elif features["explode"] >= 1:
                issues.append("explode")
            elif features["vanish"] >= 1:
                issues.append("vanish")
            elif features["sc_accuracy"]:
                issues.append("not_converge")
        elif features["unstable"]:
            issues.append("unstable")
        if issues:
            issue = max(issues, key=lambda name: AUTOTRAINER_PRIORITY[name])
            return _verdict(AUTOTRAINER_CATEGORY[issue], issue, None, epoch)
    return _verdict()


# --------------------------------------------------------------------------
# DeepDiagnosis

def _all_equal(values) -> bool:
    """``meanResult``: the mean equals the maximum, i.e. nothing changed."""
    values = np.asarray(values, dtype="float64")
    return bool(values.size and np.mean(values) == np.max(values))


def _numerical(value) -> str | None:
    """``identifyNumerical``: why a mean value is an error, or None."""
    if value is None:
        return None
    if math.isnan(value) or math.isinf(value):
        return "nonfinite"
    if value == 0:
        return "zero"
    return None


def deepdiagnosis(trace) -> dict:
    """DeepDiagnosis's ``mapFaluireToFix`` monitor; stops at the first symptom."""
    observed = list(_epoch_checks(trace)[0]["layers"]) if len(trace.checks) > 1 else []
    gradient_layers = [name for name in trace.flow_layers
                       if trace.layer_info[name]["class_name"] != "Embedding"]
    forward = {name: [] for name in observed}
    delta_weights = {name: [] for name in gradient_layers}
    kernels = {name: [] for name in gradient_layers}
    losses, accuracies = [], []
    total_epochs = trace.num_epochs

    def numerical_symptom(kind, where, layer, epoch):
        if kind == "nonfinite":
            return _verdict("exploding", f"numerical error ({where})", layer, epoch)
        is_relu = trace.layer_info.get(layer, {}).get("activation") == "relu"
        return _verdict("dead_units" if is_relu else "other", f"numerical error, zero ({where})",
                        layer, epoch)

    for epoch, check in enumerate(_epoch_checks(trace)):
        counter = epoch + 1
        layers = check["layers"]
        # Forward: outputs of every layer on the first batch.
        for position, name in enumerate(observed):
            stats = layers[name]
            mean = stats["mean"] if not stats["nonfinite"] else math.nan
            forward[name].append(mean)
            is_last = position == len(observed) - 1
            if is_last and epoch == 0 and _out_of_range(stats["activation"], trace):
                return _verdict("other", "out of range", name, epoch)
            kind = _numerical(mean)
            if kind:
                return numerical_symptom(kind, "forward", name, epoch)
            if stats["activation"] == "relu" and epoch == total_epochs - 1:
                if stats["nonpositive_fraction"] >= DEEPDIAGNOSIS_DEAD:
                    return _verdict("dead_units", "dead node", name, epoch)
            if counter % DEEPDIAGNOSIS_N == 0 and not is_last and "preactivation_beyond_5" in stats:
                if stats["preactivation_beyond_5"] > DEEPDIAGNOSIS_SATURATED:
                    return _verdict("saturation", "saturated activation", name, epoch)
        if counter % DEEPDIAGNOSIS_N == 0:
            for name in observed[:-1]:
                if _all_equal(forward[name][-DEEPDIAGNOSIS_N:]) and "Flatten" not in name:
                    return _verdict("other", "unchanged tensor (forward)", name, epoch)
                forward[name].clear()
        # Metrics.
        loss = check["train_loss"]
        losses.append(loss)
        if not math.isfinite(loss):
            return _verdict("exploding", "invalid loss", None, epoch)
        if counter % DEEPDIAGNOSIS_N == 0:
            if _all_equal(losses[-DEEPDIAGNOSIS_N:]):
                return _verdict("other", "loss not decreasing", None, epoch)
            losses.clear()
        accuracy = check["train_accuracy"]
        accuracies.append(accuracy)
        if not math.isfinite(accuracy) or accuracy == 0:
            return _verdict("other", "invalid accuracy", None, epoch)
        if counter % DEEPDIAGNOSIS_FRQ == 0:
            if _all_equal(accuracies[-DEEPDIAGNOSIS_FRQ:]):
                return _verdict("other", "accuracy not increasing", None, epoch)
            accuracies.clear()
        # Backward: weight gradients of the first batch, output layer first.
        for name in reversed(gradient_layers):
            mean_gradient = check["kernel_grad_mean"][name]
            kind = _numerical(mean_gradient)
            if kind:
                return numerical_symptom(kind, "delta weights", name, epoch)
            if check["kernel_grad_mean_abs"][name] < DEEPDIAGNOSIS_VANISHING:
                return _verdict("vanishing", "vanishing gradient", name, epoch)
            delta_weights[name].append(mean_gradient)
            kernel_mean = check["kernel_mean"][name]
            kernels[name].append(kernel_mean)
            kind = _numerical(kernel_mean)
            if kind:
                return numerical_symptom(kind, "weights", name, epoch)
        if counter % DEEPDIAGNOSIS_N == 0:
            for name in reversed(gradient_layers):
                if _all_equal(delta_weights[name][-DEEPDIAGNOSIS_N:]):
                    return _verdict("other", "unchanged tensor (delta weights)", name, epoch)
                delta_weights[name].clear()
                if _all_equal(kernels[name][-DEEPDIAGNOSIS_N:]):
                    return _verdict("other", "unchanged tensor (weights)", name, epoch)
                kernels[name].clear()
    return _verdict()


def _out_of_range(activation, trace) -> bool:
    """``identifyRange`` for the output layer: labels outside the activation's range."""
    if activation in (None, "softmax"):
        return False
    low, high = trace.label_range
    if activation == "sigmoid":
        return low < 0 or high > 1
    if activation == "tanh":
        return low < -1 or high > 1
    if activation in ("relu", "linear"):
        return "categorical" in trace.loss_name
    return False


# --------------------------------------------------------------------------
# Naive first/last gradient ratio

def naive_ratio(trace) -> dict:
    """Vanishing below 1e-3, exploding above 1e3 (or non-finite), else healthy."""
    first, last = trace.flow_layers[0], trace.flow_layers[-1]
    steps = min(NAIVE_STEPS, len(trace.loss))
    losses = np.asarray(trace.loss[:steps], dtype="float64")
    first_norms = np.asarray(trace.kernel_grad_norm[first][:steps], dtype="float64")
    last_norms = np.asarray(trace.kernel_grad_norm[last][:steps], dtype="float64")
    if not (np.all(np.isfinite(losses)) and np.all(np.isfinite(first_norms))
            and np.all(np.isfinite(last_norms))):
        return _verdict("exploding", "non-finite loss or gradient", None, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = first_norms / last_norms
    ratios = ratios[~np.isnan(ratios)]
    if not ratios.size:
        return _verdict()
    ratio = float(np.median(ratios))
    if ratio < NAIVE_LOW:
        return _verdict("vanishing", f"first/last gradient ratio {ratio:.2g}", None, None)
    if ratio > NAIVE_HIGH:
        return _verdict("exploding", f"first/last gradient ratio {ratio:.2g}", None, None)
    return _verdict()


BASELINES = {"AUTOTRAINER": autotrainer, "DeepDiagnosis": deepdiagnosis, "naive ratio": naive_ratio}

#: What each peer claims to detect and whether it names a layer.  The tables
#: show "n/a" for a category a peer does not cover (no rule of its maps to it)
#: and for the localisation of a peer that reports no layer, rather than
#: scoring it 0: AUTOTRAINER has no saturation symptom and reports the model,
#: not a layer; the naive ratio only tells vanishing from exploding.
COVERAGE = {
    "AUTOTRAINER": {"categories": ("vanishing", "exploding", "dead_units"), "localises": False},
    "DeepDiagnosis": {"categories": ("vanishing", "exploding", "dead_units", "saturation"),
                      "localises": True},
    "naive ratio": {"categories": ("vanishing", "exploding"), "localises": False},
}
