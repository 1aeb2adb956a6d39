"""Label a benchmark entry by what happens when it trains, not by gradient thresholds.

A label here never reads a gradient.  It rests on outcomes that a person
training the model would see, measured with a plain ``tf.GradientTape`` loop
that shares no code with gradadvisor (TensorFlow and Keras only):

``exploding``
    The loss or the weights diverge (a non-finite loss or weight, the held-out
    loss ending above twice its start, or a layer's weight norm growing tenfold)
    while the same model at a 10x smaller learning rate, or the reference fix,
    learns.
``vanishing``
    The loss plateaus (ends above 0.9x the smaller of its start and chance)
    while the reference fix of the same architecture learns; for feed-forward
    models the first kernel layer must also barely move: its relative weight
    change under 0.1x that of the output layer.  Recurrent models are judged by
    the plateau and the reference alone (the recurrent kernel still moves with
    the gradient of the last timesteps, so movement cannot tell).
``dead_units``
    At the end of training, most ReLU-family units of the model (over all its
    hidden ReLU layers, fused or standalone) output zero on every one of 256
    training samples.
``saturation``
    At the end of training, a sigmoid or tanh layer has at least half its
    outputs within 1e-2 of an asymptote on those samples.
``healthy``
    The loss ends well below chance (at most 0.6x the chance-level loss and
    the starting loss), nothing diverged, under 30% of ReLU units dead and no
    layer 30% saturated.

The loss and the units are judged in inference mode, after every
BatchNormalization layer's moving statistics are recomputed on 256 training
samples under the weights reached (:func:`recalibrate_batch_norm`): averages
that lag a short run made models that learn look as if they had not.

Anything else is ``ambiguous`` and the entry is left out of the scores.  The
faults are checked in that order (a diverging model also kills units; dead
units also stall the loss).

The *reference fix* is what a practitioner would try first on the same
architecture: every sigmoid/tanh hidden activation becomes ReLU with He-normal
initial kernels and zero biases, every recurrent layer becomes an LSTM with
Keras' defaults, fresh weights, and Adam (1e-3; 1e-2 for recurrent models, as
the zoo's healthy recurrent controls use).  An entry may supply its own
(``Entry.reference``): third-party sabotaged models use their healthy build.
Reference and 10x-smaller-rate runs happen only when a verdict needs them.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import time

import numpy as np

#: The version of the criteria; cached labels with another version are recomputed.
LABELLER_VERSION = 1

LEARNED_RATIO = 0.6
PLATEAU_RATIO = 0.9
DIVERGED_LOSS_RATIO = 2.0
DIVERGED_WEIGHT_GROWTH = 10.0
FROZEN_MOVEMENT_RATIO = 0.1
DEAD_FRACTION = 0.5
SATURATED_FRACTION = 0.5
HEALTHY_LIMIT = 0.3
NUM_OBSERVED = 256
NUM_EVALUATED = 512

RELU_FAMILY = ("relu", "relu6", "leaky_relu")
SATURATING = ("sigmoid", "tanh", "hard_sigmoid")
NORMALIZATION = ("BatchNormalization", "LayerNormalization", "GroupNormalization")


def _keras():
    import tensorflow as tf
    import keras

    return tf, keras


# --------------------------------------------------------------------------
# Plain training run


def chance_loss(loss_name: str, y) -> float:
    """The loss of always predicting the label distribution (nats, or the variance for MSE)."""
    y = np.asarray(y)
    if "crossentropy" in loss_name:
        labels = y.argmax(-1) if (y.ndim >= 2 and y.shape[-1] > 1) else y.ravel()
        _, counts = np.unique(labels.astype("int64"), return_counts=True)
        priors = counts / counts.sum()
        return float(-(priors * np.log(priors)).sum())
    return float(np.var(y.astype("float64")))


def _loss_name(model) -> str:
    loss = model.loss
    if isinstance(loss, str):
        return loss
    return getattr(loss, "name", None) or getattr(loss, "__name__", "loss")


def _activation_name(layer) -> str | None:
    """The activation a layer applies to its output, fused or standalone."""
    kind = type(layer).__name__
    if kind == "ReLU":
        return "relu"
    if kind == "LeakyReLU":
        return "leaky_relu"
    activation = getattr(layer, "activation", None)
    if activation is None:
        return None
    return getattr(activation, "__name__", str(activation))


def _kernel_layers(model, keras):
    """Layers with a kernel-like weight (kernel or embeddings), normalization excluded."""
    found = []
    for layer in model.layers:
        if type(layer).__name__ in NORMALIZATION or not layer.trainable_weights:
            continue
        kernels = [v for v in layer.trainable_weights
                   if v.path.rsplit("/", 1)[-1] in ("kernel", "embeddings", "depthwise_kernel")]
        if kernels:
            found.append((layer, kernels))
    return found


def train(model, data, *, steps: int, batch_size: int, seed: int = 0,
          learning_rate_scale: float = 1.0, optimizer=None) -> dict:
    """Train a copy of ``model`` with a plain GradientTape loop and report outcomes.

    Args:
        model: A compiled Keras model (left untouched).
        data: A ``zoo.Dataset``.
        steps, batch_size, seed: The run.
        learning_rate_scale: Multiplies the optimizer's learning rate.
        optimizer: Replaces the model's optimizer (a fresh Keras optimizer).

    Returns:
        Plain data: the held-out-free training loss before and after (on up to
        512 fixed training samples), chance, divergence, per-layer relative
        weight change and norm growth, dead and saturated fractions at the end.
    """
    tf, keras = _keras()
    started = time.perf_counter()
    keras.utils.set_random_seed(seed)
    work = keras.models.clone_model(model)
    work.set_weights(model.get_weights())
    if optimizer is None:
        config = model.optimizer.get_config()
        config["learning_rate"] = float(np.asarray(model.optimizer.learning_rate)) * learning_rate_scale
        optimizer = model.optimizer.__class__.from_config(config)
    loss_name = _loss_name(model)
    loss_function = keras.losses.get(model.loss) if isinstance(model.loss, str) else model.loss
    variables = work.trainable_variables
    optimizer.build(variables)
    needs_column = loss_name == "binary_crossentropy" and np.asarray(data.y_train).ndim == 1

    def target(y):
        return tf.reshape(tf.cast(y, "float32"), (-1, 1)) if needs_column else y

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(loss_function(target(y), work(x, training=True)))
        grads = tape.gradient(loss, variables)
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
        return loss

    @tf.function
    def evaluate(x, y):
        return tf.reduce_mean(loss_function(target(y), work(x, training=False)))

    rng = np.random.default_rng(seed)
    x_train, y_train = data.x_train, data.y_train
    num_train = len(x_train)
    batch_size = min(batch_size, num_train)
    fixed = rng.permutation(num_train)[:NUM_EVALUATED]

    def evaluated_loss():
        recalibrate_batch_norm(work, x_train[fixed[:NUM_OBSERVED]], keras)
        values = [float(evaluate(tf.constant(x_train[fixed[i:i + 128]]),
                                 tf.constant(y_train[fixed[i:i + 128]])))
                  for i in range(0, len(fixed), 128)]
        return float(np.mean(values))

    kernel_layers = _kernel_layers(work, keras)
    before = {layer.name: [v.numpy().copy() for v in kernels] for layer, kernels in kernel_layers}
    initial = evaluated_loss()
    losses, nonfinite_step = [], None
    order = rng.permutation(num_train)
    position = 0
    for number in range(steps):
        if position + batch_size > num_train:
            order, position = rng.permutation(num_train), 0
        index = order[position:position + batch_size]
        position += batch_size
        loss = float(step(tf.constant(x_train[index]), tf.constant(y_train[index])))
        losses.append(loss)
        if not math.isfinite(loss):
            nonfinite_step = number
            break
    final = evaluated_loss()
    movement, growth, nonfinite_weights = {}, {}, False
    for layer, kernels in kernel_layers:
        old = np.concatenate([w.ravel() for w in before[layer.name]]).astype("float64")
        new = np.concatenate([v.numpy().ravel() for v in kernels]).astype("float64")
        if not np.all(np.isfinite(new)):
            nonfinite_weights = True
            movement[layer.name], growth[layer.name] = math.inf, math.inf
            continue
        old_norm = float(np.linalg.norm(old))
        movement[layer.name] = float(np.linalg.norm(new - old) / old_norm) if old_norm > 0 else math.inf
        growth[layer.name] = float(np.linalg.norm(new) / old_norm) if old_norm > 0 else math.inf
    units = {} if nonfinite_step is not None or nonfinite_weights else _unit_outcomes(work, x_train, rng, keras)
    chance = chance_loss(loss_name, y_train)
    kernel_names = [layer.name for layer, _ in kernel_layers]
    first = next((layer.name for layer, _ in kernel_layers
                  if type(layer).__name__ != "Embedding"), kernel_names[0] if kernel_names else None)
    last = kernel_names[-1] if kernel_names else None
    first_move, last_move = movement.get(first, math.nan), movement.get(last, math.nan)
    return {
        "steps": len(losses), "batch_size": batch_size,
        "learning_rate": float(np.asarray(optimizer.learning_rate)),
        "optimizer": type(optimizer).__name__, "loss_name": loss_name,
        "initial_loss": initial, "final_loss": final, "chance_loss": chance,
        "max_step_loss": float(np.nanmax(losses)) if losses else math.nan,
        "nonfinite_step": nonfinite_step, "nonfinite_weights": nonfinite_weights,
        "first_layer": first, "last_layer": last,
        "movement_ratio": (first_move / last_move if last_move and math.isfinite(first_move)
                           and math.isfinite(last_move) else math.nan),
        "relative_weight_change": movement, "weight_norm_growth": growth,
        "recurrent": any(isinstance(layer, keras.layers.RNN) or type(layer).__name__ == "Bidirectional"
                         for layer in work.layers),
        **units, "seconds": round(time.perf_counter() - started, 2),
    }


def recalibrate_batch_norm(work, x, keras) -> int:
    """Set every BatchNormalization layer's moving statistics to those of ``x`` under the current weights.

    The loss and the units are judged in inference mode, where batch normalization reads its
    moving averages. After a few hundred steps those still hold mostly their initial values
    (keras.applications' MobileNets average with momentum 0.999: 86% of the start is left
    after 150 steps), so a model that learns in training mode looks, in inference mode, as if
    it had not learned or had lost its units. Recomputing the statistics on a batch of
    training samples (what "precise BN" does before evaluating) judges the weights the run
    reached. Models without batch normalization are untouched. Returns how many layers were
    recalibrated.

    ``gradadvisor.search.data.recalibrate_batch_norm`` does the same for the search's trials;
    it is not called here because the labels must not depend on the code they grade.
    """
    norms = [layer for layer in _all_layers(work) if isinstance(layer, keras.layers.BatchNormalization)]
    if not norms:
        return 0
    momentums = [layer.momentum for layer in norms]
    try:
        for layer in norms:
            layer.momentum = 0.0  # the moving statistics become exactly this batch's
        work(x, training=True)
    finally:
        for layer, momentum in zip(norms, momentums):
            layer.momentum = momentum
    return len(norms)


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def _unit_outcomes(work, x_train, rng, keras) -> dict:
    """Dead and saturated units measured on the outputs of activation layers."""
    watched = []
    for layer in work.layers:
        name = _activation_name(layer)
        if layer is work.layers[-1] or name is None:
            continue
        if name in RELU_FAMILY or name in SATURATING:
            if isinstance(layer, keras.layers.RNN):
                continue
            try:
                watched.append((layer, name, layer.output))
            except (AttributeError, ValueError):  # a layer used twice has no single output
                continue
    if not watched:
        return {"dead_fraction": 0.0, "dead_by_layer": {}, "saturated_by_layer": {},
                "max_saturated_fraction": 0.0}
    observer = keras.Model(work.inputs, [output for _, _, output in watched])
    sample = x_train[rng.permutation(len(x_train))[:NUM_OBSERVED]]
    alive = [None] * len(watched)
    saturated = [[0, 0] for _ in watched]
    for start in range(0, len(sample), 64):
        outputs = observer(sample[start:start + 64], training=False)
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        for i, ((_, name, _), out) in enumerate(zip(watched, outputs)):
            out = np.asarray(out, dtype="float64")
            if name in RELU_FAMILY:
                active = (np.abs(out.reshape(-1, out.shape[-1])) > 0).any(axis=0)
                alive[i] = active if alive[i] is None else (alive[i] | active)
            else:
                low, high = (-1.0, 1.0) if name == "tanh" else (0.0, 1.0)
                saturated[i][0] += int(np.sum((out < low + 1e-2) | (out > high - 1e-2)))
                saturated[i][1] += out.size
    dead_by_layer, saturated_by_layer = {}, {}
    dead_units = total_units = 0
    for i, (layer, name, _) in enumerate(watched):
        if name in RELU_FAMILY:
            dead_by_layer[layer.name] = float(1.0 - alive[i].mean())
            dead_units += int((~alive[i]).sum())
            total_units += alive[i].size
        else:
            saturated_by_layer[layer.name] = saturated[i][0] / max(saturated[i][1], 1)
    return {"dead_fraction": dead_units / total_units if total_units else 0.0,
            "dead_by_layer": dead_by_layer, "saturated_by_layer": saturated_by_layer,
            "max_saturated_fraction": max(saturated_by_layer.values(), default=0.0)}


# --------------------------------------------------------------------------
# Verdict


def learned(run: dict) -> bool:
    """The loss ended well below chance (and below its start)."""
    final = run["final_loss"]
    return (diverged(run) is None and math.isfinite(final)
            and final <= LEARNED_RATIO * min(run["chance_loss"], run["initial_loss"]))


def diverged(run: dict) -> str | None:
    """Why the run diverged, or None."""
    if run["nonfinite_step"] is not None:
        return f"non-finite loss at step {run['nonfinite_step']}"
    if run["nonfinite_weights"] or not math.isfinite(run["final_loss"]):
        return "non-finite weights"
    if run["final_loss"] > DIVERGED_LOSS_RATIO * run["initial_loss"]:
        return f"loss rose from {run['initial_loss']:.3g} to {run['final_loss']:.3g}"
    growth = max(run["weight_norm_growth"].values(), default=0.0)
    if growth > DIVERGED_WEIGHT_GROWTH:
        return f"a layer's weight norm grew {growth:.3g}x"
    return None


def plateaued(run: dict) -> bool:
    return (diverged(run) is None
            and run["final_loss"] >= PLATEAU_RATIO * min(run["initial_loss"], run["chance_loss"]))


def reference_model(model, seed: int):
    """The first fix a practitioner tries, on the same architecture (see the module doc)."""
    _, keras = _keras()
    recurrent = [False]
    counter = [0]

    def rewrite(layer):
        config = layer.get_config()
        kind = type(layer).__name__
        counter[0] += 1
        if kind in ("SimpleRNN", "GRU", "LSTM"):
            recurrent[0] = True
            return keras.layers.LSTM(config["units"], return_sequences=config.get("return_sequences", False),
                                     name=config["name"])
        if kind == "Activation" and config.get("activation") in SATURATING:
            config["activation"] = "relu"
        elif kind != "Activation" and "activation" in config and layer is not model.layers[-1]:
            if config["activation"] in SATURATING:
                config["activation"] = "relu"
            for key in ("kernel_initializer", "depthwise_initializer"):
                if key in config:
                    config[key] = {"class_name": "HeNormal", "config": {"seed": seed + counter[0]}}
            if "bias_initializer" in config:
                config["bias_initializer"] = "zeros"
        return layer.__class__.from_config(config)

    keras.utils.set_random_seed(seed)
    fixed = keras.models.clone_model(model, clone_function=rewrite)
    optimizer = keras.optimizers.Adam(1e-2 if recurrent[0] else 1e-3)
    fixed.compile(optimizer=optimizer, loss=model.loss)
    return fixed


def label(entry, seed: int = 0, steps: int | None = None) -> dict:
    """Train ``entry`` (and, when needed, its controls) and return the outcome label.

    Returns:
        ``{"label", "reasons", "runs": {"as_built", ["lower_lr"], ["reference"]}, "seconds"}``.
    """
    _, keras = _keras()
    started = time.perf_counter()
    keras.backend.clear_session()
    model, data = entry.build(seed)
    steps = steps or entry.steps
    options = {"steps": steps, "batch_size": entry.batch_size, "seed": seed}
    runs = {"as_built": train(model, data, **options)}
    base = runs["as_built"]

    def reference_run():
        if "reference" not in runs:
            builder = getattr(entry, "reference", None)
            if builder is not None:
                keras.utils.set_random_seed(seed)
                fixed, fixed_data = builder(seed)
            else:
                fixed, fixed_data = reference_model(model, seed), data
            runs["reference"] = train(fixed, fixed_data, **options)
        return runs["reference"]

    def verdict(name, reasons):
        return {"label": name, "reasons": reasons, "runs": runs,
                "seconds": round(time.perf_counter() - started, 2)}

    why = diverged(base)
    if why:
        runs["lower_lr"] = train(model, data, learning_rate_scale=0.1, **options)
        if learned(runs["lower_lr"]):
            return verdict("exploding", [why, "the same model at a 10x smaller learning rate learns"])
        if learned(reference_run()):
            return verdict("exploding", [why, "the reference fix learns"])
        return verdict("ambiguous", [why, "neither a 10x smaller learning rate nor the reference fix learns"])
    if base.get("dead_fraction", 0.0) >= DEAD_FRACTION:
        return verdict("dead_units", [f"{base['dead_fraction']:.0%} of the ReLU units output zero on "
                                      f"every one of {NUM_OBSERVED} samples"])
    if plateaued(base):
        frozen = base["recurrent"] or (math.isfinite(base["movement_ratio"])
                                       and base["movement_ratio"] < FROZEN_MOVEMENT_RATIO)
        if frozen and learned(reference_run()):
            reasons = [f"loss stayed at {base['final_loss']:.3g} (start {base['initial_loss']:.3g}, "
                       f"chance {base['chance_loss']:.3g})", "the reference fix learns"]
            if not base["recurrent"]:
                reasons.append(f"{base['first_layer']} moved {base['movement_ratio']:.2g}x as much as "
                               f"{base['last_layer']}")
            return verdict("vanishing", reasons)
    if base.get("max_saturated_fraction", 0.0) >= SATURATED_FRACTION:
        worst = max(base["saturated_by_layer"], key=base["saturated_by_layer"].get)
        return verdict("saturation", [f"{base['max_saturated_fraction']:.0%} of {worst}'s outputs within "
                                      "1e-2 of an asymptote"])
    if (learned(base) and base.get("dead_fraction", 0.0) < HEALTHY_LIMIT
            and base.get("max_saturated_fraction", 0.0) < HEALTHY_LIMIT):
        return verdict("healthy", [f"loss fell from {base['initial_loss']:.3g} to {base['final_loss']:.3g} "
                                   f"(chance {base['chance_loss']:.3g})"])
    reasons = [f"loss {base['initial_loss']:.3g} -> {base['final_loss']:.3g} (chance {base['chance_loss']:.3g})",
               f"dead {base.get('dead_fraction', 0.0):.0%}, max saturated "
               f"{base.get('max_saturated_fraction', 0.0):.0%}, first/last movement "
               f"{base['movement_ratio']:.2g}"]
    if "reference" in runs:
        reasons.append("the reference fix " + ("learns" if learned(runs["reference"]) else "does not learn"))
    return verdict("ambiguous", reasons)


def fingerprint(entry) -> str:
    """Changes when the entry's recipe changes (its builder's source and settings)."""
    parts = [entry.name, entry.label, str(entry.steps), str(entry.batch_size), str(LABELLER_VERSION)]
    for function in (entry.builder, getattr(entry, "reference", None)):
        if function is None:
            continue
        try:
            parts.append(inspect.getsource(function))
        except (OSError, TypeError):
            parts.append(getattr(function, "__qualname__", repr(function)))
        closure = getattr(function, "__closure__", None) or ()
        for cell in closure:
            try:
                value = cell.cell_contents
            except ValueError:
                continue
            parts.append(repr(value) if not callable(value) else getattr(value, "__qualname__", ""))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
