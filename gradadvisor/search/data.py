"""Data: the seeded held-out split every candidate shares, and a model's held-out loss."""

from __future__ import annotations

import numpy as np

from .._tf import import_keras
from ..errors import UsageError
from ..loading import Data, synthetic_data


def split_data(data: Data | None, model, seed: int, fraction: float = 0.2):
    """``(train, validation)``: a seeded held-out split of the data.

    A ``tf.data.Dataset`` is read into arrays first (at most 4096 samples),
    because every candidate must see exactly the same batches.
    """
    if data is None:
        data = synthetic_data(model, num_samples=1024, seed=seed)
    if data.dataset is not None:
        data = _materialise(data, model)
    n = data.num_samples
    if n < 10:
        raise UsageError(f"The search needs at least 10 samples to hold some out; the data has {n}.")
    order = np.random.default_rng(seed).permutation(n)
    held = max(2, min(int(round(n * fraction)), 2048))
    val_index, train_index = order[:held], order[held:]

    def take(index):
        ys = data.y if isinstance(data.y, list) else [data.y]
        y = [t[index] for t in ys]
        return Data([a[index] for a in data.x], y[0] if len(y) == 1 else y, data.source)

    return take(train_index), take(val_index)


def _materialise(data: Data, model, limit: int = 4096) -> Data:
    xs, ys, count = [], [], 0
    names = [getattr(t, "name", "") for t in model.inputs]
    for element in data.dataset:
        x, y = element[0], element[1]
        if isinstance(x, dict):
            x = [x[name] for name in names]
        x = [np.asarray(a) for a in (x if isinstance(x, (list, tuple)) else [x])]
        xs.append(x)
        ys.append(np.asarray(y))
        count += len(ys[-1])
        if count >= limit:
            break
    x = [np.concatenate([batch[i] for batch in xs])[:limit] for i in range(len(xs[0]))]
    return Data(x, np.concatenate(ys)[:limit], data.source)


#: Training samples (at most) whose batch statistics become BatchNormalization's
#: moving statistics before a held-out measurement, in batches of this size.
CALIBRATION_SAMPLES = 512
CALIBRATION_BATCH = 128


def recalibrate_batch_norm(model, data: Data) -> bool:
    """Set every BatchNormalization layer's moving statistics to the average of
    its batch statistics over up to :data:`CALIBRATION_SAMPLES` training samples.

    A run of a few dozen steps leaves moving averages (momentum 0.99, 0.999 in
    keras.applications' MobileNetV2) almost at their initial values, so
    inference-mode predictions would not show what the trained weights do: a
    model whose training loss fell from 2.3 to 0.8 in 80 steps still scored
    chance on held-out data.  Re-estimating the statistics first, as precise
    BatchNorm does (Wu and Johnson, "Rethinking 'Batch' in BatchNorm", 2021),
    measures the weights instead.  Weights are unchanged; only the moving
    statistics of ``model`` (a working copy) are replaced.

    Returns:
        Whether the model had BatchNormalization layers.
    """
    from ..probe import leaf_layers

    tf, keras = import_keras()
    layers = [layer for _, layer in leaf_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    if not layers:
        return False
    momenta = [layer.momentum for layer in layers]
    count = min(data.num_samples, CALIBRATION_SAMPLES)
    try:
        for index, start in enumerate(range(0, count, CALIBRATION_BATCH)):
            # A running mean over batches: the k-th batch gets weight 1/k.
            for layer in layers:
                layer.momentum = index / (index + 1)
            batch = [tf.convert_to_tensor(a[start:min(start + CALIBRATION_BATCH, count)]) for a in data.x]
            model(batch[0] if len(batch) == 1 else batch, training=True)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    return True


def held_out(model, loss_fn, data: Data, kind: str, calibration: Data | None = None) -> tuple:
    """``(loss, accuracy or None)`` of ``model`` on held-out data, in inference mode.

    With ``calibration`` (training data), BatchNormalization statistics are
    re-estimated on it first (see :func:`recalibrate_batch_norm`).
    """
    tf, _ = import_keras()
    if calibration is not None:
        recalibrate_batch_norm(model, calibration)
    predictions = []
    for start in range(0, data.num_samples, 512):
        batch = [tf.convert_to_tensor(a[start:start + 512]) for a in data.x]
        predictions.append(model(batch[0] if len(batch) == 1 else batch, training=False))
    if isinstance(predictions[0], (list, tuple)):
        return float("nan"), None
    prediction = tf.concat(predictions, 0)
    loss = float(loss_fn(tf.convert_to_tensor(data.y), prediction))
    predicted = prediction.numpy()
    y = np.asarray(data.y)
    accuracy = None
    if kind == "sparse":
        accuracy = float(np.mean(np.argmax(predicted, -1) == y.reshape(len(y), -1)[:, 0]))
    elif kind == "categorical":
        accuracy = float(np.mean(np.argmax(predicted, -1) == np.argmax(y, -1)))
    elif kind == "binary":
        accuracy = float(np.mean((predicted.reshape(y.shape) > 0.5) == (y > 0.5)))
    return loss, accuracy


def chance_loss(y, loss_name: str, kind: str) -> float | None:
    """The loss of always predicting the label distribution, for a cross-entropy classifier.

    For sparse and one-hot labels it is the entropy of the class priors; for
    binary labels the mean over outputs of the Bernoulli entropy of each
    output's positive rate.  Other losses (hinge, regression losses, several
    outputs) have no chance level here: None.

    Args:
        y: The training labels.
        loss_name: The loss's name (it must be a cross-entropy).
        kind: ``sparse``, ``categorical``, ``binary`` or ``regression``.
    """
    if y is None or isinstance(y, list) or "crossentropy" not in loss_name.lower().replace("_", ""):
        return None
    y = np.asarray(y)
    if kind == "sparse":
        _, counts = np.unique(y.reshape(len(y), -1)[:, 0], return_counts=True)
        priors = counts / counts.sum()
    elif kind == "categorical":
        priors = y.reshape(-1, y.shape[-1]).astype("float64").mean(axis=0)
        priors = priors[priors > 0] / priors.sum()
    elif kind == "binary":
        rate = np.clip(y.reshape(len(y), -1).astype("float64").mean(axis=0), 1e-7, 1 - 1e-7)
        return float(np.mean(-(rate * np.log(rate) + (1 - rate) * np.log(1 - rate))))
    else:
        return None
    return float(-(priors * np.log(priors)).sum())
