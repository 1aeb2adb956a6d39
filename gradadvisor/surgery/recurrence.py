"""Planning the recurrence: IRNNs, gated cells, forget-gate biases and orthogonal recurrent weights."""

from __future__ import annotations

import numpy as np

from .initializers import _initializer_class
from .plan import _LayerSpec, _LeafPlan, _edited_config, _entry, _find_config_value
from .setups import Setup

#: Settings a SimpleRNN or GRU layer hands on to the gated cell replacing it.
_KEPT_SETTINGS = ("units", "return_sequences", "return_state", "go_backwards", "stateful", "unroll",
                  "dropout", "recurrent_dropout", "use_bias", "kernel_regularizer",
                  "recurrent_regularizer", "bias_regularizer", "name", "trainable", "dtype")
_CELL_CLASSES = {"gru": "GRU", "lstm": "LSTM"}
#: The sequence length chrono initialization assumes when the layer's input has none.
_DEFAULT_SEQUENCE_LENGTH = 100


def _plan_recurrence(plan: _LeafPlan, setup: Setup, keras) -> None:
    """Plan every recurrent change of ``setup`` for one leaf layer."""
    _plan_cell(plan, setup, keras)
    if plan.replacement is None:
        _plan_irnn(plan, setup, keras)
    _plan_recurrent_initializer(plan, setup, keras)
    _plan_forget_bias(plan, setup, keras)
    _plan_direction(plan, setup, keras)


def _plan_direction(plan: _LeafPlan, setup: Setup, keras) -> None:
    """An unwrapped recurrent layer (as replaced by the other changes) becomes
    ``Bidirectional`` of itself, under the layer's own name.

    Layers returning their states or keeping them across batches are left alone:
    ``Bidirectional`` returns twice the states, and state carried across batches
    has no backward counterpart.
    """
    if setup.direction != "bidirectional" or "layer" in plan.config:
        return
    if not isinstance(plan.layer, keras.layers.RNN) or type(plan.layer).__name__ not in _RECURRENT_CLASSES:
        return
    if plan.config.get("return_state") or plan.config.get("stateful"):
        return
    name = plan.config["name"]
    if plan.replacement is not None:
        inner = plan.replacement
        inner.kwargs = dict(inner.kwargs, name=f"{name}_forward")
    else:
        inner = _FromConfig(type(plan.layer), _edited_config(plan.config, plan.edits) | {"name": f"{name}_forward"})
        plan.edits = {}
    plan.replacement = _LayerSpec("Bidirectional", {"layer": inner, "name": name})
    plan.initializer_changes.append(_entry(plan.path, "direction", "forward", "bidirectional"))


#: Recurrent layer classes ``Bidirectional`` may wrap.
_RECURRENT_CLASSES = ("SimpleRNN", "GRU", "LSTM")


class _FromConfig:
    """An unchanged recurrent layer to build from its (edited) config."""

    def __init__(self, layer_class, config: dict):
        self.layer_class, self.config = layer_class, config

    def build(self, keras):
        return self.layer_class.from_config(self.config)

    def __repr__(self) -> str:
        return f"{self.layer_class.__name__}(...)"


def _plan_irnn(plan: _LeafPlan, setup: Setup, keras) -> None:
    if setup.recurrence_kind != "irnn" or not isinstance(plan.layer, keras.layers.SimpleRNN):
        return
    wanted = {"activation": "relu", "recurrent_initializer": "identity"}
    current = {"activation": plan.config.get("activation"),
               "recurrent_initializer": _initializer_class(plan.config.get("recurrent_initializer"), keras)}
    if current["activation"] != "relu":
        plan.initializer_changes.append(_entry(plan.path, "activation", current["activation"], "relu"))
    if current["recurrent_initializer"] != "Identity":
        plan.initializer_changes.append(
            _entry(plan.path, "recurrent_initializer", current["recurrent_initializer"], "identity"))
    plan.edits.update(wanted)
    plan.reinitialise = True


