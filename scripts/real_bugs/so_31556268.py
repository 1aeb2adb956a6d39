"""Stack Overflow 31556268: XOR with sigmoid units, mean absolute error and slow SGD.

Source: DeepLocalize's benchmark, ``Benchmark/StackOverflow/31556268``;
https://stackoverflow.com/questions/31556268 (also a DeepFD subject).

Fault (from the source's buggy and correct versions): a 2-4-1 sigmoid network
trained on XOR with ``mean_absolute_error`` and ``SGD(lr=0.05, decay=1e-6,
momentum=0.11, nesterov=True)`` for 1,000 epochs. The correct version keeps the
network and trains it with ``mse`` and Adam (10,000 epochs).

Porting: same layers, Glorot-uniform initialisers, optimizer (Keras 2's ``decay`` as
an ``InverseTimeDecay`` schedule), loss, batch size 4 and 1,000 epochs; the four XOR
rows are the program's own. The fix is trained for 3,000 epochs instead of 10,000 to
keep the run short.
"""

import numpy as np

from ._common import inverse_time_decay, stackoverflow_source

NAME = "so-31556268-xor-mae-sgd"
SOURCE = stackoverflow_source(31556268)
CATEGORY = "slow_updates"
ACCEPTED = ("slow_updates", "vanishing_gradients", "saturated_units", "no_learning_signal")
FAULT = "sigmoid network with mean absolute error and a small SGD step never leaves the plateau"
TASK = "binary"
SYMPTOM = "no_learning"
#: Whether DeepDiagnosis identified this program (ICSE 2022 artifact, Table 6).
DEEPDIAGNOSIS_IDENTIFIED = True
BATCH_SIZE = 4
EPOCHS = 1000
FIXED_EPOCHS = 3000


def data(seed=0):
    x = np.array([[1, 1], [1, 0], [0, 0], [0, 1]], dtype="float32")
    y = np.array([[0], [1], [0], [1]], dtype="float32")
    return x, y


def _model(fixed):
    import keras
    from keras import layers

    model = keras.Sequential([
        keras.Input((2,)),
        layers.Dense(4, kernel_initializer="glorot_uniform"), layers.Activation("sigmoid"),
        layers.Dense(1, kernel_initializer="glorot_uniform"), layers.Activation("sigmoid"),
    ], name=NAME.replace("-", "_"))
    if fixed:
        model.compile(optimizer="adam", loss="mse", metrics=["accuracy"])
    else:
        model.compile(optimizer=keras.optimizers.SGD(inverse_time_decay(0.05, 1e-6),
                                                     momentum=0.11, nesterov=True),
                      loss="mean_absolute_error", metrics=["accuracy"])
    return model


def build():
    return _model(fixed=False)


def build_fixed():
    return _model(fixed=True)
