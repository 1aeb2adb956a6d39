"""Output surgery: make the output layer and the loss agree.

The output-configuration rules (GA701-GA707) each call for one change, named
by a short string the search can carry as a choice:

* ``"sigmoid"``: the output activation becomes sigmoid (softmax over one unit,
  a ReLU or tanh output under binary crossentropy, softmax over several labels
  per sample); a categorical loss becomes binary crossentropy;
* ``"softmax"``: the output activation becomes softmax (several sigmoid units
  trained with a categorical crossentropy, a ReLU or tanh output under a
  categorical one);
* ``"linear"``: the output activation is removed (a bounded activation that
  cannot reach the regression targets);
* ``"from_logits"``: the loss reads logits (``from_logits=True``) because the
  output is linear;
* ``"probabilities"``: the loss reads probabilities (``from_logits=False``)
  because the output already applies softmax or sigmoid;
* ``"units=N"``: the output layer gets N units, one per class (labels outside
  the output's range are refused when the data is loaded, so no rule calls for
  it yet; it is there for callers that know the number of classes).

:func:`output_fix_for` picks the change from a probe's output description,
:func:`rewrite_output` applies it to an uncompiled model and its loss.
"""

from __future__ import annotations

import re

from ..errors import SurgeryError
from ..probe.outputs import (logits_into_probability_loss, nonprobability_into_probability_loss,
                             probabilities_into_logits_loss, sigmoid_multiclass, softmax_one_unit,
                             softmax_rows_not_one, targets_out_of_range)

#: The changes :func:`rewrite_output` knows, besides ``"units=N"``.
OUTPUT_FIXES = ("sigmoid", "softmax", "linear", "from_logits", "probabilities")
_UNITS = re.compile(r"^units=([1-9][0-9]*)$")
#: Loss names and the Keras classes that take ``from_logits``.
_LOSS_CLASSES = {
    "binary_crossentropy": "BinaryCrossentropy",
    "categorical_crossentropy": "CategoricalCrossentropy",
    "sparse_categorical_crossentropy": "SparseCategoricalCrossentropy",
    "binary_focal_crossentropy": "BinaryFocalCrossentropy",
    "categorical_focal_crossentropy": "CategoricalFocalCrossentropy",
}


def is_output_fix(fix) -> bool:
    """Whether ``fix`` is a change :func:`rewrite_output` can make."""
    return isinstance(fix, str) and (fix in OUTPUT_FIXES or bool(_UNITS.match(fix)))


def output_fix_for(outputs: list) -> str | None:
    """The change the first misconfigured output calls for, or None.

    Args:
        outputs: A probe's output description
            (:attr:`~gradadvisor.probe.ProbeResult.outputs`).
    """
    for entry in outputs or []:
        if softmax_one_unit(entry):
            return "sigmoid"
        if sigmoid_multiclass(entry):
            return "softmax"
        if logits_into_probability_loss(entry):
            return "from_logits"
        if probabilities_into_logits_loss(entry):
            return "probabilities"
        if nonprobability_into_probability_loss(entry):
            return "sigmoid" if entry.get("loss_kind") == "binary" or entry.get("units") == 1 else "softmax"
        if softmax_rows_not_one(entry):
            return "sigmoid"
        if targets_out_of_range(entry):
            return "linear"
    return None


def rewrite_output(model, fix: str, loss):
    """A new model and loss with the output change ``fix`` applied.

    Args:
        model: An uncompiled single-output Sequential or Functional model; it is
            not changed (the new one has fresh copies of its layers and weights,
            except the output layer's when its units change).
        fix: One of :data:`OUTPUT_FIXES` or ``"units=N"``.
        loss: The loss the model was compiled with (a name, a Keras loss
            function or a ``keras.losses.Loss``).

    Returns:
        ``(new_model, new_loss)``.

    Raises:
        SurgeryError: an unknown change, a model with several outputs, or a
            custom loss whose ``from_logits`` cannot be set.
    """
    from .._tf import import_keras
    from ..loading import output_layers

    _, keras = import_keras()
    if not is_output_fix(fix):
        raise SurgeryError(
            f"The output change {fix!r} is unknown. Use one of {', '.join(OUTPUT_FIXES)} or 'units=N'.")
    if len(getattr(model, "outputs", None) or []) != 1:
        raise SurgeryError(
            f"The model '{model.name}' has {len(model.outputs or [])} outputs; output changes are made "
            "on single-output models only. Change the output layer in your model code.")
    target = output_layers(model)[0]
    units = _UNITS.match(fix)
    if fix in ("sigmoid", "softmax", "linear"):
        new_model = _rebuild(model, keras, target, lambda config: _with_activation(config, fix))
        new_loss = _binary_loss(loss, keras) if fix == "sigmoid" else loss
    elif units:
        if "units" not in target.get_config():
            raise SurgeryError(
                f"The output layer '{target.name}' ({type(target).__name__}) has no units to change. "
                "Give the layer that produces the output one unit per class in your model code.")
        count = int(units.group(1))
        new_model = _rebuild(model, keras, target, lambda config: {**config, "units": count})
        new_loss = loss
    else:
        new_model = _rebuild(model, keras, None, None)
        new_loss = _loss_with_logits(loss, fix == "from_logits", keras)
    return new_model, new_loss