def _plan_cell(plan: _LeafPlan, setup: Setup, keras) -> None:
    """A SimpleRNN (or, for ``lstm``, a GRU) layer becomes the chosen gated layer.

    Only unwrapped layers are replaced: a ``Bidirectional`` or
    ``TimeDistributed`` wrapper keeps its cell.
    """
    if setup.cell is None or "layer" in plan.config:
        return
    replaceable = (keras.layers.SimpleRNN,) if setup.cell == "gru" else (keras.layers.SimpleRNN, keras.layers.GRU)
    if not isinstance(plan.layer, replaceable):
        return
    kwargs = {key: plan.config[key] for key in _KEPT_SETTINGS if key in plan.config}
    # Initializers chosen by other dimensions carry over; the rest are the cell's defaults.
    for key in ("kernel_initializer", "recurrent_initializer", "bias_initializer"):
        if key in plan.edits:
            kwargs[key] = plan.edits[key]
    if kwargs.get("recurrent_initializer") == "identity":
        kwargs.pop("recurrent_initializer")
    plan.replacement = _LayerSpec(_CELL_CLASSES[setup.cell], kwargs)
    plan.initializer_changes.insert(0, _entry(plan.path, "cell", type(plan.layer).__name__,
                                              _CELL_CLASSES[setup.cell]))


def _plan_recurrent_initializer(plan: _LeafPlan, setup: Setup, keras) -> None:
    if setup.recurrent_initializer is None:
        return
    if plan.replacement is not None:
        if plan.replacement.class_name in _CELL_CLASSES.values():
            plan.replacement.kwargs["recurrent_initializer"] = setup.recurrent_initializer
        return
    current = _find_config_value(plan.config, "recurrent_initializer")
    if current is None or plan.edits.get("recurrent_initializer") == "identity":
        return
    before = _initializer_class(current, keras)
    if before != _initializer_class(setup.recurrent_initializer, keras):
        plan.initializer_changes.append(
            _entry(plan.path, "recurrent_initializer", before, setup.recurrent_initializer))
        plan.edits["recurrent_initializer"] = setup.recurrent_initializer
        plan.reinitialise = True


def _plan_forget_bias(plan: _LeafPlan, setup: Setup, keras) -> None:
    if setup.forget_bias is None:
        return
    replaced = plan.replacement is not None and plan.replacement.class_name == "LSTM"
    if not replaced and not _is_lstm(plan, keras):
        return
    units = int(plan.replacement.kwargs["units"] if replaced else _find_config_value(plan.config, "units"))
    if setup.forget_bias == "unit":
        if not replaced and _find_config_value(plan.config, "unit_forget_bias"):
            return
        edits = {"unit_forget_bias": True, "bias_initializer": "zeros"}
        description = "ones (unit forget bias)"
    else:
        length = _sequence_length(plan.layer)
        edits = {"unit_forget_bias": False, "bias_initializer": chrono_bias(units, length, keras)}
        description = f"chrono, T={length}"
    if replaced:
        plan.replacement.kwargs.update(edits)
        plan.initializer_changes.append(_entry(plan.path, "forget_gate_bias", None, description))
        return
    plan.initializer_changes.append(_entry(plan.path, "forget_gate_bias",
                                           "ones" if _find_config_value(plan.config, "unit_forget_bias")
                                           else "as initialised", description))
    plan.edits.update(edits)
    plan.reinitialise = True


def _is_lstm(plan: _LeafPlan, keras) -> bool:
    if isinstance(plan.layer, keras.layers.LSTM):
        return True
    inner = getattr(plan.layer, "forward_layer", None) or getattr(plan.layer, "layer", None)
    return isinstance(inner, keras.layers.LSTM)


def _sequence_length(layer) -> int:
    """The number of timesteps the layer reads, or :data:`_DEFAULT_SEQUENCE_LENGTH`."""
    try:
        length = layer.input.shape[1]
    except Exception:  # shared or unbuilt layers have no single input
        length = None
    return int(length) if length else _DEFAULT_SEQUENCE_LENGTH


def chrono_bias(units: int, length: int, keras, seed: int = 0) -> dict:
    """A serialised ``Constant`` initializer holding an LSTM bias with chrono initialization.

    Keras orders an LSTM bias as input, forget, cell, output gates.  The forget
    gate gets ``log(u)``, ``u ~ U[1, T-1]``, the input gate its negative, the
    others zero (Tallec and Ollivier, "Can recurrent neural networks warp
    time?", 2018).  A constant of plain floats needs no custom class, so the
    saved model loads anywhere.

    Args:
        units: The LSTM's units.
        length: The sequence length ``T`` (at least 3 is useful).
        keras: The keras module.
        seed: Seeds the draw.

    Returns:
        The initializer, serialised.
    """
    rng = np.random.default_rng(seed)
    forget = np.log(rng.uniform(1.0, max(float(length) - 1.0, 1.0 + 1e-6), size=units))
    bias = np.concatenate([-forget, forget, np.zeros(units), np.zeros(units)])
    values = [float(f"{value:.6g}") for value in bias]
    return keras.initializers.serialize(keras.initializers.Constant(values))
