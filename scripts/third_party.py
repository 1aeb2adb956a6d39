"""Third-party models for the benchmark: keras.applications and the Keras docs' text classifiers.

Nothing here was designed for gradadvisor.  Each model comes healthy (as its
authors wrote it, Adam 1e-3) and sabotaged:

``-sigmoid-nonorm``
    every ReLU-family or Swish/GELU activation (fused, ``Activation`` or
    ``ReLU`` layers) becomes a sigmoid and every normalization layer an
    identity, same optimizer;
``-high-lr``
    plain SGD with momentum 0.9 at a learning rate of 10.

Sabotaged entries name their healthy build as the reference fix that the
outcome labeller trains as a control (``outcome_labels.py``); their ``label`` is the
hypothesis (vanishing, exploding) that the outcome confirms or not.

Data: scikit-learn's bundled 8x8 digits, enlarged by pixel repetition to the
smallest input each application accepts (32x32; 72x72 Xception, 75x75
InceptionV3 and InceptionResNetV2), three channels, passed through the
application's own ``preprocess_input``.  The text classifiers read synthetic
reviews whose label is whether "positive" tokens outnumber "negative" ones.

The Keras docs' models are re-typed from the keras.io examples "Text
classification with Transformer" (Apoorv Nandan; ``TransformerBlock``,
``TokenAndPositionEmbedding``, GlobalAveragePooling1D, Dense(20, relu),
2-way softmax) and "Bidirectional LSTM on IMDB" (Embedding(128), two
Bidirectional(LSTM(64)), sigmoid output), with a vocabulary of 1000 and
sequences of 64 tokens instead of 20000 and 200.
"""

from __future__ import annotations

import functools
import re

import numpy as np

import zoo

#: (constructor name, preprocess module, input size, in the --quick subset).
APPLICATIONS = (
    ("MobileNetV2", "mobilenet_v2", 32, True),
    ("ConvNeXtTiny", "convnext", 32, True),
    ("ResNet50", "resnet", 32, True),
    ("EfficientNetB0", "efficientnet", 32, False),
    ("DenseNet121", "densenet", 32, False),
    ("MobileNet", "mobilenet", 32, False),
    ("MobileNetV3Small", "mobilenet_v3", 32, False),
    ("MobileNetV3Large", "mobilenet_v3", 32, False),
    ("VGG16", "vgg16", 32, False),
    ("VGG19", "vgg19", 32, False),
    ("ResNet50V2", "resnet_v2", 32, False),
    ("ResNet101", "resnet", 32, False),
    ("ResNet101V2", "resnet_v2", 32, False),
    ("ResNet152", "resnet", 32, False),
    ("ResNet152V2", "resnet_v2", 32, False),
    ("DenseNet169", "densenet", 32, False),
    ("DenseNet201", "densenet", 32, False),
    ("EfficientNetB1", "efficientnet", 32, False),
    ("EfficientNetB2", "efficientnet", 32, False),
    ("EfficientNetB3", "efficientnet", 32, False),
    ("EfficientNetB4", "efficientnet", 32, False),
    ("EfficientNetB5", "efficientnet", 32, False),
    ("EfficientNetB6", "efficientnet", 32, False),
    ("EfficientNetB7", "efficientnet", 32, False),
    ("EfficientNetV2B0", "efficientnet_v2", 32, False),
    ("EfficientNetV2B1", "efficientnet_v2", 32, False),
    ("EfficientNetV2B2", "efficientnet_v2", 32, False),
    ("EfficientNetV2B3", "efficientnet_v2", 32, False),
    ("EfficientNetV2S", "efficientnet_v2", 32, False),
    ("EfficientNetV2M", "efficientnet_v2", 32, False),
    ("EfficientNetV2L", "efficientnet_v2", 32, False),
    ("ConvNeXtSmall", "convnext", 32, False),
    ("ConvNeXtBase", "convnext", 32, False),
    ("ConvNeXtLarge", "convnext", 32, False),
    ("ConvNeXtXLarge", "convnext", 32, False),
    ("NASNetMobile", "nasnet", 32, False),
    ("NASNetLarge", "nasnet", 32, False),
    ("Xception", "xception", 72, False),
    ("InceptionV3", "inception_v3", 75, False),
    ("InceptionResNetV2", "inception_resnet_v2", 75, False),
)
STEPS = 150
BATCH_SIZE = 32
VOCABULARY, SEQUENCE_LENGTH = 1000, 64
SWAPPED = ("relu", "relu6", "swish", "silu", "gelu", "hard_swish", "hard_silu", "elu", "selu")
NORMALIZATION = ("BatchNormalization", "LayerNormalization", "GroupNormalization")


