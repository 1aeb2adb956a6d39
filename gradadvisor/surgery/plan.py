"""The plan: what happens to each leaf layer, as data, before anything is built."""

from __future__ import annotations

import dataclasses
from typing import Any

_NESTED_CONFIG_KEYS = ("layer", "backward_layer", "cell")


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
        # A wrapper's spec holds the spec of the layer it wraps.
        kwargs = {key: value.build(keras) if hasattr(value, "build") and not isinstance(value, type) else value
                  for key, value in self.kwargs.items()}
        return getattr(keras.layers, self.class_name)(**kwargs)


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
        """The activation the rebuilt layer applies, before any insert (for a
        ``TimeDistributed`` wrapper, its inner layer's)."""
        if self.replacement is not None:
            return None
        return self.edits.get("activation", _find_config_value(self.config, "activation"))

    @property
    def changed(self) -> bool:
        return bool(self.edits or self.replacement is not None or self.inserts or self.reinitialise)

    def keep(self) -> None:
        """Drop every planned change: the layer is rebuilt as it is."""
        self.edits, self.replacement, self.inserts = {}, None, []
        self.reinitialise, self.initializer_changes = False, []
        self.activation_from, self.instances = None, None

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


def _skip(path: str, reason: str) -> dict:
    """An entry of the kept-as-is list: a layer the setup would change but cannot."""
    return {"layer": path, "reason": reason}


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
