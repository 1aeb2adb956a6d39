"""The built-in example zoo: small models with a known verdict, and their data.

Each example is a deterministic recipe: the same name and seed always give the
same compiled model and the same arrays.  The catalogue itself (names,
descriptions, expected verdicts) is plain data, so listing it does not import
TensorFlow; building a model does.

Data sets are real where one fits (scikit-learn's bundled ``load_digits``, 8x8
grey images of handwritten digits, shipped inside the package, no download) and
synthetic otherwise.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from .errors import UsageError


@dataclasses.dataclass(frozen=True)
class Example:
    """One entry of the zoo.

    Attributes:
        name: The kebab-case name used on the command line.
        description: One line saying what the model is.
        expected: The categories a correct diagnosis reports (empty: healthy).
        builder: Name of the function in this module that builds it.
    """

    name: str
    description: str
    expected: tuple[str, ...]
    builder: str

    @property
    def verdict(self) -> str:
        """The expected verdict in words, for listings."""
        return ", ".join(self.expected) if self.expected else "healthy"


EXAMPLES: dict[str, Example] = {
    e.name: e
    for e in [
        Example("deep-sigmoid", "12-layer sigmoid MLP on digits (Glorot init, SGD)",
                ("vanishing_gradients",), "_deep_sigmoid"),
        Example("tiny-tanh", "10-layer tanh MLP on digits with N(0, 0.01) initial weights",
                ("vanishing_gradients",), "_tiny_tanh"),
        Example("large-init-relu", "8-layer ReLU MLP on digits with N(0, 1) initial weights",
                ("exploding_gradients",), "_large_init_relu"),
        Example("healthy-relu", "6-layer He-initialised ReLU MLP on digits, Adam 1e-3",
                (), "_healthy_relu"),
        Example("high-lr-relu", "6-layer He-initialised ReLU MLP on digits, SGD at lr 3.0",
                ("exploding_gradients",), "_high_lr_relu"),
        Example("dying-relu", "6-layer ReLU MLP on digits whose units start dead (bias -4)",
                ("dead_units",), "_dying_relu"),
        Example("long-rnn", "SimpleRNN over 120 timesteps recalling the first input",
                ("vanishing_gradients",), "_long_rnn"),
        Example("cnn-batchnorm", "small CNN with batch normalization on digits images",
                (), "_cnn_batchnorm"),
    ]
}


def get_example(name: str) -> Example:
    """Return the zoo entry called ``name``.

    Raises:
        UsageError: when no example has that name; the message lists them.
    """
    try:
        return EXAMPLES[name]
    except KeyError:
        known = ", ".join(EXAMPLES)
        raise UsageError(
            f"There is no example called '{name}'. Choose one of: {known}."
        ) from None


def build_example(name: str, seed: int = 0):
    """Build the compiled model and the data of one example.

    Args:
        name: An example name from :data:`EXAMPLES`.
        seed: Seeds the initial weights and any synthetic data.

    Returns:
        ``(model, x, y)``: a compiled ``keras.Model`` and NumPy arrays.
    """
    example = get_example(name)
    from ._tf import import_keras

    _, keras = import_keras()
    keras.utils.set_random_seed(seed)
    builder: Callable = globals()[example.builder]
    return builder(seed)


def save_example(name: str, directory, seed: int = 0, force: bool = False):
    """Write ``NAME.keras`` and ``NAME.npz`` (arrays ``x`` and ``y``) into a folder.

    Both files are written to a temporary name first and renamed, so an
    interrupted save leaves nothing half-written.

    Returns:
        The two paths written, model first.
    """
    from pathlib import Path

    from .files import atomic_output, check_output_path

    directory = Path(directory)
    if not directory.is_dir():
        raise UsageError(
            f"The folder '{directory}' does not exist. Create it first or name another folder."
        )
    model_path = check_output_path(directory / f"{name}.keras", force=force)
    data_path = check_output_path(directory / f"{name}.npz", force=force)
    model, x, y = build_example(name, seed=seed)
    with atomic_output(model_path) as tmp:
        model.save(tmp)
    with atomic_output(data_path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, x=x, y=y)
    return model_path, data_path


# --------------------------------------------------------------------------
# Data

def _digits():
    """scikit-learn's bundled 8x8 digits, scaled to [0, 1], as float32."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = digits.target.astype("int32")
    return x, y


