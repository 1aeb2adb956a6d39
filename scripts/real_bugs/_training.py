"""Train a ported program with plain Keras and say what happened.

Nothing here uses gradadvisor: the label of a program is what its training does
(the loss becomes NaN, the task metric stays at chance, ...), measured the way a
user would see it.  The task metric is computed from the model's predictions on
its own training data, so programs with different losses compare on one scale:
accuracy over chance for classifiers, R^2 for regressions.
"""

from __future__ import annotations

import math
import time

import numpy as np

#: A classifier "learns" when it closes this share of the gap from chance to
#: perfect accuracy, and "fails" below FAIL; R^2 uses the same two thresholds.
LEARN = 0.25
FAIL = 0.10
#: A finite loss that ends this many times above where it started has diverged.
DIVERGED = 10.0


def chance_level(task: str, y) -> float:
    """Accuracy of always predicting the majority (R^2 of predicting the mean: 0)."""
    y = np.asarray(y)
    if task == "regression":
        return 0.0
    if task == "multiclass":
        return float(np.bincount(y.argmax(-1)).max() / len(y))
    positive = y.reshape(len(y), -1).mean(0)
    return float(np.maximum(positive, 1 - positive).mean())


def task_score(task: str, y, predictions) -> float:
    """Accuracy (classification) or R^2 (regression); NaN for non-finite predictions."""
    y = np.asarray(y, dtype="float64")
    predictions = np.asarray(predictions, dtype="float64")
    if not np.all(np.isfinite(predictions)):
        return math.nan
    if task == "regression":
        y = y.reshape(len(y), -1)
        predictions = predictions.reshape(len(y), -1)
        return float(1 - ((y - predictions) ** 2).mean() / y.var())
    if task == "multiclass":
        return float((predictions.argmax(-1) == y.argmax(-1)).mean())
    y = y.reshape(len(y), -1)
    return float(((predictions.reshape(len(y), -1) > 0.5) == (y > 0.5)).mean())


def learning_gain(task: str, score: float, chance: float) -> float:
    """How far above chance the score is, 0 at chance and 1 at perfect."""
    if math.isnan(score):
        return math.nan
    if task == "regression":
        return score
    return (score - chance) / (1 - chance) if chance < 1 else 0.0


def _loss(model, x, y, batch_size):
    value = model.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True)["loss"]
    return float(value)


def train(entry, *, fixed: bool, seed: int = 0) -> dict:
    """Train the program (or its fix) as the source does and measure the outcome.

    The data are streamed as a shuffled, repeated ``tf.data`` pipeline so a
    thousand tiny epochs cost one ``fit`` call; the number of steps equals the
    source's epochs times batches per epoch (or its step count).

    Returns:
        A dict: ``loss_before``, ``loss_after``, ``score``, ``chance``, ``gain``,
        ``outcome`` (``nonfinite``, ``diverged``, ``fails``, ``partial`` or
        ``learns``), ``steps``, ``batch_size``, ``seconds``.
    """
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    model = entry.build_fixed() if fixed else entry.build()
    x, y = (entry.data_fixed if fixed else entry.data)(seed)
    batch_size = min(entry.fixed_batch_size if fixed else entry.batch_size, len(x))
    epochs = entry.fixed_epochs if fixed else entry.epochs
    steps = entry.steps if epochs is None else int(round(math.ceil(len(x) / batch_size) * epochs))
    pipeline = (tf.data.Dataset.from_tensor_slices((x, y))
                .shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
                .batch(batch_size).repeat())
    evaluate_batch = max(batch_size, 256)
    loss_before = _loss(model, x, y, evaluate_batch)
    start = time.perf_counter()
    history = model.fit(pipeline, steps_per_epoch=steps, epochs=1, verbose=0,
                        callbacks=[keras.callbacks.TerminateOnNaN()])
    seconds = time.perf_counter() - start
    loss_after = _loss(model, x, y, evaluate_batch)
    predictions = model.predict(x, batch_size=evaluate_batch, verbose=0)
    chance = chance_level(entry.task, y)
    score = task_score(entry.task, y, predictions)
    gain = learning_gain(entry.task, score, chance)
    training_loss = history.history["loss"][-1]
    if not all(math.isfinite(v) for v in (loss_after, training_loss)) or math.isnan(score):
        outcome = "nonfinite"
    elif math.isfinite(loss_before) and loss_after > DIVERGED * max(loss_before, 1e-12):
        outcome = "diverged"
    elif gain >= LEARN:
        outcome = "learns"
    elif gain < FAIL:
        outcome = "fails"
    else:
        outcome = "partial"
    return {"loss_before": loss_before, "loss_after": loss_after, "score": score,
            "chance": chance, "gain": gain, "outcome": outcome, "steps": steps,
            "batch_size": batch_size, "seconds": round(seconds, 2)}


def judge(entry, buggy: dict, fixed: dict | None) -> tuple[bool, str]:
    """Whether the source's failure happens here, and what was observed, in words.

    A ``diverges`` program reproduces when its loss becomes non-finite or grows
    tenfold; a ``no_learning`` one when its task metric stays within 10% of the
    way from chance to perfect.  Either way the fix (when the source has one)
    must learn, or the failure is not the fault's doing.
    """
    failed = (buggy["outcome"] in ("nonfinite", "diverged") if entry.symptom == "diverges"
              else buggy["outcome"] in ("fails", "nonfinite", "diverged"))
    observed = f"faulty: {buggy['outcome']} ({_describe(entry, buggy)})"
    if fixed is not None:
        observed += f"; fix: {fixed['outcome']} ({_describe(entry, fixed)})"
    if not failed:
        return False, observed
    if fixed is not None and fixed["outcome"] != "learns":
        return False, observed + "; the fix does not learn either"
    return True, observed


def _describe(entry, run: dict) -> str:
    if math.isnan(run["score"]):
        return "non-finite predictions"
    if entry.task == "regression":
        return f"R^2 {run['score']:.2f}"
    return f"accuracy {run['score']:.2f}, chance {run['chance']:.2f}"
