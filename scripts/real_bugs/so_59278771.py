"""Stack Overflow 59278771: iris, unscaled, with a sigmoid output under categorical cross-entropy.

Source: DeepLocalize's benchmark, ``Benchmark/StackOverflow/59278771``;
https://stackoverflow.com/questions/59278771.

Fault (from the source's buggy and correct versions): a 4-4-3 network on the raw
iris features ends in ``Activation('sigmoid')`` under ``categorical_crossentropy``.
The correct version min-max scales the features, adds a hidden layer of 8 ReLU units
and ends in a softmax (trained through a scikit-learn wrapper with Keras' default
batch size).

Porting: same layers (``normal`` initialiser), Adam, batch size 5, 200 epochs, all
150 rows of scikit-learn's bundled iris. The loss is Keras 2.2's categorical
cross-entropy on probabilities (:func:`categorical_crossentropy_keras2`), since
Keras 3 would train the sigmoid as a softmax. The fix runs 200 epochs at batch size
32 on the min-max scaled features, without the source's 10-fold loop.
"""

from ._common import categorical_crossentropy_keras2, one_hot, stackoverflow_source

NAME = "so-59278771-iris-unscaled-sigmoid"
SOURCE = stackoverflow_source(59278771)
CATEGORY = "output_config"
ACCEPTED = ("output_config", "saturated_units")
FAULT = "sigmoid output under categorical cross-entropy, unscaled features"
TASK = "multiclass"
SYMPTOM = "no_learning"
#: Whether DeepDiagnosis identified this program (ICSE 2022 artifact, Table 6).
DEEPDIAGNOSIS_IDENTIFIED = False
BATCH_SIZE = 5
EPOCHS = 200
FIXED_BATCH_SIZE = 32


def data(seed=0):
    from sklearn.datasets import load_iris

    x, labels = load_iris(return_X_y=True)
    return x.astype("float32"), one_hot(labels, 3)


def data_fixed(seed=0):
    from sklearn.preprocessing import MinMaxScaler

    x, y = data(seed)
    return MinMaxScaler().fit_transform(x).astype("float32"), y


def build():
    import keras
    from keras import layers

    model = keras.Sequential([
        keras.Input((4,)),
        layers.Dense(4, kernel_initializer="random_normal"), layers.Activation("relu"),
        layers.Dense(3, kernel_initializer="random_normal"), layers.Activation("sigmoid"),
    ], name=NAME.replace("-", "_"))
    model.compile(optimizer="adam", loss=categorical_crossentropy_keras2, metrics=["accuracy"])
    return model


def build_fixed():
    import keras
    from keras import layers

    model = keras.Sequential([
        keras.Input((4,)),
        layers.Dense(4, activation="relu", kernel_initializer="random_normal"),
        layers.Dense(8, activation="relu", kernel_initializer="random_normal"),
        layers.Dense(3, activation="softmax", kernel_initializer="random_normal"),
    ], name=NAME.replace("-", "_") + "_fixed")
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    return model
