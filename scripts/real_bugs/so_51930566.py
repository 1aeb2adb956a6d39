"""Stack Overflow 51930566: iris with a sigmoid output under categorical cross-entropy.

Source: DeepLocalize's benchmark, ``Benchmark/StackOverflow/51930566``;
https://stackoverflow.com/questions/51930566.

Fault (from the source's buggy and correct versions): a 4-4-3 network on iris ends
in a sigmoid under ``categorical_crossentropy`` and is trained on the unscaled
features (the program scales them, then splits the unscaled copy). The correct
version trains on the standardised features with a softmax output.

Porting: same layers (``normal`` initialiser = RandomNormal(0, 0.05)), Adam, batch
size 5, 50 epochs, the same 50% split (``random_state=2``) of scikit-learn's bundled
iris. Keras 3 would train a sigmoid under categorical cross-entropy as a softmax;
the loss is Keras 2.2's formula on probabilities
(:func:`categorical_crossentropy_keras2`).
"""

from ._common import categorical_crossentropy_keras2, one_hot, stackoverflow_source

NAME = "so-51930566-iris-sigmoid-cce"
SOURCE = stackoverflow_source(51930566)
CATEGORY = "output_config"
ACCEPTED = ("output_config", "saturated_units")
FAULT = "sigmoid output under categorical cross-entropy, unscaled features"
TASK = "multiclass"
SYMPTOM = "no_learning"
#: Whether DeepDiagnosis identified this program (ICSE 2022 artifact, Table 6).
DEEPDIAGNOSIS_IDENTIFIED = True
BATCH_SIZE = 5
EPOCHS = 50


def _split(scaled):
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    iris = load_iris()
    x = iris["data"]
    if scaled:
        x = StandardScaler().fit_transform(x)
    x_train, _, y_train, _ = train_test_split(x, one_hot(iris["target"], 3),
                                              test_size=0.5, random_state=2)
    return x_train.astype("float32"), y_train.astype("float32")


def data(seed=0):
    return _split(scaled=False)


def data_fixed(seed=0):
    return _split(scaled=True)


def _model(fixed):
    import keras
    from keras import layers

    model = keras.Sequential([
        keras.Input((4,)),
        layers.Dense(4, kernel_initializer="random_normal"), layers.Activation("relu"),
        layers.Dense(3, kernel_initializer="random_normal"),
        layers.Activation("softmax" if fixed else "sigmoid"),
    ], name=NAME.replace("-", "_"))
    model.compile(optimizer="adam",
                  loss="categorical_crossentropy" if fixed else categorical_crossentropy_keras2,
                  metrics=["accuracy"])
    return model


def build():
    return _model(fixed=False)


def build_fixed():
    return _model(fixed=True)
