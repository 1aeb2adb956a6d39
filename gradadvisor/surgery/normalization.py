"""Planning normalization: BatchNormalization around hidden layers, LayerNormalization in sequences."""

from __future__ import annotations

from ..loading import activation_name
from .plan import _LayerSpec, _LeafPlan, _Names, _find_config_value, _skip
from .structure import _ACTIVATION_LAYERS, _is_kernel_layer, _is_recurrent, _wrapped


def _plan_normalization(plan, setup, structure, plans, names, keras, skipped=None) -> None:
    """Plan ``setup.normalization`` around one hidden leaf layer.

    A gate (a layer whose output multiplies another tensor, as in
    squeeze-and-excitation) gets no normalization between it and its
    activation; it is added to ``skipped`` with the reason.
    """
    kind = setup.normalization_kind
    path, layer = plan.path, plan.layer
    if kind is None or structure.followed_by_normalization(path):
        return
    if kind == "layernorm":
        if not structure.sequence:
            return
        returns_sequences = (_find_config_value(plan.config, "return_sequences")
                             and not _find_config_value(plan.config, "return_state"))
        if ((_is_recurrent(layer, keras) and returns_sequences)
                or isinstance(_wrapped(layer, keras), keras.layers.Dense)):
            plan.inserts.append(_LayerSpec("LayerNormalization", {"name": names.new(f"{layer.name}_ln")}))
        return
    if not _is_kernel_layer(layer, keras):
        return
    activation = plan.final_activation()
    if structure.feeds_gate(path):
        if activation not in (None, "linear") and skipped is not None:
            skipped.append(_skip(path, "its output multiplies another tensor: it is a gate (as in "
                                 "squeeze-and-excitation), so no normalization goes before its activation"))
        return
    if activation not in (None, "linear"):
        # Dense(activation=f) becomes Dense, then BatchNormalization and f in the chosen order.
        plan.activation_from = plan.activation_from or activation_name(_wrapped(layer, keras)) or "custom"
        plan.edits["activation"] = "linear"
        label = activation if isinstance(activation, str) else "activation"
        if not isinstance(activation, str):
            # A serialized custom function: the layer's own function object needs no registration.
            activation = _wrapped(layer, keras).activation
        act = _LayerSpec("Activation", {"activation": activation, "name": names.new(f"{layer.name}_{label}")})
        batchnorm = _batchnorm_spec(plan, names)
        plan.inserts = [batchnorm, act] if kind == "batchnorm_before" else [act, batchnorm]
        return
    if plan.inserts:
        # A linear layer followed by an inserted LeakyReLU/PReLU.
        batchnorm = _batchnorm_spec(plan, names)
        plan.inserts = ([batchnorm] + plan.inserts if kind == "batchnorm_before"
                        else plan.inserts + [batchnorm])
        return
    # A linear layer followed by a separate activation layer only, perhaps
    # through layers that pass their input on unchanged (an Identity left where
    # a normalization was removed, a Dropout).
    after = structure.successors[path]
    while (len(after) == 1 and after[0] in structure.leaves
           and type(structure.leaves[after[0]]).__name__ in _SHAPE_KEEPING_PASSTHROUGH):
        after = structure.successors[after[0]]
    if len(after) != 1 or after[0] not in structure.leaves:
        return
    activation_plan = plans[after[0]]
    follower = activation_plan.layer
    if (type(follower).__name__ not in _ACTIVATION_LAYERS
            or activation_name(follower) in (None, "softmax")):
        return
    if after[0] in structure.outputs or structure.followed_by_normalization(after[0]):
        return
    if kind == "batchnorm_before":
        plan.inserts.append(_batchnorm_spec(plan, names))
    else:
        activation_plan.inserts.append(_batchnorm_spec(plan, names))


#: Layers between a linear layer and its activation layer that do not stop a
#: BatchNormalization from going in between.
_SHAPE_KEEPING_PASSTHROUGH = frozenset({"Identity", "Dropout", "SpatialDropout1D", "SpatialDropout2D",
                                        "SpatialDropout3D", "GaussianDropout", "GaussianNoise", "AlphaDropout",
                                        "ActivityRegularization"})


def _batchnorm_spec(plan: _LeafPlan, names: _Names) -> _LayerSpec:
    kwargs: dict = {"name": names.new(f"{plan.layer.name}_bn")}
    if _find_config_value(plan.config, "data_format") == "channels_first":
        # The channel axis of a TimeDistributed convolution comes after the time axis.
        kwargs["axis"] = 2 if "layer" in plan.config else 1
    return _LayerSpec("BatchNormalization", kwargs)
