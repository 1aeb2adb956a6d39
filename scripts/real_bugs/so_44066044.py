"""Stack Overflow 44066044: a ReLU output unit under binary cross-entropy, unscaled inputs.

Source: DeepLocalize's benchmark, ``Benchmark/StackOverflow/44066044``;
https://stackoverflow.com/questions/44066044.

Fault (from the source's buggy and correct versions): a packet classifier (11
features, binary label) ends in ``Activation('relu')`` and is trained with
``binary_crossentropy`` on raw features. The correct version standardises the
features (``preprocessing.scale``) and ends in a sigmoid.

Porting: same layers (Dense 12 ReLU, Dense 12 ReLU, Dense 1, ``normal`` initialiser
= RandomNormal(0, 0.05)), Adam, batch size 5. The program reads
``NetworkPackets.csv``, which is not published: the stand-in is 1,000 synthetic rows
of 11 non-negative, heavy-tailed features (packet-size-like, up to a few thousand)
whose label is a fixed linear rule on the standardised features. 10 epochs instead
of 100.
"""

import numpy as np

from ._common import stackoverflow_source

NAME = "so-44066044-relu-output"
SOURCE = stackoverflow_source(44066044)
CATEGORY = "output_config"
ACCEPTED = ("output_config", "dead_units", "no_learning_signal")
FAULT = "ReLU output unit trained with binary cross-entropy (and unscaled features)"
TASK = "binary"
SYMPTOM = "no_learning"
#: Whether DeepDiagnosis identified this program (ICSE 2022 artifact, Table 6).
DEEPDIAGNOSIS_IDENTIFIED = True
BATCH_SIZE = 5
EPOCHS = 10


def data(seed=0):
    rng = np.random.default_rng(seed)
    scales = np.geomspace(1.0, 2000.0, 11)
    x = (rng.exponential(1.0, (1000, 11)) * scales).astype("float32")
    standard = (x - x.mean(0)) / x.std(0)
    weights = np.random.default_rng(1234).normal(size=11)
    y = (standard @ weights > 0).astype("float32")
    return x, y


def data_fixed(seed=0):
    x, y = data(seed)
    return ((x - x.mean(0)) / x.std(0)).astype("float32"), y


def _model(fixed):
    import keras
    from keras import layers

    model = keras.Sequential([
        keras.Input((11,)),
        layers.Dense(12, kernel_initializer="random_normal"), layers.Activation("relu"),
        layers.Dense(12, kernel_initializer="random_normal"), layers.Activation("relu"),
        layers.Dense(1, kernel_initializer="random_normal"),
        layers.Activation("sigmoid" if fixed else "relu"),
    ], name=NAME.replace("-", "_"))
    model.compile(optimizer=keras.optimizers.Adam(), loss="binary_crossentropy",
                  metrics=["accuracy"])
    return model


def build():
    return _model(fixed=False)


def build_fixed():
    return _model(fixed=True)
