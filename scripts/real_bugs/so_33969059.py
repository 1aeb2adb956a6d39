"""Stack Overflow 33969059: a regression network ending in a one-unit softmax.

Source: DeepLocalize's benchmark, ``Benchmark/StackOverflow/33969059``;
https://stackoverflow.com/questions/33969059.

Fault (from the source's buggy and correct versions): a linear function ``y = 2 x1 +
x2 + 0.5 x3 + 2.2`` is fitted by a 3-2-1 tanh network whose last layer is
``Activation('softmax')`` on one unit, so every prediction is 1.0 and the mean
squared error cannot fall. The correct version makes the output ``linear``.

Porting: same layers (``uniform`` initialiser = RandomUniform(-0.05, 0.05), tanh,
Dropout 0.5), ``SGD(lr=0.1, decay=1e-6, momentum=0.9, nesterov=True)`` with the
decay as a schedule, MSE, Keras' default batch size 32. The data come from the
program's own generator (inputs uniform in [0, 10000)); 5,000 training rows instead
of 100,000 and 5 epochs instead of 20.
"""

import numpy as np

from ._common import inverse_time_decay, stackoverflow_source

NAME = "so-33969059-softmax-regression"
SOURCE = stackoverflow_source(33969059)
CATEGORY = "output_config"
ACCEPTED = ("output_config", "no_learning_signal")
FAULT = "softmax over a single output unit in a regression network"
TASK = "regression"
SYMPTOM = "no_learning"
#: Whether DeepDiagnosis identified this program (ICSE 2022 artifact, Table 6).
DEEPDIAGNOSIS_IDENTIFIED = True
BATCH_SIZE = 32
EPOCHS = 5


def data(seed=0):
    rng = np.random.default_rng(seed)
    x = (10000 * rng.random((5000, 3))).astype("float32")
    y = (x @ np.array([2.0, 1.0, 0.5]) + 2.2).astype("float32").reshape(-1, 1)
    return x, y


def _model(fixed):
    import keras
    from keras import layers

    model = keras.Sequential([
        keras.Input((3,)),
        layers.Dense(3, kernel_initializer="uniform"), layers.Activation("tanh"),
        layers.Dropout(0.5),
        layers.Dense(2, kernel_initializer="uniform"), layers.Activation("tanh"),
        layers.Dropout(0.5),
        layers.Dense(1, kernel_initializer="uniform"),
        layers.Activation("linear" if fixed else "softmax"),
    ], name=NAME.replace("-", "_"))
    model.compile(optimizer=keras.optimizers.SGD(inverse_time_decay(0.1, 1e-6),
                                                 momentum=0.9, nesterov=True),
                  loss="mean_squared_error")
    return model


def build():
    return _model(fixed=False)


def build_fixed():
    return _model(fixed=True)
