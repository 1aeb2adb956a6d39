"""Model surgery: rewrite a model into a new one with a different setup.

A :class:`Setup` names a candidate fix (initializer, activation, normalization,
gradient clipping, learning-rate scale) as plain data.  :func:`apply_setup`
builds a **new** model with that setup and never touches the user's model;
:func:`describe_changes` lists, layer by layer, what it would change, without
building anything; :func:`snippet` shows how to write the same setup in one's
own model code.

Rewriting happens in two steps.  A *plan* is made per leaf layer from layer
configs and the connections between layers (which layers are outputs, what
follows what, nested models flattened).  The plan is then *built*: a Sequential
model is rebuilt as a new Sequential, a Functional model by running its graph
with fresh layers, nested models recursively.  Weights are copied layer by
layer from the input model, except for layers that were re-initialised.

Functional models are rebuilt with ``Functional._run_through_graph`` rather than
``keras.models.clone_model``: in Keras 3.15 ``clone_model`` recompiles the clone
from the compile config, which raises for an unregistered custom loss or metric,
and the compiled optimizer would be thrown away anyway.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import math
import warnings
from typing import Any

from ._tf import import_keras
from .errors import SurgeryError, UsageError
from .loading import RELU_FAMILY, SATURATING_ACTIVATIONS, activation_name
from .probe import _is_graph_model, leaf_layers

#: Initializers a setup may choose, with the Keras class each builds.
INITIALIZERS = {
    "glorot_normal": "GlorotNormal",
    "glorot_uniform": "GlorotUniform",
    "he_normal": "HeNormal",
    "he_uniform": "HeUniform",
    "lecun_normal": "LecunNormal",
    "orthogonal": "Orthogonal",
}
#: Activations a setup may choose; the first two are inserted as layers.
ACTIVATIONS = ("leaky_relu", "prelu", "relu", "elu", "selu", "gelu", "swish")
NORMALIZATIONS = ("none", "batchnorm_before", "batchnorm_after", "layernorm")
CLIPPINGS = ("none", "clipnorm", "clipvalue", "global_clipnorm")
#: Recurrence schemes: "irnn" gives SimpleRNN layers ReLU units and an identity
#: recurrent matrix (Le, Jaitly and Hinton, 2015), which carries gradient across
#: long sequences where tanh units with random recurrent weights lose it.
RECURRENCES = ("none", "irnn")
#: The ``layer`` of optimizer-level entries in :func:`describe_changes`.
OPTIMIZER = "(optimizer)"

_LAYER_ACTIVATIONS = {"leaky_relu": "LeakyReLU", "prelu": "PReLU"}
_CHANGEABLE_ACTIVATIONS = frozenset(SATURATING_ACTIVATIONS) | frozenset(RELU_FAMILY)
_KERNEL_KEYS = ("kernel_initializer", "depthwise_initializer", "pointwise_initializer")
_NESTED_CONFIG_KEYS = ("layer", "backward_layer", "cell")
_KERNEL_BASES = frozenset({"Dense", "BaseConv", "BaseConvTranspose", "BaseDepthwiseConv",
                           "BaseSeparableConv"})
_ACTIVATION_LAYERS = frozenset({"Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax"})
# Layers that neither hold weights nor mix inputs: the layer before one of them
# at the end of a model is still the output layer.
_PASSTHROUGH_LAYERS = _ACTIVATION_LAYERS | frozenset({
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianDropout",
    "GaussianNoise", "AlphaDropout", "Flatten", "Reshape", "Permute", "RepeatVector",
    "ActivityRegularization", "Identity"})
_CLIP_KEYS = ("clipnorm", "clipvalue", "global_clipnorm")


# --------------------------------------------------------------------------
# The setup

@dataclasses.dataclass(frozen=True)
class Setup:
    """One candidate fix, as plain data.

    Every field left at its default keeps what the model already has, so
    ``Setup()`` rebuilds the model unchanged.

    Attributes:
        initializer: Kernel initializer for layers with a kernel (Dense, Conv*,
            recurrent layers), one of :data:`INITIALIZERS`; None keeps them.
        activation: Replacement for saturating and ReLU-family hidden
            activations, one of :data:`ACTIVATIONS`; None keeps them.
        normalization: ``"batchnorm_before"`` (BatchNormalization before the
            activation), ``"batchnorm_after"``, ``"layernorm"`` (sequence
            models), or None / ``"none"``.
        clipping: ``"clipnorm"``, ``"clipvalue"``, ``"global_clipnorm"``, or
            None / ``"none"`` to keep the optimizer's own clipping.
        clip_threshold: The clipping threshold (None means 1.0).
        learning_rate_scale: Factor on the optimizer's learning rate.
        recurrence: ``"irnn"`` turns SimpleRNN layers into IRNNs (ReLU, identity
            recurrent initializer); None / ``"none"`` keeps them.

    Example:
        >>> setup = Setup(initializer="he_normal", activation="relu",
        ...               normalization="batchnorm_before", clipping="clipnorm")
        >>> Setup.from_dict(setup.to_dict()) == setup
        True
    """

    initializer: str | None = None
    activation: str | None = None
    normalization: str | None = None
    clipping: str | None = None
    clip_threshold: float | None = 1.0
    learning_rate_scale: float = 1.0
    recurrence: str | None = None

    def __post_init__(self):
        _check_choice("recurrence", self.recurrence, RECURRENCES)
        _check_choice("initializer", self.initializer, tuple(INITIALIZERS))
        _check_choice("activation", self.activation, ACTIVATIONS)
        _check_choice("normalization", self.normalization, NORMALIZATIONS)
        _check_choice("clipping", self.clipping, CLIPPINGS)
        if self.clip_threshold is None:
            object.__setattr__(self, "clip_threshold", 1.0)
        for name in ("clip_threshold", "learning_rate_scale"):
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not math.isfinite(value) or value <= 0):
                raise UsageError(
                    f"The '{name}' parameter of Setup must be a positive finite number. "
                    f"Got {value!r} instead.")
            object.__setattr__(self, name, float(value))

    @property
    def kernel_initializer(self) -> str | None:
        """The initializer applied: the chosen one, or lecun_normal for SELU."""
        if self.initializer is None and self.activation == "selu":
            return "lecun_normal"
        return self.initializer

    @property
    def normalization_kind(self) -> str | None:
        """The normalization, with ``"none"`` read as None."""
        return None if self.normalization in (None, "none") else self.normalization

    @property
    def clipping_kind(self) -> str | None:
        """The clipping argument, with ``"none"`` read as None."""
        return None if self.clipping in (None, "none") else self.clipping

    @property
    def is_baseline(self) -> bool:
        """Whether the setup changes nothing at all."""
        return (self.kernel_initializer is None and self.activation is None
                and self.normalization_kind is None and self.clipping_kind is None
                and self.learning_rate_scale == 1.0 and self.recurrence_kind is None)

    @property
    def recurrence_kind(self) -> str | None:
        """The recurrence scheme, with ``"none"`` read as None."""
        return None if self.recurrence in (None, "none") else self.recurrence

    def describe(self) -> str:
        """A short human-readable summary, e.g. ``he_normal init, relu, clipnorm=1``."""
        parts = []
        if self.kernel_initializer:
            parts.append(f"{self.kernel_initializer} init")
        if self.activation:
            parts.append(self.activation)
        if self.normalization_kind:
            parts.append(self.normalization_kind)
        if self.clipping_kind:
            parts.append(f"{self.clipping_kind}={self.clip_threshold:g}")
        if self.learning_rate_scale != 1.0:
            parts.append(f"learning rate x{self.learning_rate_scale:g}")
        if self.recurrence_kind:
            parts.append(f"{self.recurrence_kind} recurrence")
        return ", ".join(parts) if parts else "the model unchanged"

    def to_dict(self) -> dict:
        """The fields as a JSON-friendly dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Setup":
        """Rebuild a setup from :meth:`to_dict` output.

        Raises:
            UsageError: ``data`` is not a dict, has an unknown field, or a value
                a setup cannot take.
        """
        if not isinstance(data, dict):
            raise UsageError(f"A setup must be given as a dict. Got {type(data).__name__} instead.")
        fields = [field.name for field in dataclasses.fields(cls)]
        unknown = [key for key in data if key not in fields]
        if unknown:
            raise UsageError(
                f"The setup has an unknown field '{unknown[0]}'; the fields are "
                f"{', '.join(fields)}. Remove it or correct its spelling.")
        return cls(**data)