def _with_activation(config: dict, activation: str) -> dict:
    if "activation" not in config:
        raise SurgeryError(
            f"The output layer '{config.get('name')}' has no activation to change. Put an "
            f"Activation('{activation}') layer at the output in your model code.")
    return {**config, "activation": activation}


#: Weightless layers that are an activation and nothing else.
_ACTIVATION_LAYERS = ("Softmax", "ReLU", "LeakyReLU", "ELU")


def _rebuild(model, keras, target, edit):
    """A copy of ``model`` with ``edit`` applied to ``target``'s config; weights
    copied wherever the shapes still match."""
    pairs = []

    def clone(layer):
        config = layer.get_config()
        if layer is target:
            if type(layer).__name__ in _ACTIVATION_LAYERS:
                # An activation layer (Softmax, ReLU, ...) has no activation argument:
                # an Activation layer of the same name stands in for it.
                new = keras.layers.Activation(edit({"name": layer.name, "activation": "softmax"})
                                              ["activation"], name=layer.name)
                pairs.append((layer, new))
                return new
            config = edit(config)
        new = type(layer).from_config(config)
        pairs.append((layer, new))
        return new

    try:
        new_model = keras.models.clone_model(model, clone_function=clone)
    except SurgeryError:
        raise
    except Exception as error:  # a layer that cannot be rebuilt from its config
        raise SurgeryError(
            f"The model '{model.name}' cannot be rebuilt to change its output ({error}). Change the "
            "output layer in your model code.") from error
    for old, new in pairs:
        if [tuple(v.shape) for v in old.weights] == [tuple(v.shape) for v in new.weights]:
            new.set_weights(old.get_weights())
    return new_model


def _loss_name(loss) -> str | None:
    if isinstance(loss, str):
        return loss
    return getattr(loss, "__name__", None) or getattr(loss, "name", None)


def _loss_with_logits(loss, from_logits: bool, keras):
    """The same loss reading logits (or probabilities)."""
    if isinstance(loss, keras.losses.Loss) and "from_logits" in loss.get_config():
        return type(loss).from_config({**loss.get_config(), "from_logits": from_logits})
    name = _loss_name(loss)
    module = "" if isinstance(loss, str) else (getattr(loss, "__module__", "") or "")
    if name in _LOSS_CLASSES and (isinstance(loss, str) or module.startswith("keras")):
        return getattr(keras.losses, _LOSS_CLASSES[name])(from_logits=from_logits)
    raise SurgeryError(
        f"The loss {name or type(loss).__name__!r} is not a Keras crossentropy, so its from_logits "
        "cannot be set. Pass from_logits to your own loss, or use a keras.losses crossentropy.")


def _binary_loss(loss, keras):
    """Binary crossentropy in place of a categorical one (one sigmoid unit)."""
    name = _loss_name(loss) or ""
    if "categorical" not in name:
        return loss
    from_logits = bool(getattr(loss, "from_logits", False))
    return keras.losses.BinaryCrossentropy(from_logits=from_logits)


def output_snippet(fix: str) -> list:
    """Python lines showing the output change ``fix`` in one's own model code."""
    units = _UNITS.match(fix or "")
    if fix == "sigmoid":
        return ["# Output: one sigmoid unit for two classes, with binary crossentropy.",
                'output = layers.Dense(1, activation="sigmoid")',
                'loss = "binary_crossentropy"']
    if fix == "softmax":
        return ["# Output: softmax over the classes for a categorical crossentropy.",
                'output = layers.Dense(num_classes, activation="softmax")']
    if fix == "linear":
        return ["# Output: no activation, so predictions can reach every target value.",
                "output = layers.Dense(num_outputs)  # activation=None"]
    if fix == "from_logits":
        return ["# The output layer has no activation: tell the loss it gets logits.",
                "loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)  # or your crossentropy"]
    if fix == "probabilities":
        return ["# The output layer applies softmax/sigmoid: the loss gets probabilities.",
                "loss = keras.losses.SparseCategoricalCrossentropy(from_logits=False)  # or your crossentropy"]
    if units:
        return ["# Output: one unit per class.",
                f'output = layers.Dense({units.group(1)}, activation="softmax")']
    return []
