"""Planning new activations: saturating and ReLU-family activations of hidden layers replaced."""

from __future__ import annotations

from ..loading import RELU_FAMILY, SATURATING_ACTIVATIONS, activation_name
from .plan import _find_config_value, _LayerSpec, _LeafPlan, _Names, _skip
from .setups import Setup
from .structure import _is_recurrent, _Structure

_LAYER_ACTIVATIONS = {"leaky_relu": "LeakyReLU", "prelu": "PReLU"}
_CHANGEABLE_ACTIVATIONS = frozenset(SATURATING_ACTIVATIONS) | frozenset(RELU_FAMILY)


def _plan_activation(plan: _LeafPlan, setup: Setup, names: _Names, keras,
                     structure: _Structure | None = None, skipped: list | None = None) -> None:
    """Plan ``setup.activation`` for one hidden leaf layer.

    Layers whose activation the setup would replace but must not are added to
    ``skipped`` with the reason: gates (their output multiplies another tensor,
    so they must stay in [0, 1]), custom activation functions, and wrappers
    other than ``TimeDistributed``.
    """
    target = setup.activation
    layer = plan.layer
    if target is None or _is_recurrent(layer, keras):
        # Recurrent layers keep their activations: the cell's gates depend on them.
        return
    current = _current_activation(plan, keras)
    if current is None or current == target or current in ("softmax", "log_softmax"):
        return
    if current not in _CHANGEABLE_ACTIVATIONS and not current.startswith("relu("):
        if not _is_builtin(current, keras):
            _note(skipped, plan, f"its activation '{current}' is not a built-in Keras activation, so "
                  "gradadvisor cannot tell whether replacing it is safe")
        # Built-in activations that neither saturate nor zero out (ELU, GELU, ...) stay.
        return
    if "layer" in plan.config and not isinstance(layer, keras.layers.TimeDistributed):
        _note(skipped, plan, f"the {type(layer).__name__} wrapper cannot be rebuilt with another "
              "activation for the layer it wraps (only TimeDistributed can)")
        return
    if structure is not None and structure.feeds_gate(plan.path):
        _note(skipped, plan, f"its {current} output multiplies another tensor: it is a gate (as in "
              "squeeze-and-excitation), whose range the architecture relies on")
        return
    plan.activation_from = current
    class_name = type(layer).__name__
    if class_name in ("Activation", "ReLU"):
        # The old activation layer disappears, so its name is free for the new one.
        if target in _LAYER_ACTIVATIONS:
            plan.replacement = _activation_spec(target, layer.name, plan, structure)
        elif class_name == "ReLU":
            plan.replacement = _LayerSpec("Activation", {"activation": target, "name": layer.name})
        else:
            plan.edits["activation"] = target
    elif target in _LAYER_ACTIVATIONS:
        plan.edits["activation"] = "linear"
        plan.inserts.append(_activation_spec(target, names.new(f"{layer.name}_{target}"), plan, structure))
    else:
        plan.edits["activation"] = target


def _current_activation(plan: _LeafPlan, keras) -> str | None:
    """The name of the activation the layer applies, None if it has none to replace.

    ``ReLU`` layers with a cap (``ReLU(6.)`` in keras.applications) count as
    ReLU-family: ``relu6`` for a cap of 6, else ``relu(max_value=..)``.
    """
    layer = plan.layer
    class_name = type(layer).__name__
    if class_name == "ReLU":
        config = plan.config
        if config.get("negative_slope"):
            return "leaky_relu"
        if config.get("threshold"):
            return f"relu(threshold={float(config['threshold']):g})"
        cap = config.get("max_value")
        if cap is None:
            return "relu"
        return "relu6" if float(cap) == 6.0 else f"relu(max_value={float(cap):g})"
    if class_name in ("LeakyReLU", "PReLU", "ELU", "Softmax"):
        return None
    inner = layer.layer if isinstance(layer, keras.layers.TimeDistributed) else layer
    if "activation" not in plan.config and not hasattr(inner, "activation"):
        return None
    return activation_name(inner)


def _is_builtin(name: str, keras) -> bool:
    try:
        return keras.activations.get(name) is not None
    except (ValueError, TypeError):
        return False


def _note(skipped: list | None, plan: _LeafPlan, reason: str) -> None:
    if skipped is not None:
        skipped.append(_skip(plan.path, reason))


def _activation_spec(target: str, name: str, plan: _LeafPlan, structure) -> _LayerSpec:
    kwargs: dict = {"name": name}
    if target == "prelu":
        # One slope per channel, not per position: shared over every other axis.
        rank = structure.ranks.get(plan.path) if structure is not None else None
        if rank is None:
            rank = _output_rank(plan.layer)
        if rank is not None and rank > 2:
            channels_first = _find_config_value(plan.config, "data_format") == "channels_first"
            axes = list(range(2, rank)) if channels_first else list(range(1, rank - 1))
            kwargs["shared_axes"] = axes
    return _LayerSpec(_LAYER_ACTIVATIONS[target], kwargs)


def _output_rank(layer) -> int | None:
    try:
        return len(layer.output.shape)
    except Exception:  # unbuilt or shared layers have no single output
        return None