def _check_choice(name: str, value, choices) -> None:
    if value is None or value in choices:
        return
    allowed = ", ".join(repr(choice) for choice in choices)
    raise UsageError(
        f"The '{name}' parameter of Setup must be None or one of {allowed}. Got {value!r} instead.")


# --------------------------------------------------------------------------
# Reading the model: leaves, what follows what, which layers are outputs

class _Structure:
    """The leaf layers of a Sequential/Functional model, nested models flattened.

    Attributes:
        leaves: ``{path: layer}`` in forward order, input layers left out.
        successors: ``{path: [paths]}``, the leaves that read each leaf's output.
        outputs: Paths of the output layers, including the layer before a
            trailing weightless layer (``Dense`` before ``Activation("softmax")``).
        names: Every layer and model name in the model, nested ones too.
        sequence: Whether the model has a recurrent layer.
    """

    def __init__(self, model, keras):
        self.keras = keras
        self.leaves: dict = {}
        self.successors: dict = {}
        self.names: set = _all_names(model, keras)
        self._ends: dict = {}
        _, tails = self._link(model, "")
        self.outputs = self._with_trailing(tails)
        self.sequence = any(_is_recurrent(layer, keras) for layer in self.leaves.values())

    def _link(self, model, prefix):
        """Record edges inside ``model``; return its ``(heads, tails)`` leaf paths."""
        keras = self.keras
        if isinstance(model, keras.Sequential):
            heads, previous = [], None
            for layer in model.layers:
                first, last = self._ends_of(layer, prefix)
                if previous is None:
                    heads = first
                else:
                    self._connect(previous, first)
                previous = last
            return heads, previous or []
        heads = []
        for depth in sorted(model._nodes_by_depth, reverse=True):
            for node in model._nodes_by_depth[depth]:
                if node.is_input or node.operation is None:
                    continue
                first, _ = self._ends_of(node.operation, prefix)
                for tensor in node.input_tensors:
                    producer = tensor._keras_history.operation
                    if isinstance(producer, keras.layers.InputLayer):
                        heads.extend(path for path in first if path not in heads)
                    else:
                        self._connect(self._ends_of(producer, prefix)[1], first)
        tails = []
        for tensor in model.outputs:
            producer = tensor._keras_history.operation
            if not isinstance(producer, keras.layers.InputLayer):
                tails.extend(self._ends_of(producer, prefix)[1])
        return heads, tails

    def _ends_of(self, layer, prefix):
        key = (prefix, id(layer))
        if key not in self._ends:
            self.names.add(layer.name)
            path = prefix + layer.name
            if _is_graph_model(layer, self.keras):
                self._ends[key] = self._link(layer, path + "/")
            else:
                self.leaves[path] = layer
                self.successors[path] = []
                self._ends[key] = ([path], [path])
        return self._ends[key]

    def _connect(self, sources, targets):
        for source in sources:
            for target in targets:
                if target not in self.successors[source]:
                    self.successors[source].append(target)

    def _with_trailing(self, tails):
        predecessors: dict = {}
        for source, targets in self.successors.items():
            for target in targets:
                predecessors.setdefault(target, []).append(source)
        outputs, pending = set(), list(tails)
        while pending:
            path = pending.pop()
            if path in outputs:
                continue
            outputs.add(path)
            if type(self.leaves[path]).__name__ in _PASSTHROUGH_LAYERS:
                pending.extend(predecessors.get(path, []))
        return outputs

    def followed_by_normalization(self, path) -> bool:
        return any(type(self.leaves[after]).__name__.endswith("Normalization")
                   for after in self.successors[path])