def _kebab(name: str) -> str:
    """``ConvNeXtTiny`` -> ``convnext-tiny``, ``EfficientNetV2B0`` -> ``efficientnet-v2-b0``."""
    name = name.replace("InceptionResNet", "Inception-ResNet")
    name = re.sub(r"(V\d)", r"-\1", name)
    name = re.sub(r"(?<=V\d)([BSML]\d?|Small|Large)$", r"-\1", name)
    name = re.sub(r"(?<!-)(Tiny|Small|Base|XLarge|Large|Mobile|B\d)$", r"-\1", name)
    return name.lower()


# --------------------------------------------------------------------------
# Data


@functools.lru_cache(maxsize=8)
def digit_images(size: int, preprocess: str) -> zoo.Dataset:
    """Digits enlarged to ``size`` x ``size`` x 3 and preprocessed for an application."""
    from keras import applications

    base = zoo.digits(images=True)
    scale = -(-size // 8)

    def enlarge(x):
        x = np.kron(x[..., 0], np.ones((scale, scale), dtype="float32"))[:, :size, :size]
        x = np.repeat(x[..., None] * 255.0, 3, axis=-1)
        return np.asarray(getattr(applications, preprocess).preprocess_input(x), dtype="float32")

    return zoo.Dataset(f"digits-{size}px", enlarge(base.x_train), base.y_train,
                       enlarge(base.x_val), base.y_val)


@functools.lru_cache(maxsize=1)
def reviews(num_samples: int = 2000, seed: int = 0) -> zoo.Dataset:
    """Synthetic reviews: positive when tokens 2-41 outnumber tokens 42-81."""
    rng = np.random.default_rng(seed)
    x = rng.integers(82, VOCABULARY, size=(num_samples, SEQUENCE_LENGTH)).astype("int32")
    for row in x:
        count = rng.integers(1, 8)
        where = rng.choice(SEQUENCE_LENGTH, count, replace=False)
        row[where] = rng.integers(2, 82, size=count)
    positive = ((x >= 2) & (x < 42)).sum(1)
    negative = ((x >= 42) & (x < 82)).sum(1)
    keep = positive != negative
    x, y = x[keep], (positive > negative)[keep].astype("int32")
    return zoo._split("synthetic-reviews", x, y, seed)


# --------------------------------------------------------------------------
# Sabotage


@functools.lru_cache(maxsize=1)
def _no_normalization():
    """An identity layer that accepts a normalization layer's call arguments (``training``, ``mask``)."""
    import keras

    @keras.saving.register_keras_serializable(package="benchmark_third_party")
    class NoNormalization(keras.layers.Layer):
        def call(self, inputs, training=None, mask=None):
            return inputs

    return NoNormalization


def sabotage_sigmoid_nonorm(model):
    """A copy with sigmoid activations and no normalization (fresh weights)."""
    import keras

    last = model.layers[-1]
    no_normalization = _no_normalization()

    def rewrite(layer):
        config = layer.get_config()
        kind = type(layer).__name__
        if kind in NORMALIZATION:
            return no_normalization(name=config["name"])
        if kind in ("ReLU", "LeakyReLU"):
            return keras.layers.Activation("sigmoid", name=config["name"])
        if layer is not last and isinstance(config.get("activation"), str) and config["activation"] in SWAPPED:
            config["activation"] = "sigmoid"
        return layer.__class__.from_config(config)

    return keras.models.clone_model(model, clone_function=rewrite)


def _optimizer(kind: str):
    import keras

    if kind == "high-lr":
        return keras.optimizers.SGD(learning_rate=10.0, momentum=0.9)
    return keras.optimizers.Adam(1e-3)


# --------------------------------------------------------------------------
# Builders


def application(constructor: str, preprocess: str, size: int, variant: str = "healthy"):
    """``build(seed)`` of a keras.applications model on enlarged digits."""

    def build(seed):
        import keras

        data = digit_images(size, preprocess)
        model = getattr(keras.applications, constructor)(
            weights=None, input_shape=(size, size, 3), classes=10, classifier_activation="softmax")
        if variant == "sigmoid-nonorm":
            model = sabotage_sigmoid_nonorm(model)
        model.compile(optimizer=_optimizer(variant), loss="sparse_categorical_crossentropy")
        return model, data

    return build


def _text_layers():
    """The docs' two custom layers, defined on first use (Keras imported lazily)."""
    import keras

    @keras.saving.register_keras_serializable(package="benchmark_docs")
    class TransformerBlock(keras.layers.Layer):
        def __init__(self, embed_dim, num_heads, ff_dim, rate=0.1, ff_activation="relu",
                     normalize=True, **kwargs):
            super().__init__(**kwargs)
            self.embed_dim, self.num_heads, self.ff_dim, self.rate = embed_dim, num_heads, ff_dim, rate
            self.ff_activation, self.normalize = ff_activation, normalize
            self.att = keras.layers.MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim)
            self.ffn = keras.Sequential([keras.layers.Dense(ff_dim, activation=ff_activation),
                                         keras.layers.Dense(embed_dim)])
            norm = (lambda: keras.layers.LayerNormalization(epsilon=1e-6)) if normalize else (
                lambda: keras.layers.Identity())
            self.layernorm1, self.layernorm2 = norm(), norm()
            self.dropout1, self.dropout2 = keras.layers.Dropout(rate), keras.layers.Dropout(rate)

        def call(self, inputs, training=False):
            attn_output = self.att(inputs, inputs)
            attn_output = self.dropout1(attn_output, training=training)
            out1 = self.layernorm1(inputs + attn_output)
            ffn_output = self.ffn(out1)
            ffn_output = self.dropout2(ffn_output, training=training)
            return self.layernorm2(out1 + ffn_output)

        def get_config(self):
            return {**super().get_config(), "embed_dim": self.embed_dim, "num_heads": self.num_heads,
                    "ff_dim": self.ff_dim, "rate": self.rate, "ff_activation": self.ff_activation,
                    "normalize": self.normalize}

    @keras.saving.register_keras_serializable(package="benchmark_docs")
    class TokenAndPositionEmbedding(keras.layers.Layer):
        def __init__(self, maxlen, vocab_size, embed_dim, **kwargs):
            super().__init__(**kwargs)
            self.maxlen, self.vocab_size, self.embed_dim = maxlen, vocab_size, embed_dim
            self.token_emb = keras.layers.Embedding(input_dim=vocab_size, output_dim=embed_dim)
            self.pos_emb = keras.layers.Embedding(input_dim=maxlen, output_dim=embed_dim)

        def call(self, x):
            maxlen = keras.ops.shape(x)[-1]
            positions = keras.ops.arange(start=0, stop=maxlen, step=1)
            return self.token_emb(x) + self.pos_emb(positions)

        def get_config(self):
            return {**super().get_config(), "maxlen": self.maxlen, "vocab_size": self.vocab_size,
                    "embed_dim": self.embed_dim}

    return TransformerBlock, TokenAndPositionEmbedding