def _digits_images():
    x, y = _digits()
    return x.reshape(-1, 8, 8, 1), y


def _recall_first_sequences(seed: int, num_samples: int = 512, length: int = 120):
    """Sequences of noise whose label is the sign of the first timestep.

    Only the first input carries the answer, so a recurrent model must carry
    gradient across every timestep to learn it.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_samples, length, 1)).astype("float32")
    y = (x[:, 0, 0] > 0).astype("float32").reshape(-1, 1)
    return x, y


# --------------------------------------------------------------------------
# Models

def _mlp(num_hidden, width, activation, kernel_initializer="glorot_uniform",
         bias_initializer="zeros", num_inputs=64, num_classes=10, name="mlp"):
    import keras

    layers = [keras.Input(shape=(num_inputs,), name="pixels")]
    for i in range(num_hidden):
        layers.append(keras.layers.Dense(
            width, activation=activation, kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer, name=f"dense_{i + 1}"))
    layers.append(keras.layers.Dense(num_classes, activation="softmax", name="output"))
    return keras.Sequential(layers, name=name)


def _compile_classifier(model, optimizer):
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def _deep_sigmoid(seed):
    import keras

    model = _mlp(12, 32, "sigmoid", name="deep_sigmoid")
    x, y = _digits()
    return _compile_classifier(model, keras.optimizers.SGD(0.1)), x, y


def _tiny_tanh(seed):
    import keras

    init = keras.initializers.RandomNormal(stddev=0.01, seed=seed)
    model = _mlp(10, 32, "tanh", kernel_initializer=init, name="tiny_tanh")
    x, y = _digits()
    return _compile_classifier(model, keras.optimizers.SGD(0.05)), x, y


def _large_init_relu(seed):
    import keras

    init = keras.initializers.RandomNormal(stddev=1.0, seed=seed)
    model = _mlp(8, 32, "relu", kernel_initializer=init, name="large_init_relu")
    x, y = _digits()
    return _compile_classifier(model, keras.optimizers.SGD(0.01)), x, y


def _healthy_relu(seed):
    import keras

    model = _mlp(6, 32, "relu", kernel_initializer="he_normal", name="healthy_relu")
    x, y = _digits()
    return _compile_classifier(model, keras.optimizers.Adam(1e-3)), x, y


def _high_lr_relu(seed):
    import keras

    model = _mlp(6, 32, "relu", kernel_initializer="he_normal", name="high_lr_relu")
    x, y = _digits()
    return _compile_classifier(model, keras.optimizers.SGD(3.0)), x, y


def _dying_relu(seed):
    import keras

    model = _mlp(6, 32, "relu", kernel_initializer="he_normal",
                 bias_initializer=keras.initializers.Constant(-4.0), name="dying_relu")
    x, y = _digits()
    return _compile_classifier(model, keras.optimizers.Adam(1e-3)), x, y


def _long_rnn(seed):
    import keras

    x, y = _recall_first_sequences(seed)
    model = keras.Sequential([
        keras.Input(shape=x.shape[1:], name="sequence"),
        keras.layers.SimpleRNN(16, name="rnn"),
        keras.layers.Dense(1, activation="sigmoid", name="output"),
    ], name="long_rnn")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy",
                  metrics=["accuracy"])
    return model, x, y


def _cnn_batchnorm(seed):
    import keras
    from keras import layers

    x, y = _digits_images()
    model = keras.Sequential([
        keras.Input(shape=(8, 8, 1), name="image"),
        layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv_1"),
        layers.BatchNormalization(name="bn_1"),
        layers.Activation("relu", name="relu_1"),
        layers.Conv2D(32, 3, padding="same", use_bias=False, name="conv_2"),
        layers.BatchNormalization(name="bn_2"),
        layers.Activation("relu", name="relu_2"),
        layers.GlobalAveragePooling2D(name="pool"),
        layers.Dense(10, activation="softmax", name="output"),
    ], name="cnn_batchnorm")
    return _compile_classifier(model, keras.optimizers.Adam(1e-3)), x, y
