"""Stack Overflow 47352366: an MNIST CNN whose output layer is a ReLU.

Source: DeepLocalize's benchmark, ``Benchmark/StackOverflow/47352366``;
https://stackoverflow.com/questions/47352366.

Fault (from the source's buggy and correct versions): the TensorFlow tutorial CNN
(two 5x5 convolutions with 32 and 64 filters, max pooling, Dense 1024, Dropout 0.5)
is re-typed in Keras with ``Dense(10, activation='relu')`` as its output under
``categorical_crossentropy``. The correct version uses a softmax output.

Porting: same layers (constant 0.1 bias initialisers, ``same`` padding, the Reshape
to ``(1, 3136)`` before the Dense layer and the Flatten after it), Adam, batch size
50. Keras 3's categorical cross-entropy on a non-softmax output uses the same
normalise-and-clip formula as Keras 2, so the built-in loss is kept. MNIST is
replaced by :func:`_common.digits_784` (1,797 images); 300 training steps instead of
600.
"""

from ._common import digits_784, one_hot, stackoverflow_source

NAME = "so-47352366-cnn-relu-output"
SOURCE = stackoverflow_source(47352366)
CATEGORY = "output_config"
ACCEPTED = ("output_config", "dead_units", "nonfinite", "no_learning_signal")
FAULT = "ReLU output layer under categorical cross-entropy"
TASK = "multiclass"
SYMPTOM = "no_learning"
#: Whether DeepDiagnosis identified this program (ICSE 2022 artifact, Table 6).
DEEPDIAGNOSIS_IDENTIFIED = True
BATCH_SIZE = 50
STEPS = 300


def data(seed=0):
    x, labels = digits_784()
    return x, one_hot(labels, 10)


def _model(fixed):
    import keras
    from keras import layers

    bias = keras.initializers.Constant(0.1)
    model = keras.Sequential([
        keras.Input((784,)),
        layers.Reshape((28, 28, 1)),
        layers.Conv2D(32, (5, 5), padding="same", activation="relu", bias_initializer=bias),
        layers.MaxPooling2D(padding="same"),
        layers.Conv2D(64, (5, 5), padding="same", activation="relu", bias_initializer=bias),
        layers.MaxPooling2D(padding="same"),
        layers.Reshape((1, 7 * 7 * 64)),
        layers.Dense(1024, activation="relu", bias_initializer=bias),
        layers.Dropout(0.5),
        layers.Flatten(),
        layers.Dense(10, activation="softmax" if fixed else "relu"),
    ], name=NAME.replace("-", "_"))
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def build():
    return _model(fixed=False)


def build_fixed():
    return _model(fixed=True)