@functools.lru_cache(maxsize=1)
def text_layers():
    return _text_layers()


def docs_transformer(variant: str = "healthy"):
    """keras.io "Text classification with Transformer", re-typed."""

    def build(seed):
        import keras

        transformer_block, token_and_position = text_layers()
        data = reviews()
        sabotaged = variant == "sigmoid-nonorm"
        embed_dim, num_heads, ff_dim = 32, 2, 32
        inputs = keras.layers.Input(shape=(SEQUENCE_LENGTH,), dtype="int32")
        x = token_and_position(SEQUENCE_LENGTH, VOCABULARY, embed_dim)(inputs)
        x = transformer_block(embed_dim, num_heads, ff_dim, ff_activation="sigmoid" if sabotaged else "relu",
                              normalize=not sabotaged)(x)
        x = keras.layers.GlobalAveragePooling1D()(x)
        x = keras.layers.Dropout(0.1)(x)
        x = keras.layers.Dense(20, activation="sigmoid" if sabotaged else "relu")(x)
        x = keras.layers.Dropout(0.1)(x)
        outputs = keras.layers.Dense(2, activation="softmax")(x)
        model = keras.Model(inputs=inputs, outputs=outputs)
        model.compile(optimizer=_optimizer(variant), loss="sparse_categorical_crossentropy")
        return model, data

    return build


