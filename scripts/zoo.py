"""The benchmark zoo: labelled Keras models, their data, and the check of each label.

Every entry is a deterministic recipe (a builder and a seed) for a small compiled
model and its data, with the label it is *meant* to have: ``vanishing``,
``exploding``, ``dead_units``, ``saturation`` or ``healthy``.  A recipe is only a
hypothesis: :func:`measure` trains a copy of the model for a few hundred steps
with a plain ``tf.GradientTape`` loop (no gradadvisor code), and :func:`verify`
turns those measurements into a label of its own.  An entry whose measured label
differs from its intended one is rejected and reported, never kept.

The same measurements feed the baselines (``baselines.py``): they see the loss
and accuracy history, the per-layer gradients on a fixed batch and the layer
outputs, exactly what their papers' monitors read.

Data sets are the ones bundled inside scikit-learn (``load_digits``,
``load_breast_cancer``, ``load_wine``, ``load_iris``: no download) and
deterministic synthetic tasks, some of which need memory over long sequences.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np

from gradadvisor._tf import import_keras

LABELS = ("vanishing", "exploding", "dead_units", "saturation", "healthy")
#: Layers whose parameters are scales and shifts, not a path for depth-wise flow.
NORMALIZATION = ("BatchNormalization", "LayerNormalization", "GroupNormalization")

# --------------------------------------------------------------------------
# Ground-truth criteria.  They define the labels; they are deliberately not
# gradadvisor's rule thresholds, and between "faulty" and "healthy" they leave a
# band where an entry is neither and is rejected as ambiguous.

#: An input-side layer (two or more kernel layers below the output) whose median
#: kernel-gradient RMS is below this fraction of the output layer's: vanishing.
VANISHING_RATIO = 1e-3
#: ... above this multiple of the output layer's: exploding.
EXPLODING_RATIO = 1e3
#: Norm of d loss / d x at the first timestep over that at the last (median
#: over checks), below which a recurrent layer vanishes in time.
TEMPORAL_VANISHING_RATIO = 1e-3
TEMPORAL_EXPLODING_RATIO = 1e3
#: Global gradient norm growth over the run (max over the first step) for exploding.
GRADIENT_GROWTH = 1e2
#: A run "learned" when its last training losses fall to this fraction of the
#: first ones and of the chance-level loss (the entropy of the class priors, so
#: that a huge initial loss falling to chance level does not count).
LEARNED_LOSS_RATIO = 0.6
#: Fraction of a ReLU layer's units zero on every one of 256 samples: dead.
DEAD_FRACTION = 0.5
#: Fraction of a sigmoid/tanh layer's outputs within 1e-2 of an asymptote: saturated.
SATURATED_FRACTION = 0.5
#: A healthy model learned and stays inside these: depth-wise gradient ratios
#: within [1e-2, 1e2] (temporal ones within [1e-2, 1e3]), under 30% dead or
#: saturated units.
HEALTHY_RATIO_BAND = (1e-2, 1e2)
HEALTHY_DEAD_OR_SATURATED = 0.3


@dataclasses.dataclass
class Dataset:
    """Training and held-out arrays of one task."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_val.max())) + 1


@dataclasses.dataclass(frozen=True)
class Entry:
    """One zoo model: how to build it, what it is meant to be, where it breaks.

    Attributes:
        name: Unique kebab-case name.
        family: ``mlp``, ``cnn``, ``rnn``, ``embedding-rnn``, ``residual`` or ``branched``.
        label: The intended label, one of :data:`LABELS`.
        builder: ``builder(seed) -> (compiled model, Dataset)``.
        description: One line for the tables.
        first_bad_layer: The layer where the fault starts when the construction
            fixes it (the first dead or saturated layer, the recurrent layer);
            None when only a measurement can tell (see :func:`verify`).
        steps: Verification steps (a few hundred; fewer for long sequences).
        batch_size: Batch size of the verification run, the probe and the fit.
        quick: Part of the ``--quick`` selection.
        tags: Optimizer, learning rate, activation, initializer, normalization, data.
        reference: Optional ``reference(seed) -> (compiled model, Dataset)``: the
            sane version of the same architecture that the outcome labeller
            (``outcome_labels.py``) trains as a control; None lets it derive one.
    """

    name: str
    family: str
    label: str
    builder: Callable
    description: str
    first_bad_layer: str | None = None
    steps: int = 300
    batch_size: int = 32
    quick: bool = False
    tags: dict = dataclasses.field(default_factory=dict, hash=False, compare=False)
    reference: Callable | None = dataclasses.field(default=None, hash=False, compare=False)

    def build(self, seed: int = 0):
        _, keras = import_keras()
        keras.utils.set_random_seed(seed)
        return self.builder(seed)


# --------------------------------------------------------------------------
# Data

def _split(name, x, y, seed=0, val_fraction=0.2) -> Dataset:
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    cut = int(round(len(x) * (1 - val_fraction)))
    return Dataset(name, x[:cut], y[:cut], x[cut:], y[cut:])


def _standardize(x):
    x = np.asarray(x, dtype="float64")
    return ((x - x.mean(0)) / (x.std(0) + 1e-8)).astype("float32")


def digits(images: bool = False) -> Dataset:
    """8x8 handwritten digits scaled to [0, 1] (1797 samples, 10 classes)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.data / 16.0).astype("float32")
    if images:
        x = x.reshape(-1, 8, 8, 1)
    return _split("digits" + ("-images" if images else ""), x, bunch.target.astype("int32"))


def breast_cancer(raw: bool = False) -> Dataset:
    """Breast cancer (569 samples, 30 features, 2 classes); ``raw`` keeps the
    unscaled features (areas near 1000 next to ratios near 0.1)."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    x = bunch.data.astype("float32") if raw else _standardize(bunch.data)
    return _split("breast_cancer" + ("-raw" if raw else ""), x, bunch.target.astype("int32"))


def wine(raw: bool = False) -> Dataset:
    """Wine (178 samples, 13 features, 3 classes); ``raw`` keeps proline near 1000."""
    from sklearn.datasets import load_wine

    bunch = load_wine()
    x = bunch.data.astype("float32") if raw else _standardize(bunch.data)
    return _split("wine" + ("-raw" if raw else ""), x, bunch.target.astype("int32"))


def iris() -> Dataset:
    """Iris (150 samples, 4 standardized features, 3 classes)."""
    from sklearn.datasets import load_iris

    bunch = load_iris()
    return _split("iris", _standardize(bunch.data), bunch.target.astype("int32"))


def moons() -> Dataset:
    """Two interleaved half circles (deterministic scikit-learn generator)."""
    from sklearn.datasets import make_moons

    x, y = make_moons(n_samples=1000, noise=0.15, random_state=0)
    return _split("moons", _standardize(x), y.astype("int32"))


