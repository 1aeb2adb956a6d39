"""What the ported programs share: stand-in data, Keras 2 loss formulas, citations.

The programs were written for Keras 1/2 and load data from the internet or from
files their authors did not publish.  Nothing downloads here, so a program that
needs MNIST gets :func:`digits_784` (scikit-learn's bundled 8x8 digits, scaled up
to MNIST's 28x28 layout) and one that reads an unpublished CSV file gets a
deterministic synthetic set of the same shape and number of classes; each
module's docstring says which.

Keras 3 on TensorFlow trains ``binary_crossentropy`` / ``categorical_crossentropy``
through the logits cached on a final sigmoid/softmax.  Where that hides the
fault the original program had (a one-unit softmax, a sigmoid output under
categorical cross-entropy), the port uses :func:`binary_crossentropy_keras2` or
:func:`categorical_crossentropy_keras2`, the Keras 2.2 formulas on probabilities.
"""

from __future__ import annotations

import numpy as np

DEEPLOCALIZE = ("github.com/Wardat-ISU/DeepLocalize @ 297bc3441b5903b5c85bc5ffd7c9881a3c0c75a2, "
                "Benchmark/StackOverflow/{id}/ (buggy and correct versions); "
                "https://stackoverflow.com/questions/{id}")
AUTOTRAINER = ("github.com/shiningrain/AUTOTRAINER @ 03a463ea05691a73403d7cff99a368fb4b6720cf, "
               "{path}")

_EPSILON = 1e-7


def stackoverflow_source(question_id: int) -> str:
    """The citation of a Stack Overflow program from DeepLocalize's benchmark."""
    return DEEPLOCALIZE.format(id=question_id)


def binary_crossentropy_keras2(y_true, y_pred):
    """Keras 2.2's binary cross-entropy on probabilities (TensorFlow backend).

    Keras 2.2 clipped the probability to ``[1e-7, 1 - 1e-7]``, turned it back
    into a logit and applied ``sigmoid_cross_entropy_with_logits``.  The clip
    has a zero gradient outside its range, so an output stuck at exactly 1.0
    (a softmax over one unit) gives a constant loss and no gradient at all.
    """
    from keras import ops

    probability = ops.clip(y_pred, _EPSILON, 1.0 - _EPSILON)
    logits = ops.log(probability / (1.0 - probability))
    labels = ops.cast(y_true, logits.dtype)
    per_unit = ops.relu(logits) - logits * labels + ops.log1p(ops.exp(-ops.abs(logits)))
    return ops.mean(per_unit, axis=-1)


def categorical_crossentropy_keras2(y_true, y_pred):
    """Keras 2.2's categorical cross-entropy on probabilities (TensorFlow backend).

    The outputs are divided by their sum, clipped to ``[1e-7, 1 - 1e-7]`` and
    scored with ``-sum(y * log(p))``: sigmoid outputs are not trained as a
    softmax, as Keras 3 does when it finds the cached logits.
    """
    from keras import ops

    labels = ops.cast(y_true, y_pred.dtype)
    probability = y_pred / ops.sum(y_pred, axis=-1, keepdims=True)
    probability = ops.clip(probability, _EPSILON, 1.0 - _EPSILON)
    return -ops.sum(labels * ops.log(probability), axis=-1)


def digits_784(scale: float = 1.0):
    """scikit-learn's bundled digits laid out like flattened MNIST.

    Each 8x8 image (values 0-16) is enlarged 3x to 24x24, padded with zeros to
    28x28 and flattened to 784 features in ``[0, scale]``: the stand-in for
    ``mnist.load_data()`` (1,797 images instead of 60,000, ten classes).

    Args:
        scale: The value of a fully inked pixel (MNIST after ``/255`` is 1.0;
            raw MNIST is 255.0).

    Returns:
        ``(x, labels)``: float32 ``(1797, 784)`` and int ``(1797,)``.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.kron(digits.images, np.ones((3, 3)))
    images = np.pad(images, ((0, 0), (2, 2), (2, 2)))
    x = (images.reshape(len(images), 784) / 16.0 * scale).astype("float32")
    return x, digits.target.astype("int64")


def one_hot(labels, num_classes: int):
    """Labels as a float32 one-hot matrix (``keras.utils.to_categorical``)."""
    return np.eye(num_classes, dtype="float32")[np.asarray(labels, dtype="int64")]


def inverse_time_decay(learning_rate: float, decay: float):
    """Keras 2's optimizer ``decay=`` argument: ``lr / (1 + decay * iterations)``."""
    import keras

    return keras.optimizers.schedules.InverseTimeDecay(
        learning_rate, decay_steps=1, decay_rate=decay)
