"""The search space: the dimensions the findings open, the setups tried first, values to a setup."""

from __future__ import annotations

import dataclasses

from .._tf import import_keras

INITIALIZERS = ["keep", "he_normal", "he_uniform", "glorot_uniform", "glorot_normal", "lecun_normal",
                "orthogonal"]
ACTIVATIONS = ["keep", "relu", "leaky_relu", "prelu", "elu", "selu", "gelu", "swish"]
CLIP_THRESHOLDS = [0.5, 1.0, 5.0]
LEARNING_RATE_SCALES = [1.0, 0.3, 0.1, 0.01]


@dataclasses.dataclass
class Dimension:
    """One searched choice and the findings that opened it."""

    name: str
    values: list
    opened_by: list
    default: object

    def to_dict(self) -> dict:
        return {"name": self.name, "values": list(self.values), "opened_by": list(self.opened_by),
                "default": self.default}


def search_space(diagnosis, model) -> list:
    """The dimensions to search, from the fixes of the warning and error findings."""
    from ..probe import leaf_layers, _is_graph_model

    _, keras = import_keras()
    opened: dict = {}
    for finding in diagnosis.at_least("warning"):
        for fix in finding.fixes:
            opened.setdefault(fix, [])
            if finding.rule not in opened[fix]:
                opened[fix].append(finding.rule)
    layers = [layer for _, layer in leaf_layers(model)] if _is_graph_model(model, keras) else []
    sequence = any(isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional)) for layer in layers)
    categories = set(diagnosis.categories)
    dimensions = []
    if "activation" in opened:
        default = "relu" if categories & {"vanishing_gradients", "saturated_units", "slow_updates"} else "leaky_relu"
        dimensions.append(Dimension("activation", ACTIVATIONS, opened["activation"], default))
    if "initializer" in opened:
        default = "orthogonal" if sequence else "he_normal"
        dimensions.append(Dimension("initializer", INITIALIZERS, opened["initializer"], default))
    if "normalization" in opened:
        values = ["none", "layernorm"] if sequence else ["none", "batchnorm_before", "batchnorm_after"]
        dimensions.append(Dimension("normalization", values, opened["normalization"], "none"))
    if "clipping" in opened:
        dimensions.append(Dimension("clipping", ["none", "global_clipnorm", "clipnorm", "clipvalue"],
                                    opened["clipping"], "global_clipnorm"))
        dimensions.append(Dimension("clip_threshold", CLIP_THRESHOLDS, opened["clipping"], 1.0))
    simple_rnn = any(isinstance(layer, keras.layers.SimpleRNN) for layer in layers)
    if "recurrence" in opened and simple_rnn:
        dimensions.append(Dimension("recurrence", ["none", "irnn"], opened["recurrence"], "irnn"))
    if "output" in opened:
        from ..surgery.output import output_fix_for

        fix = output_fix_for(getattr(diagnosis.probe, "outputs", None))
        if fix:
            dimensions.append(Dimension("output", ["keep", fix], opened["output"], fix))
    if "learning_rate" in opened:
        default = 0.1 if categories & {"exploding_gradients", "nonfinite", "large_updates"} else 1.0
        dimensions.append(Dimension("learning_rate_scale", LEARNING_RATE_SCALES, opened["learning_rate"], default))
    return dimensions


def expert_starts(dimensions, diagnosis) -> list:
    """Setups worth trying first, from textbook remedies for what was found.

    Keras Tuner's Bayesian optimisation starts from random points; these known
    remedies are evaluated before them so a small budget is not wasted.
    """
    names = {d.name for d in dimensions}
    categories = set(diagnosis.categories)
    starts = [{d.name: d.default for d in dimensions}]
    if {"activation", "initializer"} <= names:
        starts.append({"activation": "selu", "initializer": "lecun_normal"})
    if "normalization" in names:
        norm = next(d for d in dimensions if d.name == "normalization").values[1]
        starts.append({"normalization": norm})
    if "clipping" in names and categories & {"exploding_gradients", "nonfinite"}:
        starts.append({"clipping": "global_clipnorm", "clip_threshold": 1.0, "learning_rate_scale": 0.1})
    if "learning_rate_scale" in names:
        starts.append({"learning_rate_scale": 0.01})
    completed = []
    for start in starts:
        values = {d.name: start.get(d.name, "keep" if "keep" in d.values else d.values[0])
                  for d in dimensions}
        for dimension in dimensions:
            if values[dimension.name] not in dimension.values:
                values[dimension.name] = dimension.default
        if values not in completed:
            completed.append(values)
    return completed


def setup_from_values(values: dict):
    """A :class:`~gradadvisor.surgery.Setup` from hyperparameter values."""
    from ..surgery import Setup

    def pick(name):
        value = values.get(name)
        return None if value in (None, "keep", "none") else value

    clipping = pick("clipping")
    return Setup(
        initializer=pick("initializer"), activation=pick("activation"),
        normalization=pick("normalization"), clipping=clipping,
        clip_threshold=float(values["clip_threshold"]) if clipping and "clip_threshold" in values else None,
        learning_rate_scale=float(values.get("learning_rate_scale", 1.0)),
        recurrence=pick("recurrence"), output=pick("output"))
