"""The search space: the dimensions the findings open, the setups tried first, values to a setup."""

from __future__ import annotations

import dataclasses

from .._tf import import_keras

INITIALIZERS = ["keep", "he_normal", "he_uniform", "glorot_uniform", "glorot_normal", "lecun_normal",
                "orthogonal"]
ACTIVATIONS = ["keep", "relu", "leaky_relu", "prelu", "elu", "selu", "gelu", "swish"]
CLIP_THRESHOLDS = [0.5, 1.0, 5.0]
LEARNING_RATE_SCALES = [1.0, 0.3, 0.1, 0.01]
#: Learning-rate scales when gradients explode: a rate 10 to 1000 times too
#: high (SGD at 50 where 0.05 trains) is a common way to blow up.
WIDE_LEARNING_RATE_SCALES = [1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001]
#: Learning-rate scales up to 10x, for vanishing or saturating units on an
#: adaptive optimizer already at its standard rate (see
#: :func:`_learning_rate_dimensions`): the one remedy such a model had no
#: faster rate for.
FASTER_LEARNING_RATE_SCALES = [1.0, 3.0, 10.0]
#: The faster rate tried first, paired with each normalization placement.
FASTER_SCALE = FASTER_LEARNING_RATE_SCALES[-1]
#: Optimizers tried where plain SGD (or an adaptive one at a tiny rate) cannot
#: carry a weak gradient: "name:rate" strings, since Choice values share a type.
OPTIMIZER_CHOICES = ["keep", "adam:0.001", "adam:0.01", "rmsprop:0.001"]
_VANISHING = {"vanishing_gradients", "slow_updates", "saturated_units"}
_ADAPTIVE = ("Adam", "RMSprop", "Adagrad", "Adamax", "Nadam", "AdamW")
_EXPLODING = {"exploding_gradients", "nonfinite", "large_updates"}


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


def search_space(diagnosis, model, trial_steps: int = 60) -> list:
    """The dimensions to search, from the fixes of the warning and error findings.

    ``trial_steps`` sizes the warm-up offered against exploding gradients.
    """
    from ..probe import leaf_layers, is_graph_model

    _, keras = import_keras()
    opened: dict = {}
    for finding in diagnosis.at_least("warning"):
        for fix in finding.fixes:
            opened.setdefault(fix, [])
            if finding.rule not in opened[fix]:
                opened[fix].append(finding.rule)
    layers = [layer for _, layer in leaf_layers(model)] if is_graph_model(model, keras) else []
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
    if "recurrence" in opened:
        dimensions += _recurrent_dimensions(layers, opened["recurrence"], keras)
    if "output" in opened:
        from ..surgery.output import output_fix_for

        fix = output_fix_for(getattr(diagnosis.probe, "outputs", None))
        if fix:
            dimensions.append(Dimension("output", ["keep", fix], opened["output"], fix))
    dimensions += _learning_rate_dimensions(diagnosis, model, opened, trial_steps)
    return dimensions


def _recurrent_dimensions(layers, rules, keras) -> list:
    """Cell type, IRNN, forget-gate bias and orthogonal recurrent weights, for what the model has."""
    simple = any(isinstance(layer, keras.layers.SimpleRNN) for layer in layers)
    gru = any(isinstance(layer, keras.layers.GRU) for layer in layers)
    lstm = any(isinstance(layer, keras.layers.LSTM)
               or isinstance(getattr(layer, "forward_layer", None), keras.layers.LSTM) for layer in layers)
    dimensions = []
    if simple:
        dimensions.append(Dimension("cell", ["keep", "gru", "lstm"], rules, "lstm"))
        dimensions.append(Dimension("recurrence", ["none", "irnn"], rules, "none"))
    elif gru:
        dimensions.append(Dimension("cell", ["keep", "lstm"], rules, "lstm"))
    if simple or gru or lstm:
        dimensions.append(Dimension("direction", ["keep", "bidirectional"], rules, "keep"))
        dimensions.append(Dimension("forget_bias", ["keep", "unit", "chrono"], rules, "chrono"))
        dimensions.append(Dimension("recurrent_initializer", ["keep", "orthogonal"], rules, "orthogonal"))
    return dimensions


