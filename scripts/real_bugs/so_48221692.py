"""Stack Overflow 48221692: a sigmoid output for a regression target.

Source: DeepLocalize's benchmark, ``Benchmark/StackOverflow/48221692``;
https://stackoverflow.com/questions/48221692.

Fault (from the source's buggy and correct versions): a 1-5-1 network fits linear
data with a sigmoid output unit, which cannot exceed 1, under MSE and plain SGD. The
correct version makes the output ``linear``.

Porting: same layers (Dense 5 + sigmoid, Dense 1 + sigmoid), SGD at its default
rate, MSE, full-batch training (batch = all training rows), 1,000 epochs. The
program reads an unpublished ``Linear_Data.csv``: the stand-in is 200 rows of ``y =
3 x + 5`` plus N(0, 1) noise with x uniform in [0, 10].
"""

import numpy as np

from ._common import stackoverflow_source

NAME = "so-48221692-sigmoid-regression"
SOURCE = stackoverflow_source(48221692)
CATEGORY = "output_config"
ACCEPTED = ("output_config", "saturated_units")
FAULT = "sigmoid output unit for a regression target outside [0, 1]"
TASK = "regression"
SYMPTOM = "no_learning"
#: Whether DeepDiagnosis identified this program (ICSE 2022 artifact, Table 6).
DEEPDIAGNOSIS_IDENTIFIED = True
BATCH_SIZE = 150
EPOCHS = 1000


def data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 10.0, (150, 1)).astype("float32")
    y = (3.0 * x + 5.0 + rng.normal(0.0, 1.0, (150, 1))).astype("float32")
    return x, y


def _model(fixed):
    import keras
    from keras import layers

    model = keras.Sequential([
        keras.Input((1,)),
        layers.Dense(5), layers.Activation("sigmoid"),
        layers.Dense(1), layers.Activation("linear" if fixed else "sigmoid"),
    ], name=NAME.replace("-", "_"))
    model.compile(optimizer=keras.optimizers.SGD(), loss="mean_squared_error")
    return model


def build():
    return _model(fixed=False)


def build_fixed():
    return _model(fixed=True)
