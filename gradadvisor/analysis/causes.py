"""Likely causes, checked against the model's own configuration.

A rule lists the causes that can explain its finding; each cause here is a
Python check that looks at the probe (layer classes, activations, initializers,
optimizer, sequence length) and returns a sentence saying why it applies, or
None when it does not.  Only causes that hold are reported.
"""

from __future__ import annotations

import re
from typing import Callable

from ..loading import SATURATING_ACTIVATIONS
from ..probe import ProbeResult
from .signals import flow_layers

CAUSES: dict[str, Callable] = {}
#: Learning rates above these are on the high side for each optimizer class.
HIGH_LEARNING_RATE = {"SGD": 0.5, "Adam": 0.01, "AdamW": 0.01, "RMSprop": 0.01,
                      "Adagrad": 0.5, "Adadelta": 5.0, "Nadam": 0.01, "Adamax": 0.02}


def cause(name: str):
    def register(function):
        CAUSES[name] = function
        return function
    return register


def _names(layers, limit: int = 4) -> str:
    names = [info.name for info in layers]
    if len(names) > limit:
        return ", ".join(names[:limit - 1]) + f" and {len(names) - limit + 1} more"
    return ", ".join(names)


def _stddev(initializer: str | None) -> float | None:
    if not initializer:
        return None
    match = re.search(r"stddev=([0-9.eE+-]+)", initializer)
    return float(match.group(1)) if match else None


@cause("saturating_activation")
def saturating_activation(probe: ProbeResult, layers):
    # Parameter-free activation layers (Activation("sigmoid"), a Keras
    # application's own activation layers) count as much as a Dense layer's
    # activation argument: most real models write activations as layers.
    deepest = max(layer.index for layer in layers)
    hits = [info for info in probe.layers
            if info.activation in SATURATING_ACTIVATIONS and not info.is_output
            and info.index <= deepest]
    if not hits:
        return None
    kinds = sorted({info.activation for info in hits})
    return (f"{len(hits)} layer(s) ({_names(hits)}) use {'/'.join(kinds)}, whose derivative is "
            f"at most {0.25 if kinds == ['sigmoid'] else 1.0:g} and near zero when saturated, "
            "so each layer scales the gradient down.")


@cause("output_configuration")
def output_configuration(probe: ProbeResult, layers):
    from .signals import output_problems

    problems = output_problems(probe)
    if not problems:
        return None
    return "; ".join(f"{layer}: {text}" for layer, text in problems) + "."


def _initialized(probe: ProbeResult, too_far, effect: str) -> str | None:
    """The sentence naming the layers whose initial stddev ``too_far`` accepts, or None."""
    hits = [info for info in probe.layers
            if (stddev := _stddev(info.kernel_initializer)) is not None and too_far(stddev)]
    if not hits:
        return None
    return f"{len(hits)} layer(s) ({_names(hits)}) start from {hits[0].kernel_initializer}: {effect}"


@cause("small_initialization")
def small_initialization(probe: ProbeResult, layers):
    return _initialized(probe, lambda stddev: stddev < 0.05,
                        "weights that small shrink the signal and the gradient at every layer.")


@cause("large_initialization")
def large_initialization(probe: ProbeResult, layers):
    text = _initialized(probe, lambda stddev: stddev >= 0.3,
                        "weights that large multiply activations and gradients at every layer.")
    if text:
        return text
    first_losses = [value for value in probe.loss[:1]]
    if first_losses and first_losses[0] > 1e3:
        return (f"The loss is already {first_losses[0]:.3g} at the first step, before any "
                "update: the initial weights are far too large.")
    return None


@cause("missing_normalization")
def missing_normalization(probe: ProbeResult, layers):
    if any("Normalization" in info.class_name for info in probe.layers):
        return None
    depth = len(flow_layers(probe))
    if depth < 4:
        return None
    return (f"The model stacks {depth} layers with kernels and no normalization layer that would "
            "keep activations and gradients at a steady scale.")


@cause("network_depth")
def network_depth(probe: ProbeResult, layers):
    depth = len(flow_layers(probe))
    if depth < 8:
        return None
    return f"The gradient passes through {depth} layers with kernels, each scaling it once."


@cause("learning_rate")
def learning_rate(probe: ProbeResult, layers):
    optimizer = probe.optimizer or {}
    rate = optimizer.get("learning_rate")
    limit = HIGH_LEARNING_RATE.get(optimizer.get("name"))
    if rate is not None and limit is not None and rate > limit:
        return (f"The {optimizer['name']} learning rate {rate:g} is high for that optimizer "
                f"(above {limit:g}): each update overshoots and the next gradient is larger.")
    return None


@cause("recurrence_length")
def recurrence_length(probe: ProbeResult, layers):
    lengths = {name: len(steps[0]) for name, steps in probe.timestep_grad_norms.items() if steps}
    hits = {name: n for name, n in lengths.items() if n >= 50}
    if not hits:
        return None
    name, length = next(iter(hits.items()))
    kind = probe.layer(name).class_name
    return (f"{name} ({kind}) runs over {length} timesteps; the gradient is multiplied by the "
            "recurrent Jacobian once per timestep.")


@cause("bias_initialization")
def bias_initialization(probe: ProbeResult, layers):
    hits = [info for info in probe.layers if info.bias_initializer and info.bias_initializer.startswith("Constant(-")]
    if not hits:
        return None
    return (f"{len(hits)} layer(s) ({_names(hits)}) start with a negative constant bias "
            f"({hits[0].bias_initializer}), which pushes ReLU inputs below zero.")


def explain_causes(names, probe: ProbeResult, layers) -> list:
    """``[{"cause", "reason"}]`` for the causes among ``names`` that hold."""
    found = []
    for name in names:
        check = CAUSES.get(name)
        reason = check(probe, layers) if check and layers is not None else None
        if reason:
            found.append({"cause": name, "reason": reason})
    return found
