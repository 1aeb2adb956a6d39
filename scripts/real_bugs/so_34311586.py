"""Stack Overflow 34311586: XOR with a one-unit softmax output and a tiny learning rate.

Source: DeepLocalize's benchmark, ``Benchmark/StackOverflow/34311586``;
https://stackoverflow.com/questions/34311586.

Fault (from the source's buggy and correct versions): a 2-2-3-1 sigmoid network for
XOR ends in ``Activation('softmax')`` on one unit (every prediction 1.0) and is
trained with ``SGD(lr=0.001, ...)``: the loss does not move. The correct version
uses a sigmoid output, ``lr=0.1`` and trains 10,000 epochs with batch size 4.

Porting: same layers (``uniform`` initialiser), MSE, ``SGD(momentum=0.9,
nesterov=True)`` with Keras 2's ``decay=1e-6`` as a schedule; the six rows are the
program's own; 20 epochs at the default batch size as in the source; the fix trains
10,000 epochs at batch size 4 as in the source.
"""

import numpy as np

from ._common import inverse_time_decay, stackoverflow_source

NAME = "so-34311586-xor-softmax"
SOURCE = stackoverflow_source(34311586)
CATEGORY = "output_config"
ACCEPTED = ("output_config", "no_learning_signal")
FAULT = "softmax over a single output unit (and a learning rate of 0.001)"
TASK = "binary"
SYMPTOM = "no_learning"
#: Whether DeepDiagnosis identified this program (ICSE 2022 artifact, Table 6).
DEEPDIAGNOSIS_IDENTIFIED = True
BATCH_SIZE = 32
EPOCHS = 20
FIXED_BATCH_SIZE = 4
FIXED_EPOCHS = 10000


def data(seed=0):
    x = np.array([[1, 1], [0, 0], [1, 0], [0, 1], [1, 1], [0, 0]], dtype="float32")
    y = np.array([[0], [0], [1], [1], [0], [0]], dtype="float32")
    return x, y


def _model(fixed):
    import keras
    from keras import layers

    model = keras.Sequential([
        keras.Input((2,)),
        layers.Dense(2, kernel_initializer="uniform"), layers.Activation("sigmoid"),
        layers.Dense(3, kernel_initializer="uniform"), layers.Activation("sigmoid"),
        layers.Dense(1, kernel_initializer="uniform"),
        layers.Activation("sigmoid" if fixed else "softmax"),
    ], name=NAME.replace("-", "_"))
    rate = 0.1 if fixed else 0.001
    model.compile(optimizer=keras.optimizers.SGD(inverse_time_decay(rate, 1e-6),
                                                 momentum=0.9, nesterov=True),
                  loss="mean_squared_error")
    return model


def build():
    return _model(fixed=False)


def build_fixed():
    return _model(fixed=True)