def _all_names(model, keras) -> set:
    names = {model.name}
    # A Sequential model's InputLayer is only in its private layer list.
    for layer in list(getattr(model, "_layers", [])) + list(model.layers):
        names.add(layer.name)
        if _is_graph_model(layer, keras):
            names |= _all_names(layer, keras)
    return names


def _is_recurrent(layer, keras) -> bool:
    return isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional))


def _is_kernel_layer(layer) -> bool:
    """Dense and convolution layers, the ones split around a normalization."""
    return any(cls.__name__ in _KERNEL_BASES for cls in type(layer).__mro__)


# --------------------------------------------------------------------------
# The plan

@dataclasses.dataclass
class _LayerSpec:
    """A layer to create: ``keras.layers.<class_name>(**kwargs)``."""

    class_name: str
    kwargs: dict

    def describe(self) -> str:
        arguments = [repr(value) for key, value in self.kwargs.items() if key == "activation"]
        arguments += [f"{key}={value!r}" for key, value in self.kwargs.items() if key != "activation"]
        return f"{self.class_name}({', '.join(arguments)})"

    def build(self, keras):
        return getattr(keras.layers, self.class_name)(**self.kwargs)


@dataclasses.dataclass
class _LeafPlan:
    """What happens to one leaf layer."""

    path: str
    layer: Any
    config: dict
    edits: dict = dataclasses.field(default_factory=dict)
    replacement: _LayerSpec | None = None
    inserts: list = dataclasses.field(default_factory=list)
    reinitialise: bool = False
    initializer_changes: list = dataclasses.field(default_factory=list)
    activation_from: str | None = None
    instances: list | None = None

    def final_activation(self):
        """The activation the rebuilt layer applies, before any insert."""
        if self.replacement is not None:
            return None
        return self.edits.get("activation", self.config.get("activation"))

    def changes(self) -> list:
        entries = list(self.initializer_changes)
        if self.activation_from is not None:
            target = (self.replacement.kwargs.get("activation", _ACTIVATION_OF_LAYER.get(
                self.replacement.class_name)) if self.replacement is not None
                else self.edits["activation"])
            entries.append(_entry(self.path, "activation", self.activation_from, target))
        entries.extend(_entry(self.path, "insert_after", None, spec.describe())
                       for spec in self.inserts)
        return entries

    def inserted_layers(self, keras) -> list:
        # Built once, so a shared layer shares its inserted layers too.
        if self.instances is None:
            self.instances = [spec.build(keras) for spec in self.inserts]
        return self.instances