def _learning_rate_dimensions(diagnosis, model, opened: dict, trial_steps: int) -> list:
    """Learning-rate scale, warm-up and optimizer, as the findings and the optimizer call for."""
    categories = set(diagnosis.categories)
    name, rate = _optimizer_of(model)
    dimensions = []
    exploding_rules = [f.rule for f in diagnosis.at_least("warning") if f.category in _EXPLODING]
    if "learning_rate" in opened or exploding_rules:
        rules = opened.get("learning_rate") or exploding_rules
        if categories & _EXPLODING:
            default = 0.1 if _high_rate(name, rate) else 1.0
            dimensions.append(Dimension("learning_rate_scale", WIDE_LEARNING_RATE_SCALES, rules, default))
            dimensions.append(Dimension("warmup_steps", [0, max(5, int(round(0.15 * trial_steps)))], rules, 0))
        else:
            dimensions.append(Dimension("learning_rate_scale", LEARNING_RATE_SCALES, rules, 1.0))
    vanishing_rules = [f.rule for f in diagnosis.at_least("warning") if f.category in _VANISHING]
    plain_sgd = name == "SGD"
    if exploding_rules and _adaptive_too_fast(model):
        # An adaptive optimizer far above its usual rate: its own standard rate
        # (a 1000x cut of a rate of 20 still leaves Adam at 0.02) is offered
        # next to the learning-rate scales.
        dimensions.append(Dimension("optimizer", OPTIMIZER_CHOICES, exploding_rules, "keep"))
        return dimensions
    slow_adaptive = name in _ADAPTIVE and rate is not None and rate < 3e-4
    # Through time, a gated cell often needs a rate above Adam's standard 1e-3
    # to pick a weak long-range signal out within a short budget.
    through_time = "recurrence" in opened
    if vanishing_rules and (plain_sgd or slow_adaptive or through_time):
        dimensions.append(Dimension("optimizer", OPTIMIZER_CHOICES, vanishing_rules, "adam:0.001"))
    elif (vanishing_rules and name in _ADAPTIVE and rate is not None and not _high_rate(name, rate)
          and not categories & _EXPLODING):
        # An adaptive optimizer at its standard rate (3e-4 to under 5e-3):
        # plain SGD is offered Adam and a slow rate Adam's standard one, but
        # this model's remedies (a new activation, initializer or
        # normalization, from fresh weights) were tried only at its own rate,
        # and a model freed from saturation can still learn too slowly to show
        # it within the trial budget.  A one-convolution sigmoid network at
        # Adam 1e-3 learned with none of them in 60 steps, and with ReLU, He
        # and BatchNormalization at 10x the rate (normalization is what makes
        # a higher rate safe) it did.
        dimensions = [d for d in dimensions if d.name != "learning_rate_scale"] + [
            _faster_scales(dimensions, vanishing_rules)]
    elif plain_sgd:
        # Once an explosion or dead units are fixed, plain SGD at a safe rate
        # often learns too slowly to show it within the budget.
        others = [f.rule for f in diagnosis.at_least("warning") if f.category in _EXPLODING | {"dead_units"}]
        if others:
            dimensions.append(Dimension("optimizer", OPTIMIZER_CHOICES, others, "keep"))
    return dimensions


def _faster_scales(dimensions: list, rules: list) -> Dimension:
    """The learning-rate scale up to :data:`FASTER_SCALE`, joined with any scale already opened."""
    current = next((d for d in dimensions if d.name == "learning_rate_scale"), None)
    if current is None:
        return Dimension("learning_rate_scale", list(FASTER_LEARNING_RATE_SCALES), list(rules), 1.0)
    values = list(current.values) + [v for v in FASTER_LEARNING_RATE_SCALES if v not in current.values]
    opened_by = list(current.opened_by) + [rule for rule in rules if rule not in current.opened_by]
    return Dimension("learning_rate_scale", values, opened_by, current.default)


def _high_rate(name: str, rate) -> bool:
    """Whether a learning rate is well above its optimizer's usual range (SGD 0.5, adaptive 5e-3)."""
    if rate is None:
        return False
    return rate >= (0.5 if name == "SGD" else 5e-3)


