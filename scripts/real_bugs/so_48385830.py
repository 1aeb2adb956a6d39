"""Stack Overflow 48385830: a linear MNIST network, N(0, 1) weights and SGD at 3.0.

Source: DeepLocalize's benchmark, ``Benchmark/StackOverflow/48385830``;
https://stackoverflow.com/questions/48385830.

Fault (from the source's buggy and correct versions): a 784-30-10 network (after
Nielsen's book) is written without activations, with kernels and biases drawn from
N(0, 1), trained with ``SGD(lr=3.0)`` and MSE. The correct version adds a sigmoid
hidden layer and a softmax output under categorical cross-entropy, keeping the
initialisers and the learning rate.

Porting: same layers, initialisers, optimizer, loss and batch size 10. MNIST is
replaced by :func:`_common.digits_784` (1,797 images); one epoch (180 steps) instead
of 30 for the faulty program, three for the fix.
"""

from ._common import digits_784, one_hot, stackoverflow_source

NAME = "so-48385830-linear-mnist-lr3"
SOURCE = stackoverflow_source(48385830)
CATEGORY = "exploding_gradients"
ACCEPTED = ("exploding_gradients", "nonfinite", "large_updates")
FAULT = "no activations, N(0, 1) weights and SGD at 3.0 with MSE: the weights diverge"
TASK = "multiclass"
SYMPTOM = "diverges"
#: Whether DeepDiagnosis identified this program (ICSE 2022 artifact, Table 6).
DEEPDIAGNOSIS_IDENTIFIED = True
BATCH_SIZE = 10
EPOCHS = 1
FIXED_EPOCHS = 3


def data(seed=0):
    x, labels = digits_784()
    return x, one_hot(labels, 10)


def _model(fixed):
    import keras
    from keras import layers

    def normal():
        return keras.initializers.RandomNormal(stddev=1.0)

    model = keras.Sequential([
        keras.Input((784,)),
        layers.Dense(30, activation="sigmoid" if fixed else None,
                     kernel_initializer=normal(), bias_initializer=normal()),
        layers.Dense(10, activation="softmax" if fixed else None,
                     kernel_initializer=normal(), bias_initializer=normal()),
    ], name=NAME.replace("-", "_"))
    model.compile(optimizer=keras.optimizers.SGD(3.0),
                  loss="categorical_crossentropy" if fixed else "mean_squared_error",
                  metrics=["accuracy"])
    return model


def build():
    return _model(fixed=False)


def build_fixed():
    return _model(fixed=True)
