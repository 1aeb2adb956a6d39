"""Stack Overflow 31880720: a one-unit softmax output trained with binary cross-entropy.

Source: DeepLocalize's benchmark, ``Benchmark/StackOverflow/31880720`` (the
motivating example of DeepDiagnosis, ICSE 2022);
https://stackoverflow.com/questions/31880720.

Fault (from the source's buggy and correct versions): the binary classifier ends in
``Dense(1)`` followed by ``Activation('softmax')``. A softmax over one unit is 1.0
for every input, so the loss is constant, every gradient is zero and accuracy stays
at the positive rate. The source's correct version ends in ``Dense(1,
activation='sigmoid')``.

Porting: same layers (Dense 50 ReLU + a second ReLU layer, Dropout 0.2, Dense 50,
ReLU, Dropout 0.2, Dense 1, softmax), default RMSprop, batch size 1. The data are
the program's own (128 ones labelled 1, 128 zeros labelled 0), 500 rows of each
instead of 10,000 to keep the run short. Keras 3 would train the softmax through its
cached logit like a sigmoid; the loss is Keras 2.2's binary cross-entropy on
probabilities (:func:`binary_crossentropy_keras2`) so the program fails as it did.
"""

import numpy as np

from ._common import binary_crossentropy_keras2, stackoverflow_source

NAME = "so-31880720-one-unit-softmax"
SOURCE = stackoverflow_source(31880720)
CATEGORY = "output_config"
ACCEPTED = ("output_config", "no_learning_signal")
FAULT = "softmax over a single output unit with binary cross-entropy"
TASK = "binary"
SYMPTOM = "no_learning"
#: Whether DeepDiagnosis identified this program (ICSE 2022 artifact, Table 6).
DEEPDIAGNOSIS_IDENTIFIED = True
BATCH_SIZE = 1
EPOCHS = 1


def data(seed=0):
    rows = 500
    x = np.concatenate([np.ones((rows, 128)), np.zeros((rows, 128))]).astype("float32")
    y = np.concatenate([np.ones(rows), np.zeros(rows)]).astype("float32")
    order = np.random.default_rng(seed).permutation(len(x))
    return x[order], y[order]


def _model(fixed):
    import keras
    from keras import layers

    stack = [keras.Input((128,)), layers.Dense(50, activation="relu")]
    if not fixed:
        stack.append(layers.Activation("relu"))
    stack += [layers.Dropout(0.2), layers.Dense(50, activation="relu"), layers.Dropout(0.2)]
    stack += [layers.Dense(1, activation="sigmoid")] if fixed else [
        layers.Dense(1), layers.Activation("softmax")]
    model = keras.Sequential(stack, name=NAME.replace("-", "_"))
    model.compile(optimizer=keras.optimizers.RMSprop(),
                  loss="binary_crossentropy" if fixed else binary_crossentropy_keras2,
                  metrics=["accuracy"])
    return model


def build():
    return _model(fixed=False)


def build_fixed():
    return _model(fixed=True)