def _optimizer_of(model) -> tuple:
    """``(class name, learning rate or None)`` of the model's optimizer (Adam 1e-3 if none)."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return "Adam", 1e-3
    rate = optimizer.get_config().get("learning_rate")
    return type(optimizer).__name__, float(rate) if isinstance(rate, (int, float)) else None


def standard_optimizer(model) -> str:
    """The optimizer choice at a standard rate closest to ``model``'s own.

    Adam at 1e-2 for a model with recurrent layers (the rate at which gated
    cells pick up a signal within a short budget), else the model's own
    adaptive class at 1e-3 (RMSprop, or Adam for any other).
    """
    from ..probe import is_graph_model, leaf_layers

    _, keras = import_keras()
    if is_graph_model(model, keras) and any(isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional))
                                            for _, layer in leaf_layers(model)):
        return "adam:0.01"
    name, _ = _optimizer_of(model)
    return "rmsprop:0.001" if name == "RMSprop" else "adam:0.001"


def _adaptive_too_fast(model) -> bool:
    """Whether ``model`` trains with an adaptive optimizer far above its usual rate."""
    if model is None:
        return False
    name, rate = _optimizer_of(model)
    return name in _ADAPTIVE and _high_rate(name, rate)


def expert_starts(dimensions, diagnosis, model=None) -> list:
    """Setups worth trying first, from textbook remedies for what was found.

    Keras Tuner's Bayesian optimisation starts from random points; these known
    remedies are evaluated before them so a small budget is not wasted.

    Args:
        dimensions: The searched dimensions (:class:`Dimension`).
        diagnosis: The diagnosis they were opened from.
        model: The model searched; its optimizer and layers pick the
            standard-rate optimizer tried early (see :func:`standard_optimizer`).
    """
    names = {d.name for d in dimensions}
    categories = set(diagnosis.categories)
    starts = [{d.name: d.default for d in dimensions}]
    if "cell" in names:
        # A gated cell with an adaptive optimizer is the textbook answer to
        # vanishing through time; GRU and LSTM each get a chance early.
        # Read backwards too, a signal near the start is a few steps from the
        # loss: the remedy when even gated cells cannot carry it all the way.
        starts.append({"cell": "gru", "direction": "bidirectional", "optimizer": "adam:0.01"})
        starts.append({"cell": "gru", "optimizer": "adam:0.01", "recurrent_initializer": "orthogonal"})
        starts.append({"cell": "lstm", "forget_bias": "chrono", "optimizer": "adam:0.01"})
    elif "forget_bias" in names:
        starts.append({"forget_bias": "chrono", "optimizer": "adam:0.01"})
        starts.append({"direction": "bidirectional", "optimizer": "adam:0.01"})
        starts.append({"forget_bias": "unit", "recurrent_initializer": "orthogonal", "optimizer": "adam:0.001"})
    if {"activation", "initializer"} <= names:
        starts.append({"activation": "selu", "initializer": "lecun_normal"})
    if "normalization" in names:
        norm = next(d for d in dimensions if d.name == "normalization").values[1]
        if {"activation", "initializer"} <= names and norm == "batchnorm_before":
            # The textbook remedy for a deep saturating stack without
            # normalization is all three at once, with an adaptive optimizer
            # where one is offered.
            starts.insert(1, {d.name: d.default for d in dimensions} | {"normalization": norm})
        starts.append({"normalization": norm})
    if "clipping" in names and categories & {"exploding_gradients", "nonfinite"}:
        starts.append({"clipping": "global_clipnorm", "clip_threshold": 1.0, "learning_rate_scale": 0.1})
    scales = next((d.values for d in dimensions if d.name == "learning_rate_scale"), [])
    if 0.01 in scales:
        starts.append({"learning_rate_scale": 0.01})
        if categories & _EXPLODING:
            warmup = next((d.values[-1] for d in dimensions if d.name == "warmup_steps"), 0)
            starts.append({"learning_rate_scale": 0.001, "warmup_steps": warmup})
    if FASTER_SCALE in scales:
        # Last of the starts, so a model that learns at its own rate stops the
        # search before it: the defaults at the faster rate, with each
        # normalization placement offered (BatchNormalization after the
        # activation learned at 10x where before it did not, on a sigmoid
        # convolution freed with ReLU and He).
        placements = next((d.values[1:] for d in dimensions if d.name == "normalization"), [])
        defaults = {d.name: d.default for d in dimensions} | {"learning_rate_scale": FASTER_SCALE}
        starts += [defaults | {"normalization": norm} for norm in placements] or [defaults]
    if "optimizer" in names and _adaptive_too_fast(model) and categories & _EXPLODING:
        # Second: the optimizer at its standard rate, and nothing else changed.
        starts.insert(1, {"optimizer": standard_optimizer(model)})
    elif "optimizer" in names and "cell" not in names and "forget_bias" not in names:
        # Second, right after the textbook defaults: a short budget may run only four trials.
        starts.insert(1, {**{d.name: d.default for d in dimensions}, "optimizer": "adam:0.001",
                          "learning_rate_scale": 1.0, "warmup_steps": 0})
    completed = []
    for start in starts:
        values = {d.name: start.get(d.name, _neutral(d)) for d in dimensions}
        for dimension in dimensions:
            if values[dimension.name] not in dimension.values:
                # The one cell type not offered is the model's own: asking for it keeps it.
                values[dimension.name] = "keep" if dimension.name == "cell" else dimension.default
        if values not in completed:
            completed.append(values)
    return completed


def _neutral(dimension):
    """The value of ``dimension`` that changes nothing."""
    for value in ("keep", "none", 1.0, 0):
        if value in dimension.values:
            return value
    return dimension.values[0]


def setup_from_values(values: dict):
    """A :class:`~gradadvisor.surgery.Setup` from hyperparameter values."""
    from ..surgery import Setup

    def pick(name):
        value = values.get(name)
        return None if value in (None, "keep", "none") else value

    clipping = pick("clipping")
    optimizer, optimizer_rate = None, None
    if pick("optimizer"):
        optimizer, _, rate = str(values["optimizer"]).partition(":")
        optimizer_rate = float(rate) if rate else None
    return Setup(
        initializer=pick("initializer"), activation=pick("activation"),
        normalization=pick("normalization"), clipping=clipping,
        clip_threshold=float(values["clip_threshold"]) if clipping and "clip_threshold" in values else None,
        learning_rate_scale=float(values.get("learning_rate_scale", 1.0)),
        recurrence=pick("recurrence"), cell=pick("cell"), forget_bias=pick("forget_bias"),
        direction=pick("direction"),
        recurrent_initializer=pick("recurrent_initializer"), optimizer=optimizer,
        optimizer_learning_rate=optimizer_rate, warmup_steps=int(values.get("warmup_steps", 0) or 0),
        output=pick("output"))
