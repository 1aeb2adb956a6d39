"""The snippet: Python showing how to write a setup in one's own model-building code."""

from __future__ import annotations

from .._tf import import_keras
from ..probe import is_graph_model, leaf_layers
from .activations import _LAYER_ACTIVATIONS
from .optimizer import _tidy
from .setups import OPTIMIZERS, STANDARD_LEARNING_RATE, Setup, _as_setup


def snippet(setup: Setup, *, model=None) -> str:
    """Python showing how to write ``setup`` in one's own model-building code.

    The text runs as it is (it imports keras and defines ``hidden``, the layers
    of one hidden block, and ``optimizer`` when the setup changes it).

    Args:
        setup: A :class:`Setup` (or its dict).
        model: Optional; its optimizer's class and learning rate are used, and its
            first recurrent layer's class if it has one, instead of generic ones.

    Returns:
        The snippet, lines joined with newlines.

    Example:
        >>> print(snippet(Setup(initializer="he_normal", clipping="clipnorm")))
    """
    setup = _as_setup(setup)
    if setup.is_baseline:
        return "# This setup keeps the model as it is: nothing to change.\n"
    recurrent_class, has_recurrent = "LSTM", True
    if model is not None:
        _, keras = import_keras()
        if is_graph_model(model, keras):
            recurrent = [layer for _, layer in leaf_layers(model) if isinstance(layer, keras.layers.RNN)]
            has_recurrent = bool(recurrent)
            if recurrent:
                recurrent_class = type(recurrent[0]).__name__
    units = [64, 32]
    if model is not None and is_graph_model(model, import_keras()[1]):
        dense = [layer for _, layer in leaf_layers(model) if hasattr(layer, "units")]
        rnn = [layer for layer in dense if getattr(layer, "cell", None) is not None]
        if dense:
            units[0] = int(dense[0].units)
        if rnn:
            units[1] = int(rnn[0].units)
    lines = ["import keras", "from keras import layers", ""]
    lines += _snippet_layers(setup, recurrent_class, has_recurrent, units)
    if setup.recurrence_kind == "irnn":
        lines += ["# IRNN: ReLU units and an identity recurrent matrix in each SimpleRNN layer.",
                  f'recurrent = layers.SimpleRNN({units[1]}, activation="relu", '
                  'recurrent_initializer="identity")']
    lines += _snippet_recurrent(setup, recurrent_class, units[1])
    if setup.output_kind:
        from .output import output_snippet

        lines += [""] + output_snippet(setup.output_kind)
    optimizer_lines = _snippet_optimizer(setup, model)
    if optimizer_lines:
        lines += [""] + optimizer_lines
    return "\n".join(lines) + "\n"


def _snippet_layers(setup: Setup, recurrent_class: str, has_recurrent: bool, units) -> list:
    """The hidden-block lines; ``units`` are the Dense and recurrent widths to show."""
    init = setup.kernel_initializer
    activation = setup.activation
    normalization = setup.normalization_kind
    if init is None and activation is None and normalization is None:
        return []
    init_args = f', kernel_initializer="{init}", bias_initializer="zeros"' if init else ""
    lines = []
    if normalization == "layernorm":
        recurrent_init = f', kernel_initializer="{init}", recurrent_initializer="orthogonal"' if init else ""
        lines += ["# Recurrent models: LayerNormalization after each recurrent layer that returns",
                  "# sequences and after each hidden Dense layer.",
                  "hidden = [",
                  f"    layers.{recurrent_class}({units[1]}, return_sequences=True{recurrent_init}),",
                  "    layers.LayerNormalization(),"]
        lines += [f"    {line}," for line in _dense_and_activation(init_args, activation, width=units[0])]
        lines += ["    layers.LayerNormalization(),", "]"]
        return lines
    block = _dense_and_activation(init_args, activation, split=normalization is not None,
                                  width=units[0])
    if normalization == "batchnorm_before":
        block.insert(1, "layers.BatchNormalization()")
    elif normalization == "batchnorm_after":
        block.append("layers.BatchNormalization()")
    if normalization is None:
        lines += ["# Each hidden Dense or Conv layer; the output layer keeps its activation."]
    else:
        order = ("BatchNormalization, then the activation" if normalization == "batchnorm_before"
                 else "the activation, then BatchNormalization")
        lines += ["# Each hidden Dense or Conv layer, linear, then " + order + ";",
                  "# the output layer keeps its activation."]
    if init and has_recurrent:
        lines += [f'# Recurrent layers: kernel_initializer="{init}", recurrent_initializer="orthogonal".']
    if activation is None and normalization is not None:
        lines += ["# Keep your own activation where this shows relu."]
    lines += ["hidden = ["] + [f"    {line}," for line in block] + ["]"]
    return lines