def docs_bilstm(variant: str = "healthy"):
    """keras.io "Bidirectional LSTM on IMDB", re-typed."""

    def build(seed):
        import keras

        data = reviews()
        inputs = keras.Input(shape=(None,), dtype="int32")
        x = keras.layers.Embedding(VOCABULARY, 128)(inputs)
        x = keras.layers.Bidirectional(keras.layers.LSTM(64, return_sequences=True))(x)
        x = keras.layers.Bidirectional(keras.layers.LSTM(64))(x)
        outputs = keras.layers.Dense(1, activation="sigmoid")(x)
        model = keras.Model(inputs, outputs)
        model.compile(optimizer=_optimizer(variant), loss="binary_crossentropy")
        return model, data

    return build


# --------------------------------------------------------------------------
# Entries

HYPOTHESIS = {"healthy": "healthy", "sigmoid-nonorm": "vanishing", "high-lr": "exploding"}
QUICK_SABOTAGE = {("mobilenet-v2", "sigmoid-nonorm"), ("convnext-tiny", "high-lr"),
                  ("docs-transformer", "sigmoid-nonorm"), ("docs-transformer", "high-lr"),
                  ("docs-bilstm", "high-lr")}


def _entry(base: str, builder_of, description: str, quick: bool, variant: str, steps: int = STEPS):
    name = base if variant == "healthy" else f"{base}-{variant}"
    reference = None if variant == "healthy" else builder_of("healthy")
    what = {"healthy": "as published, Adam 1e-3", "sigmoid-nonorm": "sigmoid activations, no normalization",
            "high-lr": "SGD+momentum at lr 10"}[variant]
    return zoo.Entry(name, "third-party", HYPOTHESIS[variant], builder_of(variant), f"{description}: {what}",
                     steps=steps, batch_size=BATCH_SIZE,
                     quick=quick if variant == "healthy" else (base, variant) in QUICK_SABOTAGE,
                     reference=reference, tags={"source": description, "variant": variant})


#: The applications from cheapest to dearest to diagnose at 32x32 (by the depth
#: and size in the keras.applications table): a partial false-alarm sweep then
#: covers as many models as its time allows.
CHEAPEST_FIRST = (
    "MobileNetV3Small", "MobileNet", "MobileNetV2", "VGG16", "VGG19", "MobileNetV3Large", "ResNet50",
    "ResNet50V2", "EfficientNetB0", "EfficientNetV2B0", "ConvNeXtTiny", "EfficientNetB1",
    "EfficientNetV2B1", "EfficientNetB2", "EfficientNetV2B2", "NASNetMobile", "DenseNet121",
    "EfficientNetB3", "EfficientNetV2B3", "Xception", "InceptionV3", "ResNet101", "ResNet101V2",
    "DenseNet169", "ConvNeXtSmall", "EfficientNetB4", "EfficientNetV2S", "DenseNet201", "ResNet152",
    "ResNet152V2", "EfficientNetB5", "InceptionResNetV2", "ConvNeXtBase", "EfficientNetB6",
    "EfficientNetV2M", "EfficientNetB7", "NASNetLarge", "ConvNeXtLarge", "EfficientNetV2L",
    "ConvNeXtXLarge")


def cheapest_first(found: list) -> list:
    """Healthy entries ordered for a sweep: the docs' text classifiers, then the
    applications by :data:`CHEAPEST_FIRST`."""
    rank = {_kebab(name): position for position, name in enumerate(CHEAPEST_FIRST)}
    return sorted(found, key=lambda entry: (entry.name.split("-")[0] != "docs",
                                            rank.get(entry.name, len(rank))))


def entries(quick: bool = False) -> list:
    """Every third-party entry (healthy and sabotaged); ``quick`` keeps the representative few."""
    found = []
    for constructor, preprocess, size, in_quick in APPLICATIONS:
        base = _kebab(constructor)
        for variant in ("healthy", "sigmoid-nonorm", "high-lr"):
            found.append(_entry(base, functools.partial(application, constructor, preprocess, size),
                                f"keras.applications.{constructor} ({size}x{size}, weights=None)",
                                in_quick, variant))
    for base, maker, description in (
            ("docs-transformer", docs_transformer, "keras.io Transformer text classifier"),
            ("docs-bilstm", docs_bilstm, "keras.io Bidirectional LSTM text classifier")):
        for variant in ("healthy", "sigmoid-nonorm", "high-lr"):
            if base == "docs-bilstm" and variant == "sigmoid-nonorm":
                continue  # nothing to normalize, and its LSTMs' gates are already sigmoids
            found.append(_entry(base, maker, description, True, variant))
    if quick:
        found = [entry for entry in found if entry.quick]
    return found
