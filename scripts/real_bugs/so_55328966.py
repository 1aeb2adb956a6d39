"""Stack Overflow 55328966: raw MNIST pixels and a sigmoid output under categorical cross-entropy.

Source: DeepLocalize's benchmark, ``Benchmark/StackOverflow/55328966``;
https://stackoverflow.com/questions/55328966.

Fault (from the source's buggy and correct versions): a 784-784-50-10 network (the
first Dense layer linear, then ReLU, then a sigmoid output) is trained on pixel
values 0-255 with ``categorical_crossentropy`` and gradient descent at 1e-4. The
correct version divides the pixels by 255 and ends in a softmax.

Porting: same layers (the L2 regularisers have factor 0 and are left out),
``SGD(1e-4)`` for ``tf.compat.v1.train.GradientDescentOptimizer(1e-4)``, batch size
32, 10 epochs. MNIST (5,000 rows from a CSV file) is replaced by
:func:`_common.digits_784` scaled to 0-255 (1,797 images). The loss is Keras 2.2's
categorical cross-entropy on probabilities
(:func:`categorical_crossentropy_keras2`), since Keras 3 would train the sigmoid
output as a softmax.
"""

from ._common import categorical_crossentropy_keras2, digits_784, one_hot, stackoverflow_source

NAME = "so-55328966-raw-pixels-sigmoid"
SOURCE = stackoverflow_source(55328966)
CATEGORY = "output_config"
ACCEPTED = ("output_config", "saturated_units")
FAULT = "sigmoid output under categorical cross-entropy on unscaled 0-255 pixels"
TASK = "multiclass"
SYMPTOM = "no_learning"
#: Whether DeepDiagnosis identified this program (ICSE 2022 artifact, Table 6).
DEEPDIAGNOSIS_IDENTIFIED = True
BATCH_SIZE = 32
EPOCHS = 10


def data(seed=0):
    x, labels = digits_784(scale=255.0)
    return x, one_hot(labels, 10)


def data_fixed(seed=0):
    x, y = data(seed)
    return x / 255.0, y


def _model(fixed):
    import keras
    from keras import layers

    model = keras.Sequential([
        keras.Input((784,)),
        layers.Dense(784),
        layers.Dense(50), layers.Activation("relu"),
        layers.Dense(10), layers.Activation("softmax" if fixed else "sigmoid"),
    ], name=NAME.replace("-", "_"))
    model.compile(optimizer=keras.optimizers.SGD(1e-4),
                  loss="categorical_crossentropy" if fixed else categorical_crossentropy_keras2,
                  metrics=["accuracy"])
    return model


def build():
    return _model(fixed=False)


def build_fixed():
    return _model(fixed=True)
