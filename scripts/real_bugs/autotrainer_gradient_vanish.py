"""AUTOTRAINER's gradient-vanishing demo: eight sigmoid layers on the circles data.

Source: AUTOTRAINER (ICSE 2021) artifact,
``AutoTrainer/demo_case/Gradient_Vanish_Case/`` (``model.h5``, ``config.pkl``) and
``AutoTrainer/data/simplednn.py``.

Fault (from the source): the demo AUTOTRAINER ships to show gradient vanishing: a
2-input network of eight ``Dense(5, sigmoid)`` layers with He-uniform initialisers
(``VarianceScaling(2.0, fan_in, uniform)``) and a sigmoid output, trained with Adam
(1e-3), batch size 128 and binary cross-entropy on ``make_circles`` data scaled by
100. AUTOTRAINER's default ("balance") repair order for vanishing gradients starts
with replacing the activations by SELU (``selu_1``), then ReLU, then batch
normalisation.

Porting: the architecture and training configuration were read from the artifact's
saved model and configuration files. The data are the source's own
(``make_circles(n_samples=1000, noise=0.1, random_state=1)`` times 100, first 700
rows), 300 epochs as in the configuration. The fix applies AUTOTRAINER's first
strategy, ``selu_1`` (the hidden sigmoids become SELU); the source ships no fixed
model of its own.
"""

from ._common import AUTOTRAINER

NAME = "autotrainer-gradient-vanish"
SOURCE = AUTOTRAINER.format(path="AutoTrainer/demo_case/Gradient_Vanish_Case/")
CATEGORY = "vanishing_gradients"
ACCEPTED = ("vanishing_gradients", "saturated_units", "slow_updates")
FAULT = "eight stacked sigmoid layers on inputs scaled by 100"
TASK = "binary"
SYMPTOM = "no_learning"
BATCH_SIZE = 128
EPOCHS = 300


def data(seed=0):
    from sklearn.datasets import make_circles

    x, y = make_circles(n_samples=1000, noise=0.1, random_state=1)
    return (x[:700] * 100).astype("float32"), y[:700].astype("float32")


def _model(fixed):
    import keras
    from keras import layers

    def he_uniform():
        return keras.initializers.VarianceScaling(2.0, "fan_in", "uniform")

    hidden = "selu" if fixed else "sigmoid"
    stack = [keras.Input((2,))]
    stack += [layers.Dense(5, activation=hidden, kernel_initializer=he_uniform())
              for _ in range(8)]
    stack.append(layers.Dense(1, activation="sigmoid", kernel_initializer=he_uniform()))
    model = keras.Sequential(stack, name=NAME.replace("-", "_"))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy",
                  metrics=["accuracy"])
    return model


def build():
    return _model(fixed=False)


def build_fixed():
    return _model(fixed=True)