def recall_first(length: int, num_samples: int = 1024, seed: int = 0) -> Dataset:
    """Noise sequences labelled by the sign of the first timestep only.

    Nothing after the first step carries information, so a recurrent model must
    carry the gradient over ``length`` steps to learn it.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_samples, length, 1)).astype("float32")
    y = (x[:, 0, 0] > 0).astype("int32")
    return _split(f"recall-first-{length}", x, y, seed)


def adding(length: int, num_samples: int = 1024, seed: int = 0) -> Dataset:
    """The adding problem as classification: is the sum of the two marked values
    above 1?  One marker sits in the first tenth of the sequence."""
    rng = np.random.default_rng(seed)
    values = rng.uniform(size=(num_samples, length)).astype("float32")
    markers = np.zeros_like(values)
    first = rng.integers(0, max(1, length // 10), num_samples)
    second = rng.integers(length // 2, length, num_samples)
    markers[np.arange(num_samples), first] = 1.0
    markers[np.arange(num_samples), second] = 1.0
    total = values[np.arange(num_samples), first] + values[np.arange(num_samples), second]
    x = np.stack([values, markers], axis=-1)
    return _split(f"adding-{length}", x, (total > 1.0).astype("int32"), seed)


def tokens_first(length: int, vocab: int = 24, num_samples: int = 1024, seed: int = 0) -> Dataset:
    """Text-like token ids; the class (of 4) is given by the first token alone."""
    rng = np.random.default_rng(seed)
    x = rng.integers(1, vocab, size=(num_samples, length)).astype("int32")
    return _split(f"tokens-first-{length}", x, (x[:, 0] % 4).astype("int32"), seed)


def tokens_contains(length: int, vocab: int = 24, num_samples: int = 1024, seed: int = 0) -> Dataset:
    """Token ids labelled by whether the marker token 1 occurs anywhere."""
    rng = np.random.default_rng(seed)
    x = rng.integers(2, vocab, size=(num_samples, length)).astype("int32")
    positive = rng.random(num_samples) < 0.5
    where = rng.integers(0, length, num_samples)
    x[positive, where[positive]] = 1
    return _split(f"tokens-contains-{length}", x, positive.astype("int32"), seed)


# --------------------------------------------------------------------------
# Builders

def _optimizer(spec):
    _, keras = import_keras()
    name, learning_rate = spec[0], spec[1]
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=learning_rate)
    if name == "momentum":
        return keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.9)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=learning_rate)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=learning_rate)
    raise ValueError(f"Unknown optimizer {name!r}")


def _initializer(spec, seed):
    _, keras = import_keras()
    if isinstance(spec, (int, float)):
        return keras.initializers.RandomNormal(stddev=float(spec), seed=seed)
    if spec == "negative":
        # Every weight negative: on non-negative inputs every ReLU starts dead.
        return keras.initializers.RandomUniform(-0.3, -0.05, seed=seed)
    return spec


def _head(keras, data: Dataset, binary: bool):
    if binary:
        return keras.layers.Dense(1, activation="sigmoid", name="output"), "binary_crossentropy"
    return (keras.layers.Dense(data.num_classes, activation="softmax", name="output"),
            "sparse_categorical_crossentropy")


def _compile(model, optimizer, loss):
    model.compile(optimizer=_optimizer(optimizer), loss=loss)
    return model


def mlp(data_fn, hidden, activation, optimizer, init="glorot_uniform", bias=0.0, norm=None,
        binary=False, name="mlp"):
    """A Sequential MLP ``dense_1 .. dense_n -> output``.

    ``hidden`` is ``(num_layers, width)``; ``init`` a Keras initializer name or a
    standard deviation; ``bias`` a constant or a list with one per hidden layer;
    ``norm`` None, ``"batch"`` or ``"layer"`` (before each activation).
    """

    def build(seed):
        _, keras = import_keras()
        data = data_fn()
        num, width = hidden
        biases = bias if isinstance(bias, (list, tuple)) else [bias] * num
        layers = [keras.Input(shape=data.x_train.shape[1:], name="features")]
        for i in range(num):
            kernel = _initializer(init, seed + i)
            if norm is None:
                layers.append(keras.layers.Dense(
                    width, activation=activation, kernel_initializer=kernel,
                    bias_initializer=keras.initializers.Constant(biases[i]), name=f"dense_{i + 1}"))
                continue
            layers.append(keras.layers.Dense(width, kernel_initializer=kernel, use_bias=False,
                                             name=f"dense_{i + 1}"))
            normalization = (keras.layers.BatchNormalization if norm == "batch"
                             else keras.layers.LayerNormalization)
            layers.append(normalization(name=f"norm_{i + 1}"))
            layers.append(keras.layers.Activation(activation, name=f"act_{i + 1}"))
        head, loss = _head(keras, data, binary)
        layers.append(head)
        return _compile(keras.Sequential(layers, name=name), optimizer, loss), data

    return build


def cnn(hidden_channels, activation, optimizer, init="glorot_uniform", bias=0.0, norm=False,
        name="cnn"):
    """Conv2D stack on 8x8 digit images, global pooling, softmax output."""

    def build(seed):
        _, keras = import_keras()
        data = digits(images=True)
        biases = bias if isinstance(bias, (list, tuple)) else [bias] * len(hidden_channels)
        layers = [keras.Input(shape=(8, 8, 1), name="image")]
        for i, channels in enumerate(hidden_channels):
            kernel = _initializer(init, seed + i)
            if norm:
                layers += [keras.layers.Conv2D(channels, 3, padding="same", use_bias=False,
                                               kernel_initializer=kernel, name=f"conv_{i + 1}"),
                           keras.layers.BatchNormalization(name=f"bn_{i + 1}"),
                           keras.layers.Activation(activation, name=f"act_{i + 1}")]
            else:
                layers.append(keras.layers.Conv2D(
                    channels, 3, padding="same", activation=activation, kernel_initializer=kernel,
                    bias_initializer=keras.initializers.Constant(biases[i]), name=f"conv_{i + 1}"))
        layers += [keras.layers.GlobalAveragePooling2D(name="pool"),
                   keras.layers.Dense(10, activation="softmax", name="output")]
        return _compile(keras.Sequential(layers, name=name), optimizer,
                        "sparse_categorical_crossentropy"), data

    return build


def rnn(data_fn, cell, units, optimizer, embedding=None, activation=None, recurrent_init=None,
        name="rnn"):
    """Sequential ``[embedding] -> recurrent layer 'rnn' -> output``."""

    def build(seed):
        _, keras = import_keras()
        data = data_fn()
        layers = [keras.Input(shape=data.x_train.shape[1:], name="sequence",
                              dtype="int32" if embedding else "float32")]
        if embedding:
            vocab, dim = embedding
            layers.append(keras.layers.Embedding(vocab, dim, name="embedding"))
        kwargs = {"name": "rnn"}
        if activation:
            kwargs["activation"] = activation
        if recurrent_init is not None:
            kwargs["recurrent_initializer"] = recurrent_init(seed)
        kind = {"simple": keras.layers.SimpleRNN, "lstm": keras.layers.LSTM,
                "gru": keras.layers.GRU}[cell]
        layers.append(kind(units, **kwargs))
        binary = data.num_classes == 2
        head, loss = _head(keras, data, binary)
        layers.append(head)
        return _compile(keras.Sequential(layers, name=name), optimizer, loss), data

    return build


def residual(data_fn, num_blocks, width, activation, optimizer, init="he_normal",
             branch_init=None, norm=False, name="residual"):
    """Functional residual MLP: ``stem`` then blocks ``x + dense(act(x))``.

    ``branch_init`` (a standard deviation) overrides the blocks' initializer.
    """

    def build(seed):
        _, keras = import_keras()
        data = data_fn()
        inputs = keras.Input(shape=data.x_train.shape[1:], name="features")
        x = keras.layers.Dense(width, activation=activation, kernel_initializer=_initializer(init, seed),
                               name="stem")(inputs)
        for i in range(num_blocks):
            kernel = _initializer(branch_init if branch_init is not None else init, seed + i + 1)
            branch = x
            if norm:
                branch = keras.layers.LayerNormalization(name=f"norm_{i + 1}")(branch)
            branch = keras.layers.Dense(width, activation=activation, kernel_initializer=kernel,
                                        name=f"block_{i + 1}")(branch)
            x = keras.layers.Add(name=f"add_{i + 1}")([x, branch])
        head, loss = _head(keras, data, False)
        outputs = head(x)
        return _compile(keras.Model(inputs, outputs, name=name), optimizer, loss), data

    return build


def branched(data_fn, depth, width, activations, optimizer, init="glorot_uniform", bias=None,
             name="branched"):
    """Functional model with two parallel Dense towers joined by concatenation.

    ``activations`` is one activation per tower; ``bias`` optionally maps a layer
    name to a constant bias.
    """

    def build(seed):
        _, keras = import_keras()
        data = data_fn()
        inputs = keras.Input(shape=data.x_train.shape[1:], name="features")
        towers = []
        for t, activation in enumerate(activations):
            x = inputs
            for i in range(depth):
                layer_name = f"tower{t + 1}_dense_{i + 1}"
                x = keras.layers.Dense(
                    width, activation=activation,
                    kernel_initializer=_initializer(init, seed + 10 * t + i),
                    bias_initializer=keras.initializers.Constant((bias or {}).get(layer_name, 0.0)),
                    name=layer_name)(x)
            towers.append(x)
        joined = keras.layers.Concatenate(name="join")(towers)
        joined = keras.layers.Dense(width, activation="relu", name="merge")(joined)
        head, loss = _head(keras, data, False)
        return _compile(keras.Model(inputs, head(joined), name=name), optimizer, loss), data

    return build


def _orthogonal(gain):
    def make(seed):
        _, keras = import_keras()
        return keras.initializers.Orthogonal(gain=gain, seed=seed)

    return make


# --------------------------------------------------------------------------
# The zoo

def _e(name, family, label, builder, description, **kwargs):
    return Entry(name, family, label, builder, description, **kwargs)


def _tags(optimizer, activation, init, norm, data):
    return {"optimizer": optimizer[0], "learning_rate": optimizer[1], "activation": activation,
            "init": init, "normalization": norm, "data": data}


ZOO: list[Entry] = [
    # ---- healthy, including the hard controls --------------------------------
    _e("mlp-relu-he-adam-digits", "mlp", "healthy",
       mlp(digits, (4, 64), "relu", ("adam", 1e-3), init="he_normal", name="mlp_relu_adam"),
       "4x64 ReLU MLP, He init, Adam 1e-3, digits", quick=True,
       tags=_tags(("adam", 1e-3), "relu", "default", None, "digits")),
    _e("shallow-sigmoid-sgd-cancer", "mlp", "healthy",
       mlp(breast_cancer, (1, 32), "sigmoid", ("sgd", 0.5), name="shallow_sigmoid"),
       "hard control: 1 sigmoid hidden layer, SGD 0.5, breast cancer", quick=True,
       tags=_tags(("sgd", 0.5), "sigmoid", "default", None, "breast_cancer")),
    _e("two-sigmoid-adam-iris", "mlp", "healthy",
       mlp(iris, (2, 16), "sigmoid", ("adam", 1e-2), name="two_sigmoid"),
       "hard control: 2 sigmoid hidden layers, Adam 1e-2, iris",
       tags=_tags(("adam", 1e-2), "sigmoid", "default", None, "iris")),
    _e("mlp-tanh-rmsprop-wine", "mlp", "healthy",
       mlp(wine, (3, 32), "tanh", ("rmsprop", 1e-3), name="mlp_tanh_rmsprop"),
       "3x32 tanh MLP, Glorot, RMSprop 1e-3, wine",
       tags=_tags(("rmsprop", 1e-3), "tanh", "default", None, "wine")),
    _e("mlp-selu-sgd-digits", "mlp", "healthy",
       mlp(digits, (6, 64), "selu", ("sgd", 0.05), init="lecun_normal", name="mlp_selu"),
       "6x64 SELU MLP, LeCun init, SGD 0.05, digits",
       tags=_tags(("sgd", 0.05), "selu", "default", None, "digits")),
    _e("mlp-gelu-adam-cancer", "mlp", "healthy",
       mlp(breast_cancer, (4, 32), "gelu", ("adam", 1e-3), binary=True, name="mlp_gelu"),
       "4x32 GELU MLP, Adam 1e-3, breast cancer (sigmoid output)",
       tags=_tags(("adam", 1e-3), "gelu", "default", None, "breast_cancer")),
    _e("mlp-relu-momentum-moons", "mlp", "healthy",
       mlp(moons, (3, 32), "relu", ("momentum", 0.05), init="he_normal", name="mlp_moons"),
       "3x32 ReLU MLP, SGD+momentum 0.05, two moons",
       tags=_tags(("momentum", 0.05), "relu", "default", None, "moons")),
    _e("deep-sigmoid-batchnorm-digits", "mlp", "healthy",
       mlp(digits, (10, 32), "sigmoid", ("adam", 1e-3), norm="batch", name="deep_sigmoid_bn"),
       "hard control: 10 sigmoid layers rescued by batch norm, Adam, digits",
       tags=_tags(("adam", 1e-3), "sigmoid", "default", "batch", "digits")),
    _e("deep-tanh-layernorm-wine", "mlp", "healthy",
       mlp(wine, (8, 32), "tanh", ("rmsprop", 1e-3), norm="layer", name="deep_tanh_ln"),
       "hard control: 8 tanh layers with layer norm, RMSprop, wine",
       tags=_tags(("rmsprop", 1e-3), "tanh", "default", "layer", "wine")),
    _e("residual-gelu-digits", "residual", "healthy",
       residual(digits, 10, 32, "gelu", ("adam", 1e-3), name="residual_gelu"),
       "hard control: 10 residual GELU blocks without normalization, Adam, digits",
       tags=_tags(("adam", 1e-3), "gelu", "default", None, "digits")),
    _e("residual-sigmoid-sgd-digits", "residual", "healthy",
       residual(digits, 10, 32, "sigmoid", ("sgd", 0.1), init="glorot_uniform",
                name="residual_sigmoid"),
       "hard control: 10 residual sigmoid blocks (identity path), SGD 0.1, digits",
       tags=_tags(("sgd", 0.1), "sigmoid", "default", None, "digits")),
    _e("branched-relu-tanh-cancer", "branched", "healthy",
       branched(breast_cancer, 3, 32, ("relu", "tanh"), ("rmsprop", 1e-3), name="branched"),
       "two towers (ReLU, tanh) concatenated, RMSprop, breast cancer",
       tags=_tags(("rmsprop", 1e-3), "relu+tanh", "default", None, "breast_cancer")),
    _e("cnn-relu-adam-digits", "cnn", "healthy",
       cnn((16, 32), "relu", ("adam", 3e-3), init="he_normal", name="cnn_relu"),
       "2 conv ReLU layers, Adam 3e-3, digits images",
       tags=_tags(("adam", 3e-3), "relu", "default", None, "digits")),
    _e("cnn-batchnorm-sgd-digits", "cnn", "healthy",
       cnn((16, 32, 32), "relu", ("momentum", 0.05), norm=True, name="cnn_bn"),
       "3 conv layers with batch norm, SGD+momentum, digits images",
       tags=_tags(("momentum", 0.05), "relu", "default", "batch", "digits")),
    _e("lstm-short-recall", "rnn", "healthy",
       rnn(lambda: recall_first(10), "lstm", 32, ("adam", 1e-2), name="lstm_short"),
       "hard control: LSTM over 10 steps recalling the first, Adam 1e-2", quick=True,
       tags=_tags(("adam", 1e-2), "tanh", "default", None, "recall-first-10")),
    _e("gru-short-adding", "rnn", "healthy",
       rnn(lambda: adding(12), "gru", 32, ("adam", 1e-2), name="gru_short"),
       "GRU over a 12-step adding problem, Adam 1e-2",
       tags=_tags(("adam", 1e-2), "tanh", "default", None, "adding-12")),
    _e("simplernn-short-recall", "rnn", "healthy",
       rnn(lambda: recall_first(8), "simple", 32, ("rmsprop", 3e-3), name="simplernn_short"),
       "SimpleRNN over 8 steps recalling the first, RMSprop 3e-3",
       tags=_tags(("rmsprop", 3e-3), "tanh", "default", None, "recall-first-8")),
    _e("embedding-lstm-contains", "embedding-rnn", "healthy",
       rnn(lambda: tokens_contains(16), "lstm", 32, ("adam", 1e-2), embedding=(24, 16),
           name="embedding_lstm"),
       "Embedding + LSTM over 16 tokens: does a marker token occur? Adam 1e-2",
       tags=_tags(("adam", 1e-2), "tanh", "default", None, "tokens-contains-16")),

    # ---- vanishing ------------------------------------------------------------
    _e("deep-sigmoid-sgd-digits", "mlp", "vanishing",
       mlp(digits, (12, 32), "sigmoid", ("sgd", 0.1), name="deep_sigmoid"),
       "12 sigmoid layers, Glorot, SGD 0.1, digits", quick=True,
       tags=_tags(("sgd", 0.1), "sigmoid", "default", None, "digits")),
    _e("tiny-tanh-sgd-digits", "mlp", "vanishing",
       mlp(digits, (10, 32), "tanh", ("sgd", 0.05), init=0.01, name="tiny_tanh"),
       "10 tanh layers, N(0, 0.01) init, SGD 0.05, digits",
       tags=_tags(("sgd", 0.05), "tanh", "tiny", None, "digits")),
    _e("deep-sigmoid-rmsprop-wine", "mlp", "vanishing",
       mlp(wine, (10, 32), "sigmoid", ("rmsprop", 1e-4), name="deep_sigmoid_rmsprop"),
       "10 sigmoid layers, RMSprop 1e-4, wine",
       tags=_tags(("rmsprop", 1e-4), "sigmoid", "default", None, "wine")),
    _e("deep-sigmoid-adam-cancer", "mlp", "vanishing",
       mlp(breast_cancer, (12, 32), "sigmoid", ("adam", 1e-4), binary=True, name="deep_sigmoid_adam"),
       "12 sigmoid layers, Adam 1e-4, breast cancer",
       tags=_tags(("adam", 1e-4), "sigmoid", "default", None, "breast_cancer")),
    _e("tiny-sigmoid-momentum-iris", "mlp", "vanishing",
       mlp(iris, (8, 16), "sigmoid", ("momentum", 0.01), init=0.05, name="tiny_sigmoid"),
       "8 sigmoid layers, N(0, 0.05) init, SGD+momentum 0.01, iris",
       tags=_tags(("momentum", 0.01), "sigmoid", "tiny", None, "iris")),
    _e("cnn-sigmoid-sgd-digits", "cnn", "vanishing",
       cnn((16, 16, 16, 16, 16, 16), "sigmoid", ("sgd", 0.05), name="cnn_sigmoid"),
       "6 conv sigmoid layers, SGD 0.05, digits images",
       tags=_tags(("sgd", 0.05), "sigmoid", "default", None, "digits")),
    _e("branched-sigmoid-sgd-digits", "branched", "vanishing",
       branched(digits, 8, 32, ("sigmoid", "sigmoid"), ("sgd", 0.05), name="branched_sigmoid"),
       "two 8-layer sigmoid towers concatenated, SGD 0.05, digits",
       tags=_tags(("sgd", 0.05), "sigmoid", "default", None, "digits")),
    _e("simplernn-long-recall", "rnn", "vanishing",
       rnn(lambda: recall_first(100), "simple", 16, ("adam", 1e-3), name="simplernn_long"),
       "SimpleRNN over 100 steps recalling the first, Adam 1e-3", first_bad_layer="rnn",
       steps=150, quick=True,
       tags=_tags(("adam", 1e-3), "tanh", "default", None, "recall-first-100")),
    _e("lstm-long-recall", "rnn", "vanishing",
       rnn(lambda: recall_first(120), "lstm", 16, ("sgd", 0.1), name="lstm_long"),
       "LSTM over 120 steps recalling the first, SGD 0.1", first_bad_layer="rnn", steps=150,
       tags=_tags(("sgd", 0.1), "tanh", "default", None, "recall-first-120")),
    _e("gru-long-adding", "rnn", "vanishing",
       rnn(lambda: adding(100), "gru", 16, ("rmsprop", 1e-4), name="gru_long"),
       "GRU over a 100-step adding problem, RMSprop 1e-4", first_bad_layer="rnn", steps=150,
       tags=_tags(("rmsprop", 1e-4), "tanh", "default", None, "adding-100")),
    _e("embedding-simplernn-long", "embedding-rnn", "vanishing",
       rnn(lambda: tokens_first(80), "simple", 16, ("sgd", 0.05), embedding=(24, 8),
           recurrent_init=_orthogonal(0.5), name="embedding_simplernn"),
       "Embedding + SimpleRNN (orthogonal x0.5 recurrence) over 80 tokens, first token's class, SGD",
       first_bad_layer="rnn", steps=150,
       tags=_tags(("sgd", 0.05), "tanh", "default", None, "tokens-first-80")),

    # ---- exploding ------------------------------------------------------------
    _e("large-init-relu-sgd-digits", "mlp", "exploding",
       mlp(digits, (8, 32), "relu", ("sgd", 0.01), init=1.0, name="large_init_relu"),
       "8 ReLU layers, N(0, 1) init, SGD 0.01, digits", quick=True,
       tags=_tags(("sgd", 0.01), "relu", "large", None, "digits")),
    _e("high-lr-relu-sgd-digits", "mlp", "exploding",
       mlp(digits, (6, 32), "relu", ("sgd", 3.0), init="he_normal", name="high_lr_relu"),
       "6 ReLU layers, He init, SGD at lr 3.0, digits",
       tags=_tags(("sgd", 3.0), "relu", "default", None, "digits")),
    _e("high-lr-adam-cancer", "mlp", "exploding",
       mlp(breast_cancer, (4, 32), "relu", ("adam", 20.0), init="he_normal", name="high_lr_adam"),
       "4 ReLU layers, Adam at lr 20, breast cancer",
       tags=_tags(("adam", 20.0), "relu", "default", None, "breast_cancer")),
    _e("high-lr-rmsprop-wine", "mlp", "exploding",
       mlp(wine, (4, 32), "selu", ("rmsprop", 30.0), init="lecun_normal", name="high_lr_rmsprop"),
       "4 SELU layers, RMSprop at lr 30, wine",
       tags=_tags(("rmsprop", 30.0), "selu", "default", None, "wine")),
    _e("high-lr-momentum-tanh-cancer", "mlp", "exploding",
       mlp(breast_cancer, (4, 32), "tanh", ("momentum", 2.0), name="high_lr_momentum"),
       "4 tanh layers, SGD+momentum at lr 2.0, breast cancer",
       tags=_tags(("momentum", 2.0), "tanh", "default", None, "breast_cancer")),
    _e("large-init-selu-sgd-digits", "mlp", "exploding",
       mlp(digits, (8, 32), "selu", ("sgd", 0.01), init=1.0, name="large_init_selu"),
       "8 SELU layers, N(0, 1) init, SGD 0.01, digits",
       tags=_tags(("sgd", 0.01), "selu", "large", None, "digits")),
    _e("large-init-gelu-momentum-iris", "mlp", "exploding",
       mlp(iris, (8, 32), "gelu", ("momentum", 0.01), init=1.5, name="large_init_gelu"),
       "8 GELU layers, N(0, 1.5) init, SGD+momentum 0.01, iris",
       tags=_tags(("momentum", 0.01), "gelu", "large", None, "iris")),
    _e("large-init-cnn-relu", "cnn", "exploding",
       cnn((16, 16, 16, 16), "relu", ("sgd", 0.1), init=1.0, name="large_init_cnn"),
       "4 conv ReLU layers, N(0, 1) init, SGD 0.1, digits images",
       tags=_tags(("sgd", 0.1), "relu", "large", None, "digits")),
    _e("residual-large-init-digits", "residual", "exploding",
       residual(digits, 10, 32, "relu", ("sgd", 0.01), branch_init=0.5, name="residual_large"),
       "10 residual ReLU blocks without normalization, N(0, 0.5) branches, SGD, digits",
       tags=_tags(("sgd", 0.01), "relu", "large", None, "digits")),
    _e("simplernn-relu-orthogonal-gain3", "rnn", "exploding",
       rnn(lambda: recall_first(40), "simple", 16, ("sgd", 0.01), activation="relu",
           recurrent_init=_orthogonal(3.0), name="simplernn_explode"),
       "ReLU SimpleRNN with orthogonal(gain 3) recurrence over 40 steps, SGD",
       first_bad_layer="rnn", steps=200,
       tags=_tags(("sgd", 0.01), "relu", "large", None, "recall-first-40")),
    _e("lstm-high-lr-sgd", "rnn", "exploding",
       rnn(lambda: adding(20), "lstm", 32, ("sgd", 200.0), name="lstm_high_lr"),
       "LSTM over a 20-step adding problem, SGD at lr 200", steps=200,
       tags=_tags(("sgd", 200.0), "tanh", "default", None, "adding-20")),
    _e("embedding-simplernn-relu-gain3", "embedding-rnn", "exploding",
       rnn(lambda: tokens_contains(30), "simple", 32, ("sgd", 0.01), embedding=(24, 16),
           activation="relu", recurrent_init=_orthogonal(3.0), name="embedding_simplernn_explode"),
       "Embedding + ReLU SimpleRNN with orthogonal(gain 3) recurrence over 30 tokens, SGD",
       first_bad_layer="rnn", steps=200,
       tags=_tags(("sgd", 0.01), "relu", "large", None, "tokens-contains-30")),
    _e("embedding-gru-high-lr", "embedding-rnn", "exploding",
       rnn(lambda: tokens_contains(16), "gru", 32, ("rmsprop", 5.0), embedding=(24, 16),
           name="embedding_gru_high_lr"),
       "Embedding + GRU over 16 tokens, RMSprop at lr 5.0", steps=200,
       tags=_tags(("rmsprop", 5.0), "tanh", "default", None, "tokens-contains-16")),

    # ---- dead units ------------------------------------------------------------
    _e("dead-relu-from-layer-3-digits", "mlp", "dead_units",
       mlp(digits, (6, 32), "relu", ("adam", 1e-3), init="he_normal",
           bias=[0.0, 0.0, -10.0, -10.0, -10.0, -10.0], name="dead_from_3"),
       "6 ReLU layers whose layers 3-6 start dead (bias -10), Adam, digits",
       first_bad_layer="dense_3", quick=True,
       tags=_tags(("adam", 1e-3), "relu", "default", None, "digits")),
    _e("dead-relu-bias-cancer", "mlp", "dead_units",
       mlp(breast_cancer, (4, 32), "relu", ("sgd", 0.1), init="he_normal",
           bias=[0.0, -6.0, -6.0, -6.0], name="dead_from_2"),
       "4 ReLU layers, layers 2-4 with bias -6, SGD 0.1, breast cancer",
       first_bad_layer="dense_2",
       tags=_tags(("sgd", 0.1), "relu", "default", None, "breast_cancer")),
    _e("dead-relu-negative-init-digits", "mlp", "dead_units",
       mlp(digits, (4, 32), "relu", ("rmsprop", 1e-3),
           init="negative", name="dead_negative_init"),
       "4 ReLU layers with all-negative initial kernels on non-negative pixels, RMSprop",
       first_bad_layer="dense_1",
       tags=_tags(("rmsprop", 1e-3), "relu", "negative", None, "digits")),
    _e("dead-cnn-bias", "cnn", "dead_units",
       cnn((16, 32, 32), "relu", ("adam", 1e-3), init="he_normal", bias=[0.0, -8.0, -8.0],
           name="dead_cnn"),
       "3 conv ReLU layers, conv 2-3 with bias -8, Adam, digits images",
       first_bad_layer="conv_2",
       tags=_tags(("adam", 1e-3), "relu", "default", None, "digits")),
    _e("dead-branch-functional", "branched", "dead_units",
       branched(wine, 3, 32, ("relu", "relu"), ("adam", 1e-3), init="he_normal",
                bias={"tower2_dense_1": -8.0, "tower2_dense_2": -8.0, "tower2_dense_3": -8.0,
                      "tower1_dense_2": -8.0, "tower1_dense_3": -8.0},
                name="dead_branch"),
       "two ReLU towers, most layers with bias -8, Adam, wine",
       first_bad_layer="tower2_dense_1",
       tags=_tags(("adam", 1e-3), "relu", "default", None, "wine")),
    _e("high-lr-cnn-dead", "cnn", "dead_units",
       cnn((16, 32), "relu", ("sgd", 5.0), init="he_normal", name="high_lr_cnn"),
       "2 conv ReLU layers killed by SGD at lr 5.0 (dying ReLU), digits images",
       tags=_tags(("sgd", 5.0), "relu", "default", None, "digits")),
    _e("dead-relu-moons-sgd", "mlp", "dead_units",
       mlp(moons, (5, 32), "relu", ("sgd", 0.05), init="he_normal",
           bias=[0.0, 0.0, -5.0, -5.0, -5.0], name="dead_moons"),
       "5 ReLU layers, layers 3-5 with bias -5, SGD, two moons",
       first_bad_layer="dense_3",
       tags=_tags(("sgd", 0.05), "relu", "default", None, "moons")),

    # ---- saturation --------------------------------------------------------------
    _e("sigmoid-raw-wine", "mlp", "saturation",
       mlp(lambda: wine(raw=True), (1, 32), "sigmoid", ("adam", 1e-3), name="sigmoid_raw_wine"),
       "1 sigmoid hidden layer on unscaled wine features (proline ~1000), Adam",
       first_bad_layer="dense_1", quick=True,
       tags=_tags(("adam", 1e-3), "sigmoid", "default", None, "wine-raw")),
    _e("tanh-raw-cancer", "mlp", "saturation",
       mlp(lambda: breast_cancer(raw=True), (1, 32), "tanh", ("sgd", 1e-3), binary=True,
           name="tanh_raw_cancer"),
       "1 tanh hidden layer on unscaled breast cancer features, SGD",
       first_bad_layer="dense_1",
       tags=_tags(("sgd", 1e-3), "tanh", "default", None, "breast_cancer-raw")),
    _e("tanh-large-init-cancer", "mlp", "saturation",
       mlp(breast_cancer, (1, 32), "tanh", ("rmsprop", 1e-3), init=5.0, name="tanh_large_init"),
       "1 tanh hidden layer, N(0, 5) init, RMSprop, breast cancer",
       first_bad_layer="dense_1",
       tags=_tags(("rmsprop", 1e-3), "tanh", "large", None, "breast_cancer")),
    _e("sigmoid-large-bias-iris", "mlp", "saturation",
       mlp(iris, (1, 16), "sigmoid", ("sgd", 0.1), bias=[10.0], name="sigmoid_large_bias"),
       "1 sigmoid hidden layer with bias 10, SGD 0.1, iris",
       first_bad_layer="dense_1",
       tags=_tags(("sgd", 0.1), "sigmoid", "default", None, "iris")),
    _e("cnn-sigmoid-large-init", "cnn", "saturation",
       cnn((16,), "sigmoid", ("adam", 1e-3), init=8.0, name="cnn_sigmoid_large"),
       "1 conv sigmoid layer with N(0, 8) init, Adam, digits images",
       first_bad_layer="conv_1",
       tags=_tags(("adam", 1e-3), "sigmoid", "large", None, "digits")),
    _e("tanh-large-init-moons", "mlp", "saturation",
       mlp(moons, (1, 64), "tanh", ("adam", 1e-3), init=20.0, name="tanh_large_moons"),
       "1 tanh hidden layer, N(0, 20) init, Adam, two moons",
       first_bad_layer="dense_1",
       tags=_tags(("adam", 1e-3), "tanh", "large", None, "moons")),

    # ---- first hypotheses that the measurements refuted --------------------------
    # Kept on purpose, with the label they were first built to have, so that every
    # run shows the verification rejecting a mislabelled recipe.
    _e("large-init-selu-adam-digits", "mlp", "exploding",
       mlp(digits, (8, 32), "selu", ("adam", 1e-3), init=1.0, name="large_init_selu_adam"),
       "8 SELU layers, N(0, 1) init, Adam 1e-3 (Adam's normalised steps cope: it learns)",
       tags=_tags(("adam", 1e-3), "selu", "large", None, "digits")),
    _e("residual-relu-digits", "residual", "healthy",
       residual(digits, 10, 32, "relu", ("adam", 1e-3), name="residual_relu"),
       "10 residual ReLU blocks, Adam (up to half the late blocks' units die)",
       tags=_tags(("adam", 1e-3), "relu", "default", None, "digits")),
]

BY_NAME = {entry.name: entry for entry in ZOO}


# --------------------------------------------------------------------------
# The independent measurement

@dataclasses.dataclass
class Trace:
    """What a plain GradientTape training run measured.

    Per step: ``loss``, ``accuracy``, ``global_grad_norm`` and, per kernel
    layer, ``kernel_grad_norm`` / ``kernel_grad_rms``.  Per check (one per
    "epoch" of ``steps_per_epoch`` steps, after its updates; check 0 is before
    training): the records of :func:`_check`, i.e. gradients and layer outputs
    on the fixed first training batch, layer statistics on 256 training
    samples, the per-timestep gradient of recurrent layers, and the epoch's
    train and held-out loss and accuracy.
    """

    flow_layers: list
    output_layer: str
    layer_info: dict
    loss: list
    accuracy: list
    global_grad_norm: list
    kernel_grad_norm: dict
    kernel_grad_rms: dict
    checks: list
    nonfinite_step: int | None
    steps_per_epoch: int
    num_epochs: int
    seconds: float
    learning_rate: float
    loss_name: str
    input_range: tuple
    label_range: tuple
    chance_loss: float


def _kernel_variables(layer):
    """The layer's kernel-like weights (kernels, recurrent kernels, embeddings)."""
    found = []
    for variable in layer.trainable_weights:
        name = variable.path.rsplit("/", 1)[-1]
        if name.endswith("kernel") or name == "embeddings":
            found.append(variable)
    return found


