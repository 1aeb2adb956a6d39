"""Stack Overflow 48934338: a small regression network diverges at SGD 0.1.

Source: DeepLocalize's benchmark, ``Benchmark/StackOverflow/48934338``;
https://stackoverflow.com/questions/48934338.

Fault (from the source's buggy and correct versions): a 1-50-30-1 ReLU network fits
``y = 5 x^2`` plus cubed Gaussian noise for x in [0, 5) with ``SGD(lr=0.1)`` and
MSE. The correct version lowers the learning rate to 0.001, so the source locates
the fault in the learning rate: the first updates are far too large for the unscaled
target (y up to 120), which in this port leaves the ReLU units dead and the
prediction constant (no NaN).

Porting: same layers (the second Dense layer with the ``uniform`` initialiser),
optimizer, loss, Keras' default batch size 32, and the program's own 50 points; 200
epochs instead of 1,000.
"""

import numpy as np

from ._common import stackoverflow_source

NAME = "so-48934338-regression-lr"
SOURCE = stackoverflow_source(48934338)
CATEGORY = "exploding_gradients"
ACCEPTED = ("exploding_gradients", "large_updates", "nonfinite", "dead_units")
FAULT = "learning rate 0.1 on an unscaled quadratic target: the fit collapses to a constant"
TASK = "regression"
SYMPTOM = "no_learning"
#: Whether DeepDiagnosis identified this program (ICSE 2022 artifact, Table 6).
DEEPDIAGNOSIS_IDENTIFIED = True
BATCH_SIZE = 32
EPOCHS = 200


def data(seed=0):
    rng = np.random.default_rng(seed)
    x = np.arange(0.0, 5.0, 0.1, dtype="float32").reshape(-1, 1)
    y = (5 * x ** 2 + rng.standard_normal((50, 1)) ** 3).astype("float32")
    return x, y


def _model(fixed):
    import keras
    from keras import layers

    model = keras.Sequential([
        keras.Input((1,)),
        layers.Dense(50), layers.Activation("relu"),
        layers.Dense(30, kernel_initializer="uniform"), layers.Activation("relu"),
        layers.Dense(1), layers.Activation("linear"),
    ], name=NAME.replace("-", "_"))
    model.compile(optimizer=keras.optimizers.SGD(0.001 if fixed else 0.1), loss="mse")
    return model


def build():
    return _model(fixed=False)


def build_fixed():
    return _model(fixed=True)
