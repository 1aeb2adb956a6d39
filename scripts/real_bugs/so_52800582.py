"""Stack Overflow 52800582: fitting y = x^4 on raw inputs through a sigmoid layer.

Source: DeepLocalize's benchmark, ``Benchmark/StackOverflow/52800582``;
https://stackoverflow.com/questions/52800582.

Fault (from the source's buggy and correct versions): a 1-50-50-1 network (sigmoid,
then ELU) fits ``y = x^4`` for x in [-100, 100) with Adam and MSE on unscaled inputs
and targets, so the first layer's sigmoid units sit in saturation. The correct
version standardises x and y and replaces the sigmoid with a ReLU.

Porting: same layers, Adam, MSE, full batch (400 rows, the program's own data),
1,000 epochs; the fix trains 1,000 epochs instead of the source's 100 x 1,000.
"""

import numpy as np

from ._common import stackoverflow_source

NAME = "so-52800582-unscaled-sigmoid"
SOURCE = stackoverflow_source(52800582)
CATEGORY = "saturated_units"
ACCEPTED = ("saturated_units", "vanishing_gradients")
FAULT = "unscaled inputs (|x| up to 100) saturate the first sigmoid layer"
TASK = "regression"
SYMPTOM = "no_learning"
#: Whether DeepDiagnosis identified this program (ICSE 2022 artifact, Table 6).
DEEPDIAGNOSIS_IDENTIFIED = True
BATCH_SIZE = 400
EPOCHS = 1000


def data(seed=0):
    x = np.arange(-100, 100, 0.5, dtype="float32").reshape(-1, 1)
    return x, (x ** 4).astype("float32")


def data_fixed(seed=0):
    x, y = data(seed)
    def standard(values):
        return ((values - values.mean()) / values.std()).astype("float32")

    return standard(x), standard(y)


def _model(fixed):
    import keras
    from keras import layers

    model = keras.Sequential([
        keras.Input((1,)),
        layers.Dense(50), layers.Activation("relu" if fixed else "sigmoid"),
        layers.Dense(50), layers.Activation("elu"),
        layers.Dense(1),
    ], name=NAME.replace("-", "_"))
    model.compile(optimizer="adam", loss="mse")
    return model


def build():
    return _model(fixed=False)


def build_fixed():
    return _model(fixed=True)