def _activation_of(layer) -> str | None:
    activation = getattr(layer, "activation", None)
    if activation is None:
        return None
    return getattr(activation, "__name__", str(activation))


def measure(model, data: Dataset, *, steps: int, batch_size: int, seed: int = 0,
            num_epochs: int = 20) -> Trace:
    """Train a copy of ``model`` with a plain GradientTape loop and record everything.

    The copy starts from the model's weights with a fresh optimizer of the same
    configuration, sees shuffled batches of ``batch_size`` and runs ``steps``
    steps (stopping after the first non-finite loss or gradient).
    """
    import time

    tf, keras = import_keras()
    started = time.perf_counter()
    keras.utils.set_random_seed(seed)
    work = keras.models.clone_model(model)
    work.set_weights(model.get_weights())
    optimizer = model.optimizer.__class__.from_config(model.optimizer.get_config())
    loss_name = model.loss if isinstance(model.loss, str) else "sparse_categorical_crossentropy"
    loss_function = keras.losses.get(loss_name)
    binary = loss_name == "binary_crossentropy"

    layers = list(work.layers)
    flow = [layer for layer in layers if _kernel_variables(layer)
            and type(layer).__name__ not in NORMALIZATION]
    flow_names = [layer.name for layer in flow]
    kernels = [_kernel_variables(layer) for layer in flow]
    variables = work.trainable_weights
    optimizer.build(variables)
    recurrent = [layer for layer in layers if isinstance(layer, keras.layers.RNN)]
    sequential = isinstance(work, keras.Sequential)
    observed = [layer for layer in layers if not isinstance(layer, keras.layers.InputLayer)]
    observer = keras.Model(work.inputs[0], [layer.output for layer in observed])

    def targets(y):
        return tf.reshape(tf.cast(y, "float32"), (-1, 1)) if binary else y

    def accuracy_of(y, y_pred):
        if binary:
            hit = tf.equal(tf.cast(y_pred[:, 0] > 0.5, "int32"), tf.cast(y, "int32"))
        else:
            hit = tf.equal(tf.cast(tf.argmax(y_pred, axis=-1), "int32"), tf.cast(y, "int32"))
        return tf.reduce_mean(tf.cast(hit, "float32"))

    def loss_of(y, y_pred):
        return tf.reduce_mean(loss_function(targets(y), y_pred))

    def train_step(x, y):
        with tf.GradientTape() as tape:
            y_pred = work(x, training=True)
            loss = loss_of(y, y_pred)
        grads = tape.gradient(loss, variables)
        grads = [tf.convert_to_tensor(g) if g is not None else tf.zeros_like(v)
                 for g, v in zip(grads, variables)]
        by_id = {id(v): g for v, g in zip(variables, grads)}
        squares = [tf.add_n([tf.reduce_sum(tf.square(by_id[id(v)])) for v in group]) for group in kernels]
        total = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(g)) for g in grads]))
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])
        optimizer.apply(grads, variables)
        return loss, accuracy_of(y, y_pred), total, tf.stack(squares), finite

    train_step = tf.function(train_step, autograph=False)
    sizes = np.array([sum(int(np.prod(v.shape)) for v in group) for group in kernels], "float64")

    def observe(x, y, eval_x, val_x, val_y):
        """Gradients and layer outputs on the fixed batch, outputs on the eval
        batch, held-out loss and accuracy: one compiled call per check."""
        with tf.GradientTape() as tape:
            y_pred = work(x, training=False)
            loss = loss_of(y, y_pred)
        grads = tape.gradient(loss, variables)
        grads = [tf.convert_to_tensor(g) if g is not None else tf.zeros_like(v)
                 for g, v in zip(grads, variables)]
        val_pred = work(val_x, training=False)
        return (grads, observer(x, training=False), observer(eval_x, training=False),
                loss_of(val_y, val_pred), accuracy_of(val_y, val_pred))

    observe = tf.function(observe, autograph=False)

    def timestep_gradients(x, y):
        """Per-timestep norms of d loss / d (input of the first recurrent layer)."""
        with tf.GradientTape() as tape:
            h = x
            watched = None
            for layer in work.layers:
                if watched is None and isinstance(layer, keras.layers.RNN):
                    tape.watch(h)
                    watched = h
                h = layer(h, training=False)
            loss = loss_of(y, h)
        grad = tape.gradient(loss, watched)
        return tf.sqrt(tf.reduce_sum(tf.square(grad), axis=[0, 2]))

    timestep_gradients = (tf.function(timestep_gradients, autograph=False)
                          if recurrent and sequential else None)

    rng = np.random.default_rng(seed)
    num_train = len(data.x_train)
    fixed_x, fixed_y = data.x_train[:batch_size], data.y_train[:batch_size]
    eval_index = rng.permutation(num_train)[:256]
    eval_x = data.x_train[eval_index]
    steps_per_epoch = max(1, steps // num_epochs)

    def batches():
        while True:
            order = rng.permutation(num_train)
            for start in range(0, num_train - batch_size + 1, batch_size):
                index = order[start:start + batch_size]
                yield data.x_train[index], data.y_train[index]

    def check(epoch_losses, epoch_accuracies):
        grads, fixed_outputs, eval_outputs, val_loss, val_accuracy = observe(
            tf.constant(fixed_x), tf.constant(fixed_y), tf.constant(eval_x),
            tf.constant(data.x_val), tf.constant(data.y_val))
        grads = [g.numpy() for g in grads]
        by_id = {id(v): g for v, g in zip(variables, grads)}
        record = {
            "train_loss": float(np.mean(epoch_losses)) if epoch_losses else math.nan,
            "train_accuracy": float(np.mean(epoch_accuracies)) if epoch_accuracies else math.nan,
            "zero_grad_fraction": float(sum(np.sum(g == 0) for g in grads) / sum(g.size for g in grads)),
            "nonfinite_grads": bool(any(not np.all(np.isfinite(g)) for g in grads)),
            "nonfinite_weights": bool(any(not np.all(np.isfinite(v.numpy())) for v in variables)),
            "kernel_grad_norm": {}, "kernel_grad_mean": {}, "kernel_grad_mean_abs": {},
            "kernel_mean": {}, "layers": {},
        }
        for layer, group in zip(flow, kernels):
            main = by_id[id(group[0])]
            record["kernel_grad_norm"][layer.name] = float(np.linalg.norm(main))
            record["kernel_grad_mean"][layer.name] = float(np.mean(main))
            record["kernel_grad_mean_abs"][layer.name] = float(np.mean(np.abs(main)))
            record["kernel_mean"][layer.name] = float(np.mean(group[0].numpy()))
        record["val_loss"] = float(val_loss)
        record["val_accuracy"] = float(val_accuracy)
        for layer, fixed_out, eval_out in zip(observed, fixed_outputs, eval_outputs):
            fixed_out = np.asarray(fixed_out, dtype="float64")
            eval_out = np.asarray(eval_out, dtype="float64")
            stats = {"mean": float(np.mean(fixed_out)),
                     "nonfinite": bool(not np.all(np.isfinite(fixed_out))),
                     "nonpositive_fraction": float(np.mean(fixed_out <= 0.0)),
                     "activation": _activation_of(layer)}
            activation = stats["activation"]
            if activation == "relu" and eval_out.ndim >= 2:
                alive = np.abs(eval_out).reshape(-1, eval_out.shape[-1]).max(axis=0) > 0
                stats["dead_fraction"] = float(1.0 - alive.mean())
            if activation == "sigmoid":
                stats["saturated_fraction"] = float(np.mean((eval_out < 0.01) | (eval_out > 0.99)))
                # DeepDiagnosis counts pre-activations beyond +-5: sigmoid(5) = 0.99331.
                low, high = 1 / (1 + math.exp(5)), 1 / (1 + math.exp(-5))
                stats["preactivation_beyond_5"] = float(np.mean((fixed_out <= low) | (fixed_out >= high)))
            elif activation == "tanh":
                stats["saturated_fraction"] = float(np.mean(np.abs(eval_out) > 0.99))
                stats["preactivation_beyond_5"] = float(np.mean(np.abs(fixed_out) >= math.tanh(5)))
            record["layers"][layer.name] = stats
        if timestep_gradients is not None:
            norms = timestep_gradients(tf.constant(fixed_x), tf.constant(fixed_y)).numpy()
            record["timestep_grad_norms"] = norms.astype("float64").tolist()
        return record

    losses, accuracies, global_norms = [], [], []
    grad_norms = {name: [] for name in flow_names}
    grad_rms = {name: [] for name in flow_names}
    checks = [check([], [])]
    epoch_losses, epoch_accuracies = [], []
    nonfinite_step = None
    stream = batches()
    for step in range(steps):
        x, y = next(stream)
        loss, accuracy, total, squares, finite = train_step(tf.constant(x), tf.constant(y))
        loss, total, squares = float(loss), float(total), squares.numpy().astype("float64")
        losses.append(loss)
        accuracies.append(float(accuracy))
        global_norms.append(total)
        epoch_losses.append(loss)
        epoch_accuracies.append(float(accuracy))
        for name, square, size in zip(flow_names, squares, sizes):
            grad_norms[name].append(math.sqrt(square) if square >= 0 else math.nan)
            grad_rms[name].append(math.sqrt(square / size) if square >= 0 else math.nan)
        bad = not (math.isfinite(loss) and bool(finite))
        if bad or (step + 1) % steps_per_epoch == 0:
            checks.append(check(epoch_losses, epoch_accuracies))
            epoch_losses, epoch_accuracies = [], []
        if bad:
            nonfinite_step = step
            break
    learning_rate = float(np.asarray(optimizer.learning_rate))
    x_all = data.x_train.astype("float64")
    output_layer = flow_names[-1]
    info = {layer.name: {"class_name": type(layer).__name__, "activation": _activation_of(layer),
                         "recurrent": isinstance(layer, keras.layers.RNN)} for layer in layers}
    return Trace(flow_layers=flow_names, output_layer=output_layer, layer_info=info, loss=losses,
                 accuracy=accuracies, global_grad_norm=global_norms, kernel_grad_norm=grad_norms,
                 kernel_grad_rms=grad_rms, checks=checks, nonfinite_step=nonfinite_step,
                 steps_per_epoch=steps_per_epoch, num_epochs=num_epochs,
                 seconds=time.perf_counter() - started, learning_rate=learning_rate,
                 loss_name=loss_name, input_range=(float(x_all.min()), float(x_all.max())),
                 label_range=(float(data.y_train.min()), float(data.y_train.max())),
                 chance_loss=_chance_loss(data.y_train))


def _chance_loss(labels) -> float:
    """Cross-entropy of always predicting the class priors (nats)."""
    _, counts = np.unique(np.asarray(labels).ravel(), return_counts=True)
    priors = counts / counts.sum()
    return float(-(priors * np.log(priors)).sum())


# --------------------------------------------------------------------------
# The label the measurements support

def _median(values):
    values = np.asarray(values, dtype="float64")
    values = values[np.isfinite(values)]
    return float(np.median(values)) if values.size else math.nan


def evidence(trace: Trace) -> dict:
    """The numbers the verdict rests on, as plain data."""
    losses = np.asarray(trace.loss, dtype="float64")
    finite_losses = losses[np.isfinite(losses)]
    head = float(np.median(finite_losses[:5])) if finite_losses.size else math.nan
    tail = float(np.median(finite_losses[-20:])) if finite_losses.size else math.nan
    norms = np.asarray(trace.global_grad_norm, dtype="float64")
    finite_norms = norms[np.isfinite(norms)]
    growth = (float(finite_norms.max() / finite_norms[0])
              if finite_norms.size > 1 and finite_norms[0] > 0 else math.nan)
    nonfinite = trace.nonfinite_step is not None
    output_rms = np.asarray(trace.kernel_grad_rms[trace.output_layer], dtype="float64")
    ratios = {}
    num_flow = len(trace.flow_layers)
    for position, name in enumerate(trace.flow_layers):
        depth = num_flow - 1 - position
        rms = np.asarray(trace.kernel_grad_rms[name], dtype="float64")
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = rms / output_rms
        # A layer whose gradient is exactly zero on most steps has dead units
        # upstream or downstream; that is the dead-units criterion's business.
        exactly_zero = bool(_median(rms) == 0.0) if rms.size else False
        ratios[name] = {"depth": depth, "median_ratio": _median(ratio), "zero": exactly_zero}
    temporal = {}
    timestep = [c["timestep_grad_norms"] for c in trace.checks if "timestep_grad_norms" in c]
    if timestep:
        per_check = []
        for norms_t in timestep:
            norms_t = np.asarray(norms_t, dtype="float64")
            if not np.all(np.isfinite(norms_t)) or norms_t.max() <= 0:
                continue
            # The last timestep is the reference; when only earlier ones carry
            # gradient (it is exactly zero), the largest one is.
            reference = norms_t[-1] if norms_t[-1] > 0 else norms_t.max()
            per_check.append(norms_t[0] / reference)
        first_rnn = next(n for n, i in trace.layer_info.items() if i["recurrent"])
        temporal = {"layer": first_rnn, "num_timesteps": len(timestep[0]),
                    "median_ratio": _median(per_check)}
    last = trace.checks[-1]
    middle = trace.checks[len(trace.checks) // 2]
    dead, saturated = {}, {}
    hidden = [name for name in trace.layer_info if name != trace.output_layer]
    for name in hidden:
        at_end, at_middle = last["layers"].get(name, {}), middle["layers"].get(name, {})
        if "dead_fraction" in at_end:
            dead[name] = min(at_end["dead_fraction"], at_middle.get("dead_fraction", 1.0))
        if "saturated_fraction" in at_end:
            saturated[name] = min(at_end["saturated_fraction"], at_middle.get("saturated_fraction", 1.0))
    return {
        "initial_loss": head, "final_loss": tail, "chance_loss": trace.chance_loss,
        "loss_ratio": tail / head if head and math.isfinite(head) and math.isfinite(tail) else math.nan,
        "max_loss_ratio": float(finite_losses.max() / head) if finite_losses.size and head else math.nan,
        "gradient_growth": growth, "nonfinite_step": trace.nonfinite_step, "nonfinite": nonfinite,
        "depth_ratios": ratios, "temporal": temporal, "dead_fraction": dead,
        "saturated_fraction": saturated,
        "final_val_accuracy": last.get("val_accuracy"),
    }


def verify(trace: Trace) -> dict:
    """Derive a label from the measurements alone.

    Faults are checked in the order exploding, vanishing, dead units,
    saturation (the order in which one masks the next); a model is healthy only
    when it learned and every quantity sits inside the healthy band.  Anything
    else is ``ambiguous``.

    Returns:
        ``{"label", "reasons", "first_bad_layer", "evidence"}``; ``first_bad_layer``
        is the measured start of a depth-wise vanishing or exploding stack (the
        layer nearest the output past the threshold), or the recurrent layer.
    """
    found = evidence(trace)
    learned = (math.isfinite(found["final_loss"]) and found["final_loss"]
               <= LEARNED_LOSS_RATIO * min(found["initial_loss"], found["chance_loss"]))
    reasons = []
    deep = [(name, r) for name, r in found["depth_ratios"].items() if r["depth"] >= 2 and not r["zero"]]
    vanishing_layers = [name for name, r in deep if r["median_ratio"] < VANISHING_RATIO]
    exploding_layers = [name for name, r in deep if r["median_ratio"] > EXPLODING_RATIO]
    temporal = found["temporal"]
    temporal_ratio = temporal.get("median_ratio", math.nan) if temporal else math.nan
    long_enough = bool(temporal) and temporal["num_timesteps"] >= 8

    exploding_evidence = []
    if found["nonfinite"]:
        exploding_evidence.append(f"non-finite loss or gradient at step {found['nonfinite_step']}")
    if math.isfinite(found["gradient_growth"]) and found["gradient_growth"] > GRADIENT_GROWTH:
        exploding_evidence.append(f"gradient norm grew {found['gradient_growth']:.3g}x")
    if exploding_layers:
        exploding_evidence.append(f"{exploding_layers[-1]} gets over {EXPLODING_RATIO:g}x the output "
                                  "layer's gradient")
    if long_enough and temporal_ratio > TEMPORAL_EXPLODING_RATIO:
        exploding_evidence.append(f"gradient grows {temporal_ratio:.3g}x back in time")
    if math.isfinite(found["max_loss_ratio"]) and found["max_loss_ratio"] > 10:
        exploding_evidence.append(f"loss rose to {found['max_loss_ratio']:.3g}x its start")
    if exploding_evidence and (found["nonfinite"] or not learned):
        first = exploding_layers[-1] if exploding_layers else (
            temporal.get("layer") if long_enough and temporal_ratio > TEMPORAL_EXPLODING_RATIO else None)
        return {"label": "exploding", "reasons": exploding_evidence, "first_bad_layer": first,
                "evidence": found}

    vanishing_evidence = []
    if vanishing_layers:
        vanishing_evidence.append(
            f"{len(vanishing_layers)} layer(s) get under {VANISHING_RATIO:g}x the output layer's "
            f"gradient, from {vanishing_layers[-1]} down")
    if long_enough and temporal_ratio < TEMPORAL_VANISHING_RATIO:
        vanishing_evidence.append(f"the first timestep gets {temporal_ratio:.2g}x the largest "
                                  "timestep gradient")
    if vanishing_evidence and not learned and not exploding_evidence:
        first = vanishing_layers[-1] if vanishing_layers else temporal.get("layer")
        return {"label": "vanishing", "reasons": vanishing_evidence, "first_bad_layer": first,
                "evidence": found}

    dead_layers = [name for name, value in found["dead_fraction"].items() if value >= DEAD_FRACTION]
    if dead_layers and not exploding_evidence and not vanishing_evidence:
        return {"label": "dead_units",
                "reasons": [f"{len(dead_layers)} ReLU layer(s) with >= {DEAD_FRACTION:.0%} units dead "
                            f"from {dead_layers[0]}"],
                "first_bad_layer": dead_layers[0], "evidence": found}

    saturated_layers = [name for name, value in found["saturated_fraction"].items()
                        if value >= SATURATED_FRACTION]
    if saturated_layers and not exploding_evidence and not vanishing_evidence and not dead_layers:
        return {"label": "saturation",
                "reasons": [f"{len(saturated_layers)} layer(s) with >= {SATURATED_FRACTION:.0%} of "
                            f"outputs saturated from {saturated_layers[0]}"],
                "first_bad_layer": saturated_layers[0], "evidence": found}

    low, high = HEALTHY_RATIO_BAND
    problems = []
    if not learned:
        problems.append(f"loss only fell to {found['final_loss']:.3g} (start "
                        f"{found['initial_loss']:.3g}, chance {found['chance_loss']:.3g})")
    # A gradient norm that grows while the loss falls is a model leaving a
    # plateau, not a fault: only the other kinds of evidence disqualify.
    problems.extend(reason for reason in exploding_evidence + vanishing_evidence
                    if "gradient norm grew" not in reason)
    outside = [name for name, r in deep if not low <= r["median_ratio"] <= high]
    if outside:
        problems.append(f"gradient ratio outside [{low:g}, {high:g}] at {', '.join(outside)}")
    # On recall tasks a model that learned rightly puts most of the gradient on
    # the one informative early step, so the band's upper end through time is
    # the exploding criterion itself.
    if long_enough and not low <= temporal_ratio <= TEMPORAL_EXPLODING_RATIO:
        problems.append(f"temporal gradient ratio {temporal_ratio:.2g}")
    if any(v >= HEALTHY_DEAD_OR_SATURATED for v in found["dead_fraction"].values()):
        problems.append("many dead units")
    if any(v >= HEALTHY_DEAD_OR_SATURATED for v in found["saturated_fraction"].values()):
        problems.append("many saturated units")
    if problems:
        return {"label": "ambiguous", "reasons": problems, "first_bad_layer": None, "evidence": found}
    return {"label": "healthy", "reasons": [f"loss fell to {found['loss_ratio']:.2f}x its start; "
                                            "gradients, units and growth inside the healthy band"],
            "first_bad_layer": None, "evidence": found}
