"""Stack Overflow 38648195: multi-label targets with a softmax output and MSE.

Source: DeepLocalize's benchmark, ``Benchmark/StackOverflow/38648195``;
https://stackoverflow.com/questions/38648195.

Fault (from the source's buggy and correct versions): a multi-label problem (three
independent labels) is trained with a softmax output and ``mean_squared_error``. The
correct version uses a sigmoid output and ``binary_crossentropy``.

Porting: same layers (Dense 20 ReLU, Dropout 0.5, Dense 20 ReLU, Dropout 0.5, Dense
3), SGD at its default rate, batch size 20. The data are the program's own
(scikit-learn's ``make_multilabel_classification`` with 20 features and 3 classes),
6,000 rows instead of 60,000 and 5 epochs instead of 20.
"""

from ._common import stackoverflow_source

NAME = "so-38648195-multilabel-softmax"
SOURCE = stackoverflow_source(38648195)
CATEGORY = "output_config"
ACCEPTED = ("output_config",)
FAULT = "softmax output with mean squared error on multi-label targets"
TASK = "multilabel"
SYMPTOM = "no_learning"
#: Whether DeepDiagnosis identified this program (ICSE 2022 artifact, Table 6).
DEEPDIAGNOSIS_IDENTIFIED = True
BATCH_SIZE = 20
EPOCHS = 5


def data(seed=0):
    from sklearn.datasets import make_multilabel_classification

    x, y = make_multilabel_classification(n_samples=6000, n_features=20, n_classes=3,
                                          random_state=seed)
    return x.astype("float32"), y.astype("float32")


def _model(fixed):
    import keras
    from keras import layers

    model = keras.Sequential([
        keras.Input((20,)),
        layers.Dense(20), layers.Activation("relu"), layers.Dropout(0.5),
        layers.Dense(20), layers.Activation("relu"), layers.Dropout(0.5),
        layers.Dense(3), layers.Activation("sigmoid" if fixed else "softmax"),
    ], name=NAME.replace("-", "_"))
    model.compile(optimizer=keras.optimizers.SGD(),
                  loss="binary_crossentropy" if fixed else "mean_squared_error")
    return model


def build():
    return _model(fixed=False)


def build_fixed():
    return _model(fixed=True)