_ACTIVATION_OF_LAYER = {"LeakyReLU": "leaky_relu", "PReLU": "prelu"}


def _entry(layer, change, before, after) -> dict:
    return {"layer": layer, "change": change, "from": before, "to": after}


class _Names:
    """Hands out layer names unused anywhere in the model."""

    def __init__(self, taken):
        self.taken = set(taken)

    def new(self, base: str) -> str:
        name, number = base, 0
        while name in self.taken:
            number += 1
            name = f"{base}_{number}"
        self.taken.add(name)
        return name


def _plan(model, setup: "Setup", scope, keras) -> tuple:
    """``(structure, {path: _LeafPlan})`` for rewriting ``model`` with ``setup``."""
    structure = _Structure(model, keras)
    names = _Names(structure.names)
    plans = {path: _LeafPlan(path, layer, layer.get_config())
             for path, layer in structure.leaves.items()}
    chosen = set(structure.leaves) if scope is None else scope
    for path, plan in plans.items():
        if path in chosen:
            _plan_initializer(plan, setup, keras)
            _plan_recurrence(plan, setup, keras)
            if path not in structure.outputs:
                _plan_activation(plan, setup, names, keras)
    for path, plan in plans.items():
        if path in chosen and path not in structure.outputs:
            _plan_normalization(plan, setup, structure, plans, names, keras)
    return structure, plans


def _plan_initializer(plan: _LeafPlan, setup: Setup, keras) -> None:
    target = setup.kernel_initializer
    if target is None:
        return
    kernel_keys = [key for key in _KERNEL_KEYS if _find_config_value(plan.config, key) is not None]
    if not kernel_keys:
        return
    wanted = {key: target for key in kernel_keys}
    if _find_config_value(plan.config, "recurrent_initializer") is not None:
        wanted["recurrent_initializer"] = "orthogonal"
    if _find_config_value(plan.config, "bias_initializer") is not None:
        wanted["bias_initializer"] = "zeros"
    for key, value in wanted.items():
        current = _initializer_class(_find_config_value(plan.config, key), keras)
        if current != _initializer_class(value, keras):
            plan.initializer_changes.append(_entry(plan.path, key, current, value))
    if plan.initializer_changes:
        plan.edits.update(wanted)
        plan.reinitialise = True


def _plan_recurrence(plan: _LeafPlan, setup: Setup, keras) -> None:
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


def _find_config_value(config: dict, key: str):
    """``config[key]``, looking inside wrapped layers and cells too."""
    if key in config:
        return config[key]
    for nested in _nested_configs(config):
        value = _find_config_value(nested, key)
        if value is not None:
            return value
    return None


