"""Stack Overflow 45442843: one feature, a one-unit softmax output and mean absolute error.

Source: DeepLocalize's benchmark, ``Benchmark/StackOverflow/45442843``;
https://stackoverflow.com/questions/45442843.

Fault (from the source's buggy and correct versions): a binary classifier on one raw
feature ends in ``Dense(1, init='normal')`` + ``Activation('softmax')`` and is
trained with ``mean_absolute_error`` and RMSprop. The correct version standardises
the feature and ends in a sigmoid under ``binary_crossentropy``.

Porting: same layers (Dense 1 + sigmoid, Dense 1 with RandomNormal(0, 0.05)),
RMSprop, batch size 200, 100 epochs. The program reads an unpublished
``dataset.csv``: the stand-in is 1,000 rows of one feature drawn from N(50, 20)
labelled by ``x > 50``.
"""

import numpy as np

from ._common import stackoverflow_source

NAME = "so-45442843-softmax-mae"
SOURCE = stackoverflow_source(45442843)
CATEGORY = "output_config"
ACCEPTED = ("output_config", "no_learning_signal")
FAULT = "softmax over a single output unit with mean absolute error"
TASK = "binary"
SYMPTOM = "no_learning"
#: Whether DeepDiagnosis identified this program (ICSE 2022 artifact, Table 6).
DEEPDIAGNOSIS_IDENTIFIED = True
BATCH_SIZE = 200
EPOCHS = 100


def data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(50.0, 20.0, (1000, 1)).astype("float32")
    y = (x[:, 0] > 50.0).astype("float32")
    return x, y


def data_fixed(seed=0):
    x, y = data(seed)
    return ((x - x.mean()) / x.std()).astype("float32"), y


def _model(fixed):
    import keras
    from keras import layers

    stack = [keras.Input((1,)), layers.Dense(1), layers.Activation("sigmoid")]
    if fixed:
        stack.append(layers.Dense(1, kernel_initializer="random_normal", activation="sigmoid"))
    else:
        stack += [layers.Dense(1, kernel_initializer="random_normal"),
                  layers.Activation("softmax")]
    model = keras.Sequential(stack, name=NAME.replace("-", "_"))
    model.compile(optimizer="rmsprop",
                  loss="binary_crossentropy" if fixed else "mean_absolute_error")
    return model


def build():
    return _model(fixed=False)


def build_fixed():
    return _model(fixed=True)
