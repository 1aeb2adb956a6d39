"""AUTOTRAINER's dying-ReLU motivating example: 34 ReLU layers on MNIST.

Source: AUTOTRAINER (ICSE 2021) artifact, ``Motivation/DyingReLU/`` (``train.py``
and ``minist_relu_layer=34.h5``).

Fault (from the source): a 784-input MLP of 34 ``Dense(128)`` +
``Activation('relu')`` blocks (Glorot-uniform kernels, zero biases) and a softmax
output, trained with Adam, batch size 32 and categorical cross-entropy. The
artifact's README reports that the dying-ReLU problem occurs in about 50% of the
runs (the rest train normally). AUTOTRAINER's first repair strategy for dying ReLU
replaces the activations by SELU (``selu_1``).

Porting: the architecture and optimizer were read from the artifact's saved model.
MNIST is replaced by :func:`_common.digits_784` (1,797 images); 5 epochs instead of
50. The fix applies AUTOTRAINER's ``selu_1`` strategy; the source ships no fixed
model.
"""

from ._common import AUTOTRAINER, digits_784, one_hot

NAME = "autotrainer-dying-relu-34"
SOURCE = AUTOTRAINER.format(path="Motivation/DyingReLU/")
CATEGORY = "dead_units"
ACCEPTED = ("dead_units", "vanishing_gradients", "no_learning_signal")
FAULT = "34 stacked ReLU layers: most units die early in training (about half the runs)"
TASK = "multiclass"
SYMPTOM = "no_learning"
BATCH_SIZE = 32
EPOCHS = 5


def data(seed=0):
    x, labels = digits_784()
    return x, one_hot(labels, 10)


def _model(fixed):
    import keras
    from keras import layers

    stack = [keras.Input((784,))]
    for _ in range(34):
        stack += [layers.Dense(128), layers.Activation("selu" if fixed else "relu")]
    stack.append(layers.Dense(10, activation="softmax"))
    model = keras.Sequential(stack, name=NAME.replace("-", "_"))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def build():
    return _model(fixed=False)


def build_fixed():
    return _model(fixed=True)