def _nested_configs(config: dict) -> list:
    return [config[key]["config"] for key in _NESTED_CONFIG_KEYS
            if isinstance(config.get(key), dict) and isinstance(config[key].get("config"), dict)]


def _initializer_class(value, keras) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict):
        return value.get("class_name")
    if isinstance(value, str):
        return INITIALIZERS.get(value) or type(keras.initializers.get(value)).__name__
    return type(value).__name__


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


def _plan_normalization(plan, setup, structure, plans, names, keras) -> None:
    kind = setup.normalization_kind
    path, layer = plan.path, plan.layer
    if kind is None or structure.followed_by_normalization(path):
        return
    if kind == "layernorm":
        if not structure.sequence:
            return
        returns_sequences = (_find_config_value(plan.config, "return_sequences")
                             and not _find_config_value(plan.config, "return_state"))
        if (_is_recurrent(layer, keras) and returns_sequences) or isinstance(layer, keras.layers.Dense):
            plan.inserts.append(_LayerSpec("LayerNormalization", {"name": names.new(f"{layer.name}_ln")}))
        return
    if not _is_kernel_layer(layer):
        return
    activation = plan.final_activation()
    if activation not in (None, "linear"):
        # Dense(activation=f) becomes Dense, then BatchNormalization and f in the chosen order.
        plan.activation_from = plan.activation_from or activation_name(layer) or "custom"
        plan.edits["activation"] = "linear"
        label = activation if isinstance(activation, str) else "activation"
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
    # A linear layer followed by a separate activation layer only.
    after = structure.successors[path]
    if len(after) != 1:
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


def _batchnorm_spec(plan: _LeafPlan, names: _Names) -> _LayerSpec:
    kwargs: dict = {"name": names.new(f"{plan.layer.name}_bn")}
    if plan.config.get("data_format") == "channels_first":
        kwargs["axis"] = 1
    return _LayerSpec("BatchNormalization", kwargs)


def _edited_config(config: dict, edits: dict) -> dict:
    """A copy of ``config`` with ``edits`` applied, inside wrapped layers and cells too."""
    config = dict(config)
    for key, value in edits.items():
        if key in config:
            config[key] = value
    for key in _NESTED_CONFIG_KEYS:
        if isinstance(config.get(key), dict) and isinstance(config[key].get("config"), dict):
            config[key] = dict(config[key], config=_edited_config(config[key]["config"], edits))
    return config


# --------------------------------------------------------------------------
# Building

class _Builder:
    """Builds the rewritten model from the plans, remembering which new layer
    stands for which old one so weights can be copied afterwards."""

    def __init__(self, plans: dict, keras):
        self.plans = plans
        self.keras = keras
        self.pairs: list = []

    def build(self, model, prefix: str = ""):
        if isinstance(model, self.keras.Sequential):
            return self._sequential(model, prefix)
        return self._functional(model, prefix)

    def _sequential(self, model, prefix):
        keras = self.keras
        new_layers = []
        first = model._layers[0] if model._layers else None
        if isinstance(first, keras.layers.InputLayer):
            new_layers.append(keras.Input(batch_shape=first.batch_shape, dtype=first.output.dtype,
                                          name=first.name))
        for layer in model.layers:
            if _is_graph_model(layer, keras):
                new_layers.append(self.build(layer, prefix + layer.name + "/"))
            else:
                plan = self.plans[prefix + layer.name]
                new_layers.append(self._leaf(plan))
                new_layers.extend(plan.inserted_layers(keras))
        return keras.Sequential(new_layers, name=model.name, trainable=model.trainable)

    def _functional(self, model, prefix):
        keras = self.keras
        plan_of_new: dict = {}
        cloned: dict = {}

        def clone(layer):
            if id(layer) not in cloned:
                if _is_graph_model(layer, keras):
                    cloned[id(layer)] = self.build(layer, prefix + layer.name + "/")
                else:
                    plan = self.plans[prefix + layer.name]
                    cloned[id(layer)] = self._leaf(plan)
                    plan_of_new[id(cloned[id(layer)])] = plan
            return cloned[id(layer)]

        def call(layer, *args, **kwargs):
            output = layer(*args, **kwargs)
            plan = plan_of_new.get(id(layer))
            if plan is not None:
                for inserted in plan.inserted_layers(keras):
                    output = inserted(output)
            return output

        inputs = keras.tree.map_structure(
            lambda tensor: keras.Input(batch_shape=tensor.shape, dtype=tensor.dtype,
                                       name=tensor._keras_history.operation.name),
            model.input)
        outputs = model._run_through_graph(inputs, operation_fn=clone, call_fn=call)
        new = keras.Model(inputs=inputs, outputs=outputs, name=model.name)
        if not model.trainable:
            new.trainable = False
        return new

    def _leaf(self, plan: _LeafPlan):
        if plan.replacement is not None:
            layer = plan.replacement.build(self.keras)
        else:
            config = _edited_config(plan.config, plan.edits)
            try:
                layer = type(plan.layer).from_config(config)
            except Exception as error:
                raise SurgeryError(
                    f"The layer '{plan.path}' ({type(plan.layer).__name__}) cannot be rebuilt from "
                    f"its config ({error}). Give custom layers a complete get_config() and register "
                    "them with keras.saving.register_keras_serializable().") from error
        self.pairs.append((plan, layer))
        return layer

    def copy_weights(self) -> None:
        for plan, new in self.pairs:
            if plan.reinitialise or plan.replacement is not None:
                continue
            old = plan.layer
            if [tuple(v.shape) for v in old.weights] == [tuple(v.shape) for v in new.weights]:
                new.set_weights(old.get_weights())
            else:
                warnings.warn(
                    f"The layer '{plan.path}' has weights of other shapes after rewriting, so it "
                    "starts from fresh weights.", stacklevel=3)


