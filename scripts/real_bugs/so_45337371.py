"""Stack Overflow 45337371: gradients are all zero behind a one-unit softmax.

Source: DeepLocalize's benchmark, ``Benchmark/StackOverflow/45337371``;
https://stackoverflow.com/questions/45337371.

Fault (from the source's buggy and correct versions): a 5-60-50-1 ReLU network ends
in ``Dense(1, activation='softmax')`` under ``binary_crossentropy``; the program
then inspects the gradients of the output with respect to the input. The correct
version ends in a sigmoid.

Porting: same layers and Adam. The program never trains (it only evaluates gradients
on random inputs), so the stand-in data are 1,000 synthetic rows of 5 uniform
features with a label from a fixed linear rule; Keras' default batch size 32, 5
epochs. The loss is Keras 2.2's binary cross-entropy on probabilities
(:func:`binary_crossentropy_keras2`); Keras 3 would train the cached logit instead.
"""

import numpy as np

from ._common import binary_crossentropy_keras2, stackoverflow_source

NAME = "so-45337371-one-unit-softmax-gradients"
SOURCE = stackoverflow_source(45337371)
CATEGORY = "output_config"
ACCEPTED = ("output_config", "no_learning_signal")
FAULT = "softmax over a single output unit with binary cross-entropy"
TASK = "binary"
SYMPTOM = "no_learning"
#: Whether DeepDiagnosis identified this program (ICSE 2022 artifact, Table 6).
DEEPDIAGNOSIS_IDENTIFIED = True
BATCH_SIZE = 32
EPOCHS = 5


def data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((1000, 5)).astype("float32")
    y = (x @ np.array([1.0, -1.0, 0.5, -0.5, 1.0]) > 0.5).astype("float32")
    return x, y


def _model(fixed):
    import keras
    from keras import layers

    model = keras.Sequential([
        keras.Input((5,)),
        layers.Dense(60, activation="relu"),
        layers.Dense(50, activation="relu"),
        layers.Dense(1, activation="sigmoid" if fixed else "softmax"),
    ], name=NAME.replace("-", "_"))
    model.compile(optimizer="adam",
                  loss="binary_crossentropy" if fixed else binary_crossentropy_keras2)
    return model


def build():
    return _model(fixed=False)


def build_fixed():
    return _model(fixed=True)