def _dense_and_activation(init_args: str, activation: str | None, split: bool = False,
                          width: int = 64) -> list:
    if activation in _LAYER_ACTIVATIONS:
        return [f"layers.Dense({width}{init_args})", f"layers.{_LAYER_ACTIVATIONS[activation]}()"]
    if split:
        return [f"layers.Dense({width}{init_args})", f'layers.Activation("{activation or "relu"}")']
    if activation is None:
        return [f"layers.Dense({width}{init_args})"]
    return [f'layers.Dense({width}, activation="{activation}"{init_args})']


def _snippet_recurrent(setup: Setup, recurrent_class: str, units: int) -> list:
    """Lines for the cell, forget-gate bias and recurrent initializer of a recurrent layer."""
    if not setup.changes_recurrent_layers:
        return []
    cell = {"gru": "GRU", "lstm": "LSTM"}.get(setup.cell, "LSTM" if setup.forget_bias else recurrent_class)
    arguments = [str(units)]
    lines = [""]
    if setup.cell:
        lines.append(f"# Each {recurrent_class} layer becomes a {cell} with the same units and return flags.")
    if setup.recurrent_initializer:
        arguments.append(f'recurrent_initializer="{setup.recurrent_initializer}"')
    if setup.forget_bias == "unit" and cell == "LSTM":
        arguments.append("unit_forget_bias=True")
    elif setup.forget_bias == "chrono" and cell == "LSTM":
        lines += ["# Chrono initialization (Tallec & Ollivier, 2018): forget-gate bias log(U[1, T-1]),",
                  "# input-gate bias its negative, T the sequence length.",
                  "import numpy as np",
                  "T = 100  # your sequence length",
                  f"forget = np.log(np.random.uniform(1, T - 1, size={units}))",
                  f"chrono = np.concatenate([-forget, forget, np.zeros({2 * units})]).tolist()"]
        arguments.append("unit_forget_bias=False, bias_initializer=keras.initializers.Constant(chrono)")
    layer = f"layers.{cell}({', '.join(arguments)})"
    if setup.direction:
        lines.append("# Read each sequence both ways (outputs concatenated); needs whole sequences.")
        layer = f"layers.Bidirectional({layer})"
    lines.append(f"recurrent = {layer}")
    return lines


def _snippet_optimizer(setup: Setup, model) -> list:
    clipping = setup.clipping_kind
    if (clipping is None and setup.learning_rate_scale == 1.0 and setup.optimizer is None
            and not setup.warmup_steps):
        return []
    name, rate = "Adam", 0.001
    if model is not None and getattr(model, "optimizer", None) is not None:
        name = type(model.optimizer).__name__
        rate = model.optimizer.get_config().get("learning_rate")
    if setup.optimizer is not None:
        name, rate = OPTIMIZERS[setup.optimizer], setup.optimizer_learning_rate or STANDARD_LEARNING_RATE
    lines, arguments = [], []
    comment = ""
    if isinstance(rate, (int, float)):
        rate = _tidy(rate * setup.learning_rate_scale)
        if setup.learning_rate_scale != 1.0 or setup.optimizer is not None:
            arguments.append(f"learning_rate={rate!r}")
        if setup.learning_rate_scale != 1.0:
            comment = f"  # {setup.learning_rate_scale:g} x {_tidy(rate / setup.learning_rate_scale):g}"
    elif setup.learning_rate_scale != 1.0:
        comment = f"  # scale your learning rate schedule by {setup.learning_rate_scale:g}"
    if setup.warmup_steps and isinstance(rate, (int, float)):
        lines += [f"# Linear warm-up over {setup.warmup_steps} steps, then a constant rate.",
                  "schedule = keras.optimizers.schedules.CosineDecay(",
                  f"    initial_learning_rate={_tidy(rate / (setup.warmup_steps + 1))!r}, decay_steps=1, "
                  f"alpha=1.0, warmup_target={rate!r}, warmup_steps={setup.warmup_steps})"]
        arguments = [a for a in arguments if not a.startswith("learning_rate=")] + ["learning_rate=schedule"]
    if clipping is not None:
        arguments.append(f"{clipping}={setup.clip_threshold!r}")
    return lines + [f"optimizer = keras.optimizers.{name}({', '.join(arguments)}){comment}"]