# --------------------------------------------------------------------------
# The optimizer

def _optimizer_configs(model, setup: Setup, keras) -> tuple:
    """``(optimizer class, current config, new config)`` for the rewritten model."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        optimizer = keras.optimizers.Adam(1e-3)
    current = optimizer.get_config()
    new = dict(current)
    if setup.learning_rate_scale != 1.0:
        if "learning_rate" not in current:
            raise SurgeryError(
                f"The optimizer {type(optimizer).__name__} has no 'learning_rate' setting, so the "
                "learning rate cannot be scaled. Use a setup with learning_rate_scale=1.0.")
        new["learning_rate"] = _scaled_rate(current["learning_rate"], setup.learning_rate_scale,
                                            type(optimizer).__name__)
    clipping = setup.clipping_kind
    if clipping is not None:
        for key in _CLIP_KEYS:
            new[key] = None
        # Keras optimizers accept only one of clipnorm, clipvalue and global_clipnorm.
        new[clipping] = setup.clip_threshold
    return type(optimizer), current, new


def _scaled_rate(rate, scale: float, optimizer_name: str):
    if isinstance(rate, (int, float)):
        return _tidy(float(rate) * scale)
    if isinstance(rate, dict) and isinstance(rate.get("config"), dict):
        config = dict(rate["config"])
        scaled = False
        for key in ("initial_learning_rate", "warmup_target", "maximal_learning_rate"):
            if isinstance(config.get(key), (int, float)):
                config[key] = _tidy(config[key] * scale)
                scaled = True
        if isinstance(config.get("values"), list):
            config["values"] = [_tidy(value * scale) for value in config["values"]]
            scaled = True
        if scaled:
            return dict(rate, config=config)
    raise SurgeryError(
        f"The learning rate of the {optimizer_name} optimizer is a {type(rate).__name__} whose scale "
        "gradadvisor cannot change. Use a number or a standard keras.optimizers.schedules schedule, "
        "or a setup with learning_rate_scale=1.0.")


def _tidy(value: float) -> float:
    # Optimizer configs hold float32 values (0.1 reads 0.10000000149); 7 digits undo that.
    return float(f"{float(value):.7g}")


def optimizer_for(model, setup: Setup):
    """A fresh optimizer for a rewritten model: same class and config as the
    model's, learning rate scaled and the setup's gradient clipping set.

    Clipping lives on the optimizer in Keras 3 (``model.compile(clipnorm=...)``
    is a TypeError), and only one of ``clipnorm``, ``clipvalue`` and
    ``global_clipnorm`` may be set, so a chosen clipping replaces the one the
    optimizer had; with no clipping chosen the optimizer's own is kept.

    Args:
        model: The user's model; without an optimizer, ``Adam(1e-3)`` is the base.
        setup: The setup whose ``learning_rate_scale`` and clipping apply.

    Returns:
        A new, unbuilt ``keras.optimizers.Optimizer``.

    Raises:
        SurgeryError: the learning rate is a schedule whose scale cannot be changed.

    Example:
        >>> optimizer_for(model, Setup(clipping="clipnorm", learning_rate_scale=0.5))
    """
    _, keras = import_keras()
    setup = _as_setup(setup)
    cls, _, config = _optimizer_configs(model, setup, keras)
    return cls.from_config(config)


def _compile_arguments(model, keras) -> dict | None:
    """The arguments ``model`` was compiled with, without its optimizer, or None."""
    if not getattr(model, "compiled", False):
        return None
    raw = getattr(model, "_compile_config", None)
    if raw is not None and isinstance(getattr(raw, "config", None), dict):
        # The objects the user passed: unlike the serialized config, these need no
        # registration for custom loss functions.
        arguments = dict(raw.config)
    else:
        arguments = keras.saving.deserialize_keras_object(model.get_compile_config())
    arguments.pop("optimizer", None)
    return {key: _fresh(value, keras) for key, value in arguments.items()}


def _fresh(value, keras):
    """Plain lists and dicts (TensorFlow wraps tracked ones), and copies of metric
    objects, which hold state and must not be shared by two models."""
    if isinstance(value, keras.metrics.Metric):
        return type(value).from_config(value.get_config())
    if isinstance(value, collections.abc.Mapping):
        return {key: _fresh(item, keras) for key, item in value.items()}
    if isinstance(value, collections.abc.Sequence) and not isinstance(value, str):
        return [_fresh(item, keras) for item in value]
    return value


# --------------------------------------------------------------------------
# Public functions

def _as_setup(setup) -> Setup:
    if isinstance(setup, Setup):
        return setup
    if isinstance(setup, dict):
        return Setup.from_dict(setup)
    raise UsageError(
        f"The 'setup' parameter must be a gradadvisor.surgery.Setup or a dict. "
        f"Got {type(setup).__name__} instead.")


def _check_model(model, keras, function: str) -> None:
    if not isinstance(model, keras.Model):
        raise UsageError(
            f"The 'model' parameter of {function} must be a keras.Model. "
            f"Got {type(model).__name__} instead.")
    if not _is_graph_model(model, keras):
        raise SurgeryError(
            f"The model '{model.name}' is a subclassed model ({type(model).__name__}): gradadvisor "
            "can diagnose it but can only rewrite a Sequential or Functional model, so rebuild it "
            "with keras.Sequential or the functional API, or apply the setup in your own code as "
            "gradadvisor.surgery.snippet() shows.")


def _check_scope(model, scope) -> set | None:
    if scope is None:
        return None
    if isinstance(scope, str):
        scope = [scope]
    scope = set(scope)
    known = [path for path, _ in leaf_layers(model)]
    unknown = sorted(path for path in scope if path not in known)
    if unknown:
        raise UsageError(
            f"The 'scope' parameter names a layer that is not in the model: '{unknown[0]}'. "
            f"Use layer paths such as {', '.join(repr(path) for path in known[:3])} "
            "(nested model names joined with '/').")
    return scope


def apply_setup(model, setup: Setup, *, scope=None):
    """Rewrite ``model`` into a new, built and compiled model with ``setup``.

    The input model is never modified.  Layers keep their names and, unless
    re-initialised, their weights; inserted layers get names unused anywhere
    in the model (Keras' automatic names collide after ``load_model``).

    What changes, for the layers in ``scope``:

    * initializer: kernels of Dense, Conv* and recurrent layers (recurrent
      kernels become orthogonal, biases zeros); those layers start from fresh
      weights.  SELU without an initializer uses lecun_normal.
    * activation: saturating (sigmoid, tanh, ...) and ReLU-family activations
      of hidden layers and ``Activation`` layers.  Output layers, recurrent
      layers and wrapped layers (``TimeDistributed``) keep theirs.  LeakyReLU
      and PReLU are inserted as layers after a linear version of the layer.
    * normalization: hidden Dense/Conv layers become linear layer,
      BatchNormalization and activation (``batchnorm_before``) or linear
      layer, activation and BatchNormalization (``batchnorm_after``), unless a
      normalization already follows; ``layernorm`` puts LayerNormalization
      after sequence-returning recurrent layers and hidden Dense layers of
      models with a recurrent layer, and does nothing in other models.

    The new model is compiled with the input model's loss and metrics (none if
    it was not compiled) and :func:`optimizer_for`'s optimizer, so clipping and
    learning rate travel with it.

    Args:
        model: A Sequential or Functional ``keras.Model``; nested models, branches
            and shared layers are fine.
        setup: A :class:`Setup` (or its dict).
        scope: Optional layer paths (as :func:`gradadvisor.probe.leaf_layers`
            gives them) to restrict the layer changes to; the optimizer changes
            apply regardless.

    Returns:
        The new ``keras.Model``.

    Raises:
        SurgeryError: a subclassed model, or a layer that cannot be rebuilt.
        UsageError: a bad ``setup`` or an unknown path in ``scope``.

    Example:
        >>> fixed = apply_setup(model, Setup(activation="relu", initializer="he_normal"))
        >>> fixed.fit(x, y)
    """
    _, keras = import_keras()
    _check_model(model, keras, "apply_setup")
    setup = _as_setup(setup)
    scope = _check_scope(model, scope)
    _, plans = _plan(model, setup, scope, keras)
    builder = _Builder(plans, keras)
    new = builder.build(model)
    builder.copy_weights()
    arguments = _compile_arguments(model, keras) or {}
    new.compile(optimizer=optimizer_for(model, setup), **arguments)
    return new


def describe_changes(model, setup: Setup, scope=None) -> list:
    """List what :func:`apply_setup` would change, without building anything.

    Layer entries come in forward order, one per changed setting or inserted
    layer, inserted layers in the order they follow the layer.  Optimizer
    entries (``layer`` is ``"(optimizer)"``) compare the model's optimizer, or
    ``Adam(1e-3)`` if it has none, with :func:`optimizer_for`'s.

    Args:
        model: A Sequential or Functional ``keras.Model``.
        setup: A :class:`Setup` (or its dict).
        scope: As for :func:`apply_setup`.

    Returns:
        A list of dicts ``{"layer", "change", "from", "to"}``, e.g.
        ``{"layer": "encoder/dense_1", "change": "kernel_initializer",
        "from": "RandomNormal", "to": "he_normal"}``; ``change`` is an
        initializer key, ``"activation"``, ``"insert_after"`` (``to`` names the
        new layer), ``"learning_rate"`` or a clipping argument.

    Raises:
        SurgeryError: a subclassed model.
        UsageError: a bad ``setup`` or an unknown path in ``scope``.
    """
    _, keras = import_keras()
    _check_model(model, keras, "describe_changes")
    setup = _as_setup(setup)
    scope = _check_scope(model, scope)
    _, plans = _plan(model, setup, scope, keras)
    entries = [entry for plan in plans.values() for entry in plan.changes()]
    _, current, new = _optimizer_configs(model, setup, keras)
    for key in ("learning_rate",) + _CLIP_KEYS:
        before, after = current.get(key), new.get(key)
        if before != after:
            if key == "learning_rate" and isinstance(before, (int, float)):
                before = _tidy(before)
            entries.append(_entry(OPTIMIZER, key, before, after))
    return entries


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
        if _is_graph_model(model, keras):
            recurrent = [layer for _, layer in leaf_layers(model) if isinstance(layer, keras.layers.RNN)]
            has_recurrent = bool(recurrent)
            if recurrent:
                recurrent_class = type(recurrent[0]).__name__
    units = [64, 32]
    if model is not None and _is_graph_model(model, import_keras()[1]):
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


def _snippet_optimizer(setup: Setup, model) -> list:
    clipping = setup.clipping_kind
    if clipping is None and setup.learning_rate_scale == 1.0:
        return []
    name, rate = "Adam", 0.001
    if model is not None and getattr(model, "optimizer", None) is not None:
        name = type(model.optimizer).__name__
        rate = model.optimizer.get_config().get("learning_rate")
    arguments = []
    comment = ""
    if setup.learning_rate_scale != 1.0:
        if isinstance(rate, (int, float)):
            arguments.append(f"learning_rate={_tidy(rate * setup.learning_rate_scale)!r}")
            comment = f"  # {setup.learning_rate_scale:g} x {_tidy(rate):g}"
        else:
            comment = f"  # scale your learning rate schedule by {setup.learning_rate_scale:g}"
    if clipping is not None:
        arguments.append(f"{clipping}={setup.clip_threshold!r}")
    return [f"optimizer = keras.optimizers.{name}({', '.join(arguments)}){comment}"]
