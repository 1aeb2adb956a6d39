"""Planning new activations: saturating and ReLU-family activations of hidden layers replaced."""

from __future__ import annotations

from ..loading import RELU_FAMILY, SATURATING_ACTIVATIONS, activation_name
from .plan import _LayerSpec, _LeafPlan, _Names
from .setups import Setup
from .structure import _is_recurrent

_LAYER_ACTIVATIONS = {"leaky_relu": "LeakyReLU", "prelu": "PReLU"}
_CHANGEABLE_ACTIVATIONS = frozenset(SATURATING_ACTIVATIONS) | frozenset(RELU_FAMILY)


def _plan_activation(plan: _LeafPlan, setup: Setup, names: _Names, keras) -> None:
    target = setup.activation
    layer = plan.layer
    class_name = type(layer).__name__
    if target is None or _is_recurrent(layer, keras) or "layer" in plan.config:
        return
    if class_name == "ReLU":
        plain = (plan.config.get("max_value") is None and not plan.config.get("negative_slope")
                 and not plan.config.get("threshold"))
        current = "relu" if plain else None
    elif "activation" in plan.config:
        current = activation_name(layer)
    else:
        return
    if current not in _CHANGEABLE_ACTIVATIONS or current == target:
        return
    plan.activation_from = current
    if class_name in ("Activation", "ReLU"):
        # The old activation layer disappears, so its name is free for the new one.
        if target in _LAYER_ACTIVATIONS:
            plan.replacement = _activation_spec(target, layer.name, plan)
        elif class_name == "ReLU":
            plan.replacement = _LayerSpec("Activation", {"activation": target, "name": layer.name})
        else:
            plan.edits["activation"] = target
    elif target in _LAYER_ACTIVATIONS:
        plan.edits["activation"] = "linear"
        plan.inserts.append(_activation_spec(target, names.new(f"{layer.name}_{target}"), plan))
    else:
        plan.edits["activation"] = target


def _activation_spec(target: str, name: str, plan: _LeafPlan) -> _LayerSpec:
    kwargs: dict = {"name": name}
    if target == "prelu":
        # One slope per channel, not per position: shared over every other axis.
        rank = _output_rank(plan.layer)
        if rank is not None and rank > 2:
            channels_first = plan.config.get("data_format") == "channels_first"
            axes = list(range(2, rank)) if channels_first else list(range(1, rank - 1))
            kwargs["shared_axes"] = axes
    return _LayerSpec(_LAYER_ACTIVATIONS[target], kwargs)


def _output_rank(layer) -> int | None:
    try:
        return len(layer.output.shape)
    except Exception:  # unbuilt or shared layers have no single output
        return None
