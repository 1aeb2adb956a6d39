"""Whether a model output, its loss and the user's targets fit together.

Each check reads one entry of :func:`~.stats.describe_outputs` (the output's
activation and width, the loss's kind and ``from_logits``, and
:func:`describe_targets` of the user's targets) and returns True, False, or
None when the entry does not say enough to judge.  The output-configuration
signals (and so rules GA701-GA707) and the output surgery's choice of fix
both read these, so a finding and the fix it opens cannot disagree.
"""

from __future__ import annotations

import math

import numpy as np

#: Output activations that produce probabilities.
PROBABILITIES = ("softmax", "sigmoid")


def softmax_one_unit(entry) -> bool | None:
    """Whether the output applies softmax over a single unit (1.0 for every input)."""
    if entry.get("activation") is None or entry.get("units") is None:
        return None
    return entry["activation"] == "softmax" and entry["units"] == 1


def sigmoid_multiclass(entry) -> bool | None:
    """Whether several sigmoid units are trained with a categorical crossentropy."""
    if entry.get("activation") is None or entry.get("loss_kind") is None:
        return None
    return (entry["activation"] == "sigmoid" and entry["loss_kind"] in ("categorical", "sparse")
            and (entry.get("units") or 0) > 1)


def logits_into_probability_loss(entry) -> bool | None:
    """Whether a linear output (logits) feeds a crossentropy that expects probabilities."""
    if entry.get("activation") is None or entry.get("from_logits") is None:
        return None
    return entry["activation"] == "linear" and entry["from_logits"] is False


def probabilities_into_logits_loss(entry) -> bool | None:
    """Whether a softmax or sigmoid output feeds a crossentropy that expects logits."""
    if entry.get("activation") is None or entry.get("from_logits") is None:
        return None
    return entry["activation"] in PROBABILITIES and entry["from_logits"] is True


def nonprobability_into_probability_loss(entry) -> bool | None:
    """Whether an output that is neither linear nor a probability (ReLU, tanh, ...)
    feeds a crossentropy that expects probabilities."""
    activation = entry.get("activation")
    if activation is None or entry.get("from_logits") is None:
        return None
    return activation not in PROBABILITIES + ("linear",) and entry["from_logits"] is False


#: The outputs an activation can produce, ``(lowest, highest)``; activations
#: not listed are unbounded both ways (linear, leaky ReLU, PReLU).
ACTIVATION_RANGES = {
    "sigmoid": (0.0, 1.0), "hard_sigmoid": (0.0, 1.0), "softmax": (0.0, 1.0),
    "tanh": (-1.0, 1.0), "hard_tanh": (-1.0, 1.0), "softsign": (-1.0, 1.0),
    "relu": (0.0, math.inf), "relu6": (0.0, 6.0), "softplus": (0.0, math.inf),
    "exponential": (0.0, math.inf), "elu": (-1.0, math.inf), "selu": (-1.7581, math.inf),
    "gelu": (-0.17, math.inf), "silu": (-0.279, math.inf), "swish": (-0.279, math.inf),
}
#: How far past an activation's bound a target may lie and still count as reachable.
_REACH_TOLERANCE = 1e-3


def _judged_targets(entry):
    """The output's target summary when the range rules can judge it, else None."""
    targets = entry.get("targets")
    if not targets or entry.get("activation") is None or entry.get("loss_kind") == "sparse":
        # Sparse labels are class ids, not values the output should produce.
        return None
    return targets


def targets_out_of_range(entry) -> bool | None:
    """Whether more than 1% of an output's targets lie outside its activation's range.

    ``entry`` is one item of :func:`~.stats.describe_outputs`; None when it
    cannot be judged (no user targets, sparse labels, an unknown activation).
    """
    targets = _judged_targets(entry)
    if targets is None:
        return None
    low, high = ACTIVATION_RANGES.get(entry["activation"], (-math.inf, math.inf))
    margin = _REACH_TOLERANCE * (1.0 + max(abs(low), abs(high)) if math.isfinite(low + high) else 1.0)
    return targets["p01"] < low - margin or targets["p99"] > high + margin


def softmax_rows_not_one(entry) -> bool | None:
    """Whether a softmax output's target rows do not sum to 1 (several labels per sample).

    None when it cannot be judged (not a softmax, no user targets, sparse labels).
    """
    targets = _judged_targets(entry)
    if targets is None or entry["activation"] != "softmax" or "row_sum_p01" not in targets:
        return None
    return targets["row_sum_p01"] < 1.0 - 0.01 or targets["row_sum_p99"] > 1.0 + 0.01


def describe_targets(y) -> dict | None:
    """The range of a target array, as the output-range rule reads it.

    Returns:
        ``{"p01", "p99", "min", "max"}`` (the 1st and 99th percentiles and the
        extremes of all target values) and, for targets with a last axis wider
        than one, ``"row_sum_p01"`` and ``"row_sum_p99"`` (the same percentiles
        of each sample's sum over that axis: 1 for one-hot or smoothed labels).
        None for no targets or non-numeric ones.
    """
    if y is None:
        return None
    array = np.asarray(y)
    if array.size == 0 or array.dtype.kind not in "biuf":
        return None
    values = array.astype("float64", copy=False).ravel()
    low, high = np.percentile(values, [1, 99])
    summary = {"p01": float(low), "p99": float(high),
               "min": float(values.min()), "max": float(values.max())}
    if array.ndim >= 2 and array.shape[-1] > 1:
        sums = array.astype("float64", copy=False).sum(axis=-1).ravel()
        row_low, row_high = np.percentile(sums, [1, 99])
        summary.update(row_sum_p01=float(row_low), row_sum_p99=float(row_high))
    return summary
