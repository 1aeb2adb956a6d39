"""Model surgery builds a new model with the setup and never touches the input one."""

import json
import warnings

import numpy as np
import pytest

from gradadvisor.errors import SurgeryError, UsageError
from gradadvisor.surgery import Setup, apply_setup, describe_changes, optimizer_for, snippet


# --------------------------------------------------------------------------
# Helpers and tiny models

def _snapshot(model):
    return [np.array(variable.numpy(), copy=True) for variable in model.weights]


def _assert_unchanged(model, snapshot, num_layers):
    assert len(model.layers) == num_layers
    after = _snapshot(model)
    assert len(after) == len(snapshot)
    assert all(np.array_equal(a, b) for a, b in zip(after, snapshot))


def _classes(model):
    return [type(layer).__name__ for layer in model.layers]


def _initializer(layer, key="kernel_initializer"):
    return type(getattr(layer, key)).__name__


def _sigmoid_mlp(keras, hidden=2, width=8, output="softmax"):
    layers = [keras.Input((4,), name="features")]
    layers += [keras.layers.Dense(width, activation="sigmoid", name=f"h{i}") for i in range(hidden)]
    layers.append(keras.layers.Dense(3, activation=output, name="out"))
    model = keras.Sequential(layers, name="mlp")
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def _residual_with_nested(keras):
    """Input -> d1 -> nested Sequential 'block' (b1, b2) -> Add with d1 -> out."""
    block = keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(8, activation="tanh", name="b1"),
        keras.layers.Dense(8, activation="tanh", name="b2"),
    ], name="block")
    inputs = keras.Input((4,), name="x")
    first = keras.layers.Dense(8, activation="tanh", name="d1",
                               kernel_initializer=keras.initializers.RandomNormal(stddev=1.0))(inputs)
    added = keras.layers.Add(name="add")([first, block(first)])
    outputs = keras.layers.Dense(3, activation="softmax", name="out")(added)
    model = keras.Model(inputs, outputs, name="residual")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    return model


# --------------------------------------------------------------------------
# Setup

def test_setup_round_trips_through_json():
    setup = Setup(initializer="he_normal", activation="prelu", normalization="batchnorm_after",
                  clipping="global_clipnorm", clip_threshold=0.5, learning_rate_scale=0.1)
    data = json.loads(json.dumps(setup.to_dict()))
    assert Setup.from_dict(data) == setup
    assert data["clipping"] == "global_clipnorm"
    assert Setup(clipping="none", clip_threshold=None).clip_threshold == 1.0


def test_setup_rejects_bad_values_with_whole_messages():
    with pytest.raises(UsageError) as error:
        Setup(activation="tanhh")
    assert str(error.value) == (
        "The 'activation' parameter of Setup must be None or one of 'leaky_relu', 'prelu', "
        "'relu', 'elu', 'selu', 'gelu', 'swish'. Got 'tanhh' instead.")
    with pytest.raises(UsageError) as error:
        Setup(learning_rate_scale=0)
    assert str(error.value) == (
        "The 'learning_rate_scale' parameter of Setup must be a positive finite number. Got 0 instead.")
    with pytest.raises(UsageError) as error:
        Setup.from_dict({"activaton": "relu"})
    assert str(error.value) == (
        "The setup has an unknown field 'activaton'; the fields are initializer, activation, "
        "normalization, clipping, clip_threshold, learning_rate_scale, recurrence, cell, forget_bias, "
        "direction, recurrent_initializer, optimizer, optimizer_learning_rate, warmup_steps, output. Remove it or correct its spelling.")


def test_selu_picks_lecun_normal_unless_an_initializer_is_given(keras_module):
    model = _sigmoid_mlp(keras_module)
    selu = apply_setup(model, Setup(activation="selu"))
    assert [layer.activation.__name__ for layer in selu.layers] == ["selu", "selu", "softmax"]
    assert [_initializer(layer) for layer in selu.layers] == ["LecunNormal"] * 3
    explicit = apply_setup(model, Setup(activation="selu", initializer="he_normal"))
    assert [_initializer(layer) for layer in explicit.layers] == ["HeNormal"] * 3


# --------------------------------------------------------------------------
# Sequential and Functional models

def test_sequential_activation_change_keeps_weights_and_the_input_model(keras_module):
    model = _sigmoid_mlp(keras_module)
    before, num_layers = _snapshot(model), len(model.layers)
    new = apply_setup(model, Setup(activation="relu"))
    assert isinstance(new, keras_module.Sequential) and new is not model
    assert [layer.name for layer in new.layers] == ["h0", "h1", "out"]
    assert [layer.activation.__name__ for layer in new.layers] == ["relu", "relu", "softmax"]
    assert all(np.array_equal(a, b) for a, b in zip(_snapshot(new), before))
    assert new.output_shape == model.output_shape
    # The copy trains on its own variables.
    new.fit(np.ones((4, 4), "float32"), np.zeros(4, "int32"), epochs=1, verbose=0)
    assert not np.array_equal(new.layers[0].kernel.numpy(), before[0])
    _assert_unchanged(model, before, num_layers)
    assert model.layers[0].activation.__name__ == "sigmoid"


def test_functional_residual_and_nested_model_in_scope(keras_module):
    keras = keras_module
    model = _residual_with_nested(keras)
    block = model.get_layer("block")
    before, num_layers, num_block_layers = _snapshot(model), len(model.layers), len(block.layers)
    setup = Setup(initializer="he_normal", activation="relu", normalization="batchnorm_before")
    new = apply_setup(model, setup, scope=["d1", "block/b1"])

    assert [layer.name for layer in new.layers] == ["x", "d1", "d1_bn", "d1_relu", "block", "add", "out"]
    new_block = new.get_layer("block")
    assert isinstance(new_block, keras.Sequential)
    assert [layer.name for layer in new_block.layers] == ["b1", "b1_bn", "b1_relu", "b2"]
    assert _classes(new_block) == ["Dense", "BatchNormalization", "Activation", "Dense"]
    assert new_block.get_layer("b2").activation.__name__ == "tanh"
    assert _initializer(new.get_layer("d1")) == "HeNormal"
    # Re-initialised layers start fresh; the others keep their weights.
    assert not np.array_equal(new.get_layer("d1").kernel.numpy(), model.get_layer("d1").kernel.numpy())
    for new_layer, old_layer in [(new_block.get_layer("b2"), block.get_layer("b2")),
                                 (new.get_layer("out"), model.get_layer("out"))]:
        assert all(np.array_equal(a, b) for a, b in zip(new_layer.get_weights(), old_layer.get_weights()))
    x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    assert new.predict(x, verbose=0).shape == model.predict(x, verbose=0).shape == (5, 3)
    _assert_unchanged(model, before, num_layers)
    assert len(block.layers) == num_block_layers


def test_functional_shared_layer_nested_functional_and_custom_loss(keras_module):
    keras = keras_module
    inner_input = keras.Input((4,), name="enc_in")
    encoder = keras.Model(inner_input, keras.layers.Dense(6, activation="sigmoid", name="e1")(inner_input),
                          name="encoder")
    shared = keras.layers.Dense(6, activation="tanh", name="shared")
    a, b = keras.Input((4,), name="a"), keras.Input((4,), name="b")
    joined = keras.layers.Concatenate(name="cat")([shared(encoder(a)), shared(encoder(b))])
    model = keras.Model([a, b], keras.layers.Dense(1, name="out")(joined), name="siamese")

    def unregistered_loss(y_true, y_pred):
        return keras.ops.mean(keras.ops.square(y_true - y_pred))

    model.compile(optimizer="adam", loss=unregistered_loss)
    before, num_layers = _snapshot(model), len(model.layers)
    new = apply_setup(model, Setup(activation="leaky_relu"))
    assert [layer.name for layer in new.layers] == [
        "a", "b", "encoder", "shared", "shared_leaky_relu", "cat", "out"]
    assert _classes(new.get_layer("encoder")) == ["InputLayer", "Dense", "LeakyReLU"]
    assert new.loss is unregistered_loss
    x = [np.ones((2, 4), "float32"), np.zeros((2, 4), "float32")]
    new.fit(x, np.ones((2, 1), "float32"), epochs=1, verbose=0)
    _assert_unchanged(model, before, num_layers)


# --------------------------------------------------------------------------
# Activations and normalization

@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "prelu", "gelu"])
def test_output_activation_is_never_changed(keras_module, activation):
    keras = keras_module
    separate = keras.Sequential([
        keras.Input((4,)),
        keras.layers.Dense(8, activation="tanh", name="h0"),
        keras.layers.Dense(3, name="logits"),
        keras.layers.Activation("softmax", name="probabilities"),
    ])
    for model, final in [(_sigmoid_mlp(keras, output="sigmoid"), ["out"]),
                         (separate, ["logits", "probabilities"])]:
        new = apply_setup(model, Setup(activation=activation, normalization="batchnorm_before"))
        assert [layer.name for layer in new.layers][-len(final):] == final
        assert new.layers[-1].activation.__name__ == model.layers[-1].activation.__name__
        assert new.layers[0].activation.__name__ == "linear"  # the hidden layer was rewritten


@pytest.mark.parametrize("normalization, expected", [
    ("batchnorm_before", ["Dense", "BatchNormalization", "Activation"] * 2 + ["Dense"]),
    ("batchnorm_after", ["Dense", "Activation", "BatchNormalization"] * 2 + ["Dense"]),
])
def test_batchnorm_split_order(keras_module, normalization, expected):
    model = _sigmoid_mlp(keras_module)
    new = apply_setup(model, Setup(normalization=normalization))
    assert _classes(new) == expected
    assert new.layers[0].activation.__name__ == "linear"
    assert [layer.activation.__name__ for layer in new.layers if type(layer).__name__ == "Activation"] == [
        "sigmoid", "sigmoid"]
    assert all(np.array_equal(a, b) for a, b in zip(new.layers[0].get_weights(), model.layers[0].get_weights()))


def test_batchnorm_is_not_added_twice_and_goes_around_separate_activation_layers(keras_module):
    keras = keras_module
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(4, 3, activation="relu", name="c1"),
        keras.layers.BatchNormalization(name="c1_norm"),
        keras.layers.Conv2D(4, 3, name="c2"),
        keras.layers.Activation("relu", name="c2_act"),
        keras.layers.GlobalAveragePooling2D(name="pool"),
        keras.layers.Dense(3, activation="softmax", name="out"),
    ])
    after = apply_setup(model, Setup(normalization="batchnorm_after"))
    assert [layer.name for layer in after.layers] == [
        "c1", "c1_norm", "c2", "c2_act", "c2_bn", "pool", "out"]
    before = apply_setup(model, Setup(normalization="batchnorm_before"))
    assert [layer.name for layer in before.layers] == [
        "c1", "c1_norm", "c2", "c2_bn", "c2_act", "pool", "out"]


def test_leaky_relu_and_prelu_are_inserted_as_layers(keras_module):
    keras = keras_module
    model = keras.Sequential([
        keras.Input((6, 6, 2)),
        keras.layers.Conv2D(4, 3, activation="tanh", name="conv"),
        keras.layers.Flatten(name="flat"),
        keras.layers.Dense(8, name="dense"),
        keras.layers.Activation("sigmoid", name="squash"),
        keras.layers.Dense(2, activation="softmax", name="out"),
    ])
    leaky = apply_setup(model, Setup(activation="leaky_relu"))
    assert [layer.name for layer in leaky.layers] == [
        "conv", "conv_leaky_relu", "flat", "dense", "squash", "out"]
    assert _classes(leaky) == ["Conv2D", "LeakyReLU", "Flatten", "Dense", "LeakyReLU", "Dense"]
    assert leaky.get_layer("conv").activation.__name__ == "linear"
    prelu = apply_setup(model, Setup(activation="prelu"))
    assert _classes(prelu) == ["Conv2D", "PReLU", "Flatten", "Dense", "PReLU", "Dense"]
    # One slope per channel after a convolution.
    assert list(prelu.get_layer("conv_prelu").shared_axes) == [1, 2]
    assert prelu.get_layer("conv_prelu").alpha.shape == (1, 1, 4)
    assert prelu.output_shape == model.output_shape


def test_recurrent_layers_get_orthogonal_recurrence_and_keep_gate_activations(keras_module):
    keras = keras_module
    model = keras.Sequential([
        keras.Input((5, 3)),
        keras.layers.LSTM(4, return_sequences=True, name="lstm"),
        keras.layers.Dense(4, activation="tanh", name="hidden",
                           bias_initializer=keras.initializers.Constant(-4.0)),
        keras.layers.GRU(4, name="gru", recurrent_initializer="glorot_uniform"),
        keras.layers.Dense(1, activation="sigmoid", name="out"),
    ])
    new = apply_setup(model, Setup(initializer="glorot_normal", activation="relu", normalization="layernorm"))
    assert [layer.name for layer in new.layers] == ["lstm", "lstm_ln", "hidden", "hidden_ln", "gru", "out"]
    gru = new.get_layer("gru")
    assert (_initializer(gru), _initializer(gru, "recurrent_initializer")) == ("GlorotNormal", "Orthogonal")
    assert (gru.activation.__name__, gru.recurrent_activation.__name__) == ("tanh", "sigmoid")
    hidden = new.get_layer("hidden")
    assert (hidden.activation.__name__, _initializer(hidden, "bias_initializer")) == ("relu", "Zeros")
    assert np.all(hidden.bias.numpy() == 0.0)


def test_inserted_names_avoid_every_existing_name(keras_module):
    keras = keras_module
    block = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, name="h0_bn")], name="block")
    model = keras.Sequential([
        keras.Input((4,)), keras.layers.Dense(4, activation="relu", name="h0"), block,
        keras.layers.Dense(2, name="out")])
    new = apply_setup(model, Setup(normalization="batchnorm_before"))
    assert [layer.name for layer in new.layers] == ["h0", "h0_bn_1", "h0_relu", "block", "out"]


# --------------------------------------------------------------------------
# Optimizer

def test_optimizer_keeps_class_and_config_with_scaled_rate_and_clipping(keras_module):
    keras = keras_module
    model = _sigmoid_mlp(keras)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9, clipvalue=0.5),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    new = apply_setup(model, Setup(clipping="clipnorm", clip_threshold=2.0, learning_rate_scale=0.1))
    optimizer = new.optimizer
    assert type(optimizer).__name__ == "SGD" and optimizer is not model.optimizer
    assert optimizer.momentum == 0.9
    assert float(optimizer.learning_rate) == pytest.approx(0.01)
    assert (optimizer.clipnorm, optimizer.clipvalue, optimizer.global_clipnorm) == (2.0, None, None)
    assert new.loss == "sparse_categorical_crossentropy"
    assert new.get_compile_config()["metrics"] == ["accuracy"]
    kept = optimizer_for(model, Setup(clipping="none"))
    assert (kept.clipvalue, float(kept.learning_rate)) == (0.5, pytest.approx(0.1))


def test_metric_objects_are_copied_not_shared(keras_module):
    keras = keras_module
    model = _sigmoid_mlp(keras)
    metric = keras.metrics.SparseCategoricalAccuracy(name="acc")
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=[metric])
    new = apply_setup(model, Setup(activation="relu"))
    history = new.fit(np.ones((4, 4), "float32"), np.zeros(4, "int32"), epochs=1, verbose=0)
    assert "acc" in history.history
    assert all(float(np.sum(variable.numpy())) == 0.0 for variable in metric.variables)


def test_uncompiled_model_gets_adam_with_the_setup(keras_module):
    keras = keras_module
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="out")])
    new = apply_setup(model, Setup(clipping="global_clipnorm", learning_rate_scale=0.5))
    assert type(new.optimizer).__name__ == "Adam" and new.loss is None
    assert float(new.optimizer.learning_rate) == pytest.approx(5e-4)
    assert new.optimizer.global_clipnorm == 1.0


# --------------------------------------------------------------------------
# Saved models, subclassed models, bad scope

def test_loaded_model_with_automatic_names_takes_batchnorm(keras_module, tmp_path):
    keras = keras_module
    # Build as a fresh process would, so the saved file holds the base automatic names
    # ("dense", "batch_normalization") whatever other tests created before this one.
    keras.backend.clear_session()
    model = keras.Sequential([
        keras.Input((6,)),
        keras.layers.Dense(8, activation="tanh"),
        keras.layers.BatchNormalization(),
        keras.layers.Dense(8, activation="tanh"),
        keras.layers.Dense(2, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.save(tmp_path / "auto.keras")
    # Loading in a new process starts the automatic names from scratch again.
    keras.backend.clear_session()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = keras.models.load_model(tmp_path / "auto.keras")
    taken = {layer.name for layer in loaded.layers}
    assert keras.layers.BatchNormalization().name in taken  # the trap is real

    new = apply_setup(loaded, Setup(normalization="batchnorm_before"))
    names = [layer.name for layer in new.layers]
    assert len(names) == len(set(names)) == 6
    assert _classes(new) == ["Dense", "BatchNormalization", "Dense", "BatchNormalization",
                             "Activation", "Dense"]
    new.save(tmp_path / "fixed.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = keras.models.load_model(tmp_path / "fixed.keras")
    assert [layer.name for layer in again.layers] == names
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    np.testing.assert_allclose(again.predict(x, verbose=0), new.predict(x, verbose=0), rtol=1e-6)


def test_subclassed_model_is_refused_with_a_clear_message(keras_module):
    keras = keras_module

    class Net(keras.Model):
        def __init__(self):
            super().__init__(name="net")
            self.dense = keras.layers.Dense(2)

        def call(self, inputs):
            return self.dense(inputs)

    for function in (apply_setup, describe_changes):
        with pytest.raises(SurgeryError) as error:
            function(Net(), Setup(activation="relu"))
        assert str(error.value) == (
            "The model 'net' is a subclassed model (Net): gradadvisor can diagnose it but can only "
            "rewrite a Sequential or Functional model, so rebuild it with keras.Sequential or the "
            "functional API, or apply the setup in your own code as gradadvisor.surgery.snippet() shows.")


def test_unknown_scope_path_is_refused(keras_module):
    with pytest.raises(UsageError) as error:
        apply_setup(_sigmoid_mlp(keras_module), Setup(activation="relu"), scope=["h9"])
    assert str(error.value) == (
        "The 'scope' parameter names a layer that is not in the model: 'h9'. Use layer paths such as "
        "'h0', 'h1', 'out' (nested model names joined with '/').")


# --------------------------------------------------------------------------
# describe_changes and snippet

def test_describe_changes_lists_what_apply_setup_does(keras_module):
    keras = keras_module
    model = _residual_with_nested(keras)
    setup = Setup(initializer="he_normal", activation="prelu", normalization="batchnorm_after",
                  clipping="clipvalue", clip_threshold=0.5, learning_rate_scale=0.5)
    changes = describe_changes(model, setup, scope=["d1", "block/b2"])
    assert changes == [
        {"layer": "d1", "change": "kernel_initializer", "from": "RandomNormal", "to": "he_normal"},
        {"layer": "d1", "change": "activation", "from": "tanh", "to": "linear"},
        {"layer": "d1", "change": "insert_after", "from": None, "to": "PReLU(name='d1_prelu')"},
        {"layer": "d1", "change": "insert_after", "from": None, "to": "BatchNormalization(name='d1_bn')"},
        {"layer": "block/b2", "change": "kernel_initializer", "from": "GlorotUniform", "to": "he_normal"},
        {"layer": "block/b2", "change": "activation", "from": "tanh", "to": "linear"},
        {"layer": "block/b2", "change": "insert_after", "from": None, "to": "PReLU(name='b2_prelu')"},
        {"layer": "block/b2", "change": "insert_after", "from": None, "to": "BatchNormalization(name='b2_bn')"},
        {"layer": "(optimizer)", "change": "learning_rate", "from": 0.001, "to": 0.0005},
        {"layer": "(optimizer)", "change": "clipvalue", "from": None, "to": 0.5},
    ]
    new = apply_setup(model, setup, scope=["d1", "block/b2"])
    assert [layer.name for layer in new.layers] == ["x", "d1", "d1_prelu", "d1_bn", "block", "add", "out"]
    assert [layer.name for layer in new.get_layer("block").layers] == ["b1", "b2", "b2_prelu", "b2_bn"]
    assert describe_changes(model, Setup()) == []


def test_snippet_runs_and_shows_the_setup(keras_module):
    setup = Setup(initializer="he_normal", activation="leaky_relu", normalization="batchnorm_before",
                  clipping="clipnorm", learning_rate_scale=0.5)
    text = snippet(setup)
    assert 'layers.Dense(64, kernel_initializer="he_normal", bias_initializer="zeros")' in text
    assert "keras.optimizers.Adam(learning_rate=0.0005, clipnorm=1.0)" in text
    namespace = {}
    exec(text, namespace)
    assert _classes(keras_module.Sequential(namespace["hidden"])) == [
        "Dense", "BatchNormalization", "LeakyReLU"]
    assert namespace["optimizer"].clipnorm == 1.0

    with_model = snippet(Setup(learning_rate_scale=0.1), model=_sigmoid_mlp(keras_module))
    assert "optimizer = keras.optimizers.SGD(learning_rate=0.01)" in with_model
    assert "hidden" not in with_model
    layernorm = snippet(Setup(normalization="layernorm"))
    exec(layernorm, {})
    assert "layers.LayerNormalization()" in layernorm
    assert snippet(Setup(clipping="none")) == "# This setup keeps the model as it is: nothing to change.\n"


# --------------------------------------------------------------------------
# Real graphs: operation nodes, shared layers, nested models, wrappers,
# several inputs and outputs, keras.applications.
#
# Each graph is built once per session; every dimension of the setup is then
# applied to it, and the rewritten model must build, keep every layer it did
# not re-initialise bit for bit, and take one real training step (run eagerly:
# the same update as a compiled step, without tracing each model again).

def _mobilenet(keras):
    model = keras.applications.MobileNetV2(alpha=0.35, input_shape=(32, 32, 3), weights=None, classes=10)
    model.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    return model, rng.normal(size=(2, 32, 32, 3)).astype("float32"), np.array([1, 7], "int32")


def _transformer(keras, maxlen=12, vocab=40, width=16):
    """Two encoder blocks as in the Keras docs' "Text classification with Transformer",
    written functionally: positions from keras.ops, `x + y` residuals, a Sequential
    feed-forward network in the first block and inline Dense layers in the second."""
    layers = keras.layers
    tokens = keras.Input((maxlen,), dtype="int32", name="tokens")
    positions = keras.ops.cumsum(keras.ops.ones_like(tokens), axis=1) - 1
    x = (layers.Embedding(vocab, width, name="token_embedding")(tokens)
         + layers.Embedding(maxlen, width, name="position_embedding")(positions))
    for block in range(2):
        attention = layers.MultiHeadAttention(num_heads=2, key_dim=width, name=f"attention{block}")(x, x)
        x = layers.LayerNormalization(epsilon=1e-6, name=f"norm{block}a")(
            x + layers.Dropout(0.1, name=f"drop{block}a")(attention))
        if block == 0:
            ffn = keras.Sequential([layers.Dense(width, activation="relu", name="ffn0_in"),
                                    layers.Dense(width, name="ffn0_out")], name="ffn0")(x)
        else:
            ffn = layers.Dense(width, name="ffn1_out")(layers.Dense(width, activation="relu", name="ffn1_in")(x))
        x = layers.LayerNormalization(epsilon=1e-6, name=f"norm{block}b")(
            x + layers.Dropout(0.1, name=f"drop{block}b")(ffn))
    x = layers.GlobalAveragePooling1D(name="pool")(x)
    x = layers.Dense(8, activation="relu", name="head")(x)
    outputs = layers.Dense(2, activation="softmax", name="out")(x)
    model = keras.Model(tokens, outputs, name="transformer")
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).integers(0, vocab, size=(4, maxlen)).astype("int32")
    return model, x, np.array([0, 1, 0, 1], "int32")


def _bilstm(keras):
    """The Keras docs' bidirectional LSTM classifier, small, with a TimeDistributed Dense."""
    layers = keras.layers
    tokens = keras.Input((10,), dtype="int32", name="tokens")
    x = layers.Embedding(30, 8, name="embedding")(tokens)
    x = layers.Bidirectional(layers.LSTM(8, return_sequences=True), name="bi1")(x)
    x = layers.TimeDistributed(layers.Dense(8, activation="tanh"), name="td")(x)
    x = layers.Bidirectional(layers.LSTM(8), name="bi2")(x)
    outputs = layers.Dense(1, activation="sigmoid", name="out")(x)
    model = keras.Model(tokens, outputs, name="bilstm")
    model.compile(keras.optimizers.SGD(0.1), "binary_crossentropy")
    x = np.random.default_rng(0).integers(0, 30, size=(4, 10)).astype("int32")
    return model, x, np.array([[0.0], [1.0], [1.0], [0.0]], "float32")


def _shared(keras):
    """One Dense and one activation layer called at two nodes each, joined by operations."""
    layers = keras.layers
    left, right = keras.Input((6,), name="left"), keras.Input((6,), name="right")
    shared = layers.Dense(8, activation="tanh", name="shared")
    squash = layers.Activation("sigmoid", name="squash")
    projection = layers.Dense(8, name="projection")
    a, b = squash(projection(shared(left))), squash(projection(shared(right)))
    joined = layers.Concatenate(name="join")([a + b, keras.ops.abs(a - b)])
    outputs = layers.Dense(1, activation="sigmoid", name="out")(joined)
    model = keras.Model([left, right], outputs, name="siamese")
    model.compile(keras.optimizers.SGD(0.1), "binary_crossentropy")
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(4, 6)).astype("float32"), rng.normal(size=(4, 6)).astype("float32")]
    return model, x, np.array([[0.0], [1.0], [1.0], [0.0]], "float32")


def _nested(keras):
    """A Functional model inside a Functional model that also holds a Sequential one."""
    layers = keras.layers
    inner_in = keras.Input((8,), name="inner_in")
    inner_hidden = layers.Dense(8, activation="sigmoid", name="inner_dense")(inner_in)
    inner = keras.Model(inner_in, layers.Activation("tanh", name="inner_act")(inner_hidden + inner_in),
                        name="inner")
    block = keras.Sequential([keras.Input((8,)), layers.Dense(8, activation="sigmoid", name="block_dense"),
                              layers.Dense(8, name="block_linear")], name="block")
    middle_in = keras.Input((8,), name="middle_in")
    middle = keras.Model(middle_in, block(inner(middle_in)), name="middle")
    inputs = keras.Input((4,), name="x")
    stem = layers.Dense(8, activation="relu", name="stem")(inputs)
    outputs = layers.Dense(3, activation="softmax", name="out")(middle(stem))
    model = keras.Model(inputs, outputs, name="nested")
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).normal(size=(4, 4)).astype("float32")
    return model, x, np.array([0, 1, 2, 0], "int32")


def _multi_io(keras):
    """Two inputs (an image and a sequence), two outputs (a Softmax layer and a value),
    slicing and reshape operations, standalone ReLU(6.), LeakyReLU, PReLU and ELU layers."""
    layers = keras.layers
    image, sequence = keras.Input((8, 8, 3), name="image"), keras.Input((6, 4), name="sequence")
    c = layers.ReLU(6.0, name="conv_relu6")(layers.Conv2D(8, 3, padding="same", name="conv")(image))
    c = layers.DepthwiseConv2D(3, padding="same", activation="sigmoid", name="depthwise")(c)
    c = layers.LeakyReLU(negative_slope=0.1, name="leaky")(layers.Conv2D(8, 1, name="pointwise")(c))
    pooled = layers.GlobalAveragePooling2D(name="gap")(c)
    s = layers.SimpleRNN(8, return_sequences=True, name="rnn")(sequence)
    s = keras.ops.reshape(s[:, -3:, :], (-1, 24))
    s = layers.PReLU(name="prelu")(layers.Dense(8, activation="tanh", name="seq_dense")(s))
    s = layers.ELU(name="elu")(layers.Dense(8, name="seq_linear")(s))
    hidden = layers.Dense(16, activation="sigmoid", name="hidden")(layers.Concatenate(name="join")([pooled, s]))
    probabilities = layers.Softmax(name="class")(layers.Dense(3, name="logits")(hidden))
    value = layers.Dense(1, name="value")(keras.ops.concatenate([hidden, s], axis=-1))
    model = keras.Model({"image": image, "sequence": sequence}, {"class": probabilities, "value": value},
                        name="multi_io")
    model.compile(keras.optimizers.SGD(0.05), loss={"class": "sparse_categorical_crossentropy", "value": "mse"})
    rng = np.random.default_rng(0)
    x = {"image": rng.normal(size=(4, 8, 8, 3)).astype("float32"),
         "sequence": rng.normal(size=(4, 6, 4)).astype("float32")}
    return model, x, {"class": np.array([0, 1, 2, 0], "int32"), "value": rng.normal(size=(4, 1)).astype("float32")}


_GRAPHS = {"mobilenet": _mobilenet, "transformer": _transformer, "bilstm": _bilstm, "shared": _shared,
           "nested": _nested, "multi_io": _multi_io}


@pytest.fixture(scope="session")
def graphs(keras_module):
    """``{name: (model, x, y, snapshot of the weights)}``, each graph built once."""
    built = {}
    for name, build in _GRAPHS.items():
        keras_module.utils.set_random_seed(0)
        model, x, y = build(keras_module)
        built[name] = (model, x, y, _snapshot(model))
    return built


_DIMENSIONS = {
    "initializer": Setup(initializer="he_normal"),
    "activation": Setup(activation="gelu"),
    "inserted_activation": Setup(activation="prelu"),
    "batchnorm_before": Setup(normalization="batchnorm_before"),
    "batchnorm_after": Setup(normalization="batchnorm_after"),
    "layernorm": Setup(normalization="layernorm"),
    "irnn": Setup(recurrence="irnn"),
    "optimizer": Setup(clipping="clipnorm", learning_rate_scale=0.1),
}

# For each graph and dimension, the layers the rewrite must change (an empty set:
# it must change none, as the setup says for that kind of model). Output layers
# never change; "optimizer" changes no layer anywhere.
_EXPECTED = {
    "mobilenet": {
        "initializer": {"Conv1", "expanded_conv_depthwise", "block_16_project", "predictions"},
        "activation": {"Conv1_relu", "block_16_expand_relu", "out_relu"},
        "inserted_activation": {"Conv1_relu", "out_relu"},
        # Every convolution is already followed by BatchNormalization.
        "batchnorm_before": set(), "batchnorm_after": set(), "layernorm": set(), "irnn": set(),
    },
    "transformer": {
        "initializer": {"attention0", "attention1", "ffn0/ffn0_in", "ffn0/ffn0_out", "ffn1_in", "ffn1_out",
                        "head", "out"},
        "activation": {"ffn0/ffn0_in", "ffn1_in", "head"},
        "inserted_activation": {"ffn0/ffn0_in", "ffn1_in", "head"},
        "batchnorm_before": {"ffn0/ffn0_in", "ffn1_in", "head"},
        "batchnorm_after": {"ffn0/ffn0_in", "ffn1_in", "head"},
        "layernorm": set(), "irnn": set(),
    },
    "bilstm": {
        "initializer": {"bi1", "td", "bi2", "out"},
        "activation": {"td"}, "inserted_activation": {"td"},
        "batchnorm_before": {"td"}, "batchnorm_after": {"td"},
        "layernorm": {"bi1", "td"}, "irnn": set(),
    },
    "shared": {
        "initializer": {"shared", "projection", "out"},
        "activation": {"shared", "squash"}, "inserted_activation": {"shared", "squash"},
        # The BatchNormalization for the linear projection goes before or after its activation layer.
        "batchnorm_before": {"shared", "projection"}, "batchnorm_after": {"shared", "squash"},
        "layernorm": set(), "irnn": set(),
    },
    "nested": {
        "initializer": {"stem", "middle/inner/inner_dense", "middle/block/block_dense",
                        "middle/block/block_linear", "out"},
        "activation": {"stem", "middle/inner/inner_dense", "middle/inner/inner_act", "middle/block/block_dense"},
        "inserted_activation": {"stem", "middle/inner/inner_dense", "middle/inner/inner_act",
                                "middle/block/block_dense"},
        "batchnorm_before": {"stem", "middle/inner/inner_dense", "middle/block/block_dense"},
        "batchnorm_after": {"stem", "middle/inner/inner_dense", "middle/block/block_dense"},
        "layernorm": set(), "irnn": set(),
    },
    "multi_io": {
        "initializer": {"conv", "depthwise", "pointwise", "rnn", "seq_dense", "seq_linear", "hidden", "logits",
                        "value"},
        "activation": {"conv_relu6", "depthwise", "seq_dense", "hidden"},
        "inserted_activation": {"conv_relu6", "depthwise", "seq_dense", "hidden"},
        "batchnorm_before": {"conv", "depthwise", "pointwise", "seq_dense", "seq_linear", "hidden"},
        "batchnorm_after": {"conv_relu6", "depthwise", "leaky", "seq_dense", "elu", "hidden"},
        "layernorm": {"rnn", "seq_dense", "seq_linear", "hidden"},
        "irnn": {"rnn"},
    },
}


def _leaves(model):
    from gradadvisor.probe import leaf_layers

    return dict(leaf_layers(model))


# The optimizer dimension changes no layer: two graphs show the model is carried over whole.
_CASES = [(graph, dimension) for graph in _GRAPHS for dimension in _DIMENSIONS
          if dimension != "optimizer" or graph in ("transformer", "multi_io")]


@pytest.mark.parametrize("graph, dimension", _CASES)
def test_every_dimension_rewrites_real_graphs(keras_module, graphs, graph, dimension):
    from gradadvisor.surgery import rewrite

    model, x, y, before = graphs[graph]
    expected = _EXPECTED[graph].get(dimension, set())
    setup = _DIMENSIONS[dimension]
    if not expected and dimension != "optimizer":
        # Nothing to change: the plan says so without building anything.
        assert [entry for entry in describe_changes(model, setup) if entry["layer"] != "(optimizer)"] == []
        return
    result = rewrite(model, setup)
    changed = {entry["layer"] for entry in result.changes if entry["layer"] != "(optimizer)"}
    if graph == "mobilenet":  # a sample of its 150 layers
        assert expected <= changed and ("predictions" in changed) == (dimension == "initializer")
    else:
        assert changed == expected
    assert result.skipped == []
    old, new = _leaves(model), _leaves(result.model)
    assert set(old) <= set(new)
    reinitialised = {entry["layer"] for entry in result.changes if entry["change"].endswith("initializer")}
    for path, layer in old.items():
        if path in reinitialised or type(new[path]) is not type(layer):
            continue  # re-initialised, or an activation layer replaced by another class
        kept = layer.get_weights()
        assert all(np.array_equal(a, b) for a, b in zip(new[path].get_weights(), kept)), path
        assert len(new[path].get_weights()) == len(kept), path
    for path in reinitialised:
        assert any(not np.array_equal(a, b) for a, b in zip(new[path].get_weights(), old[path].get_weights()))
    result.model.run_eagerly = True
    loss = result.model.train_on_batch(x, y)
    assert np.all(np.isfinite(np.asarray(loss, dtype="float64")))
    _assert_unchanged(model, before, len(model.layers))


def test_output_and_softmax_activation_layers_are_kept(keras_module, graphs):
    from gradadvisor.surgery import rewrite

    model = graphs["multi_io"][0]
    for setup in (Setup(activation="relu", normalization="batchnorm_after"), Setup(activation="prelu")):
        new = _leaves(rewrite(model, setup).model)
        assert (type(new["class"]).__name__, type(new["logits"]).__name__) == ("Softmax", "Dense")
        assert new["logits"].activation.__name__ == "linear"
        assert type(new["leaky"]).__name__ == "LeakyReLU" and new["leaky"].negative_slope == 0.1
        assert (type(new["prelu"]).__name__, type(new["elu"]).__name__) == ("PReLU", "ELU")
    gelu = _leaves(rewrite(model, Setup(activation="gelu")).model)
    # ReLU(6.) is a capped ReLU: it becomes an Activation layer of the same name.
    assert (type(gelu["conv_relu6"]).__name__, gelu["conv_relu6"].activation.__name__) == ("Activation", "gelu")
    changes = describe_changes(model, Setup(activation="gelu"))
    assert {"layer": "conv_relu6", "change": "activation", "from": "relu6", "to": "gelu"} in changes


def test_wrapped_and_shared_layers_are_rewritten_inside(keras_module, graphs):
    from gradadvisor.surgery import rewrite

    bilstm = _leaves(rewrite(graphs["bilstm"][0], Setup(initializer="glorot_normal", activation="elu")).model)
    assert bilstm["td"].layer.activation.__name__ == "elu"
    forward = bilstm["bi1"].forward_layer
    assert (_initializer(forward.cell), _initializer(forward.cell, "recurrent_initializer")) == (
        "GlorotNormal", "Orthogonal")
    assert forward.cell.activation.__name__ == "tanh"  # recurrent layers keep their own
    result = rewrite(graphs["shared"][0], Setup(activation="leaky_relu", normalization="batchnorm_before"))
    shared = result.model.get_layer("shared")
    # A shared layer stays one layer, called at both nodes, and so do the layers inserted after it.
    assert len(shared._inbound_nodes) == 2
    assert len(result.model.get_layer("shared_bn")._inbound_nodes) == 2
    assert _classes(result.model).count("LeakyReLU") == 2


def test_layers_that_cannot_be_rewritten_are_kept_and_named(keras_module):
    from gradadvisor.surgery import kept_layers, rewrite

    keras = keras_module

    @keras.saving.register_keras_serializable(package="gradadvisor_tests")
    class TanhOnlyDense(keras.layers.Dense):
        def __init__(self, units, **kwargs):
            if kwargs.get("activation") not in ("tanh", None):
                raise ValueError(f"TanhOnlyDense takes tanh only, not {kwargs['activation']}")
            super().__init__(units, **kwargs)

    def scaled_tanh(x):
        return 1.7 * keras.ops.tanh(x)

    inputs = keras.Input((6,), name="x")
    frozen = keras.layers.Dense(6, activation="sigmoid", name="frozen")
    frozen.trainable = False
    h = frozen(inputs)
    h = TanhOnlyDense(6, activation="tanh", name="picky")(h)
    h = keras.layers.Dense(6, activation=scaled_tanh, name="custom")(h)
    main = keras.layers.ReLU(6.0, name="main_relu6")(keras.layers.Dense(6, name="pre")(h))
    # Squeeze-and-excitation style gates: a sigmoid, and MobileNetV3's hard sigmoid.
    gate = keras.layers.Dense(6, activation="sigmoid", name="gate")(main)
    hard_gate = keras.layers.ReLU(6.0, name="hard_gate")(keras.layers.Dense(6, name="hard_pre")(main) + 3.0) / 6.0
    h = keras.layers.Multiply(name="excite")([main, gate]) * hard_gate
    outputs = keras.layers.Dense(2, activation="softmax", name="out")(h)
    model = keras.Model(inputs, outputs, name="awkward")
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    before = _snapshot(model)

    result = rewrite(model, Setup(activation="relu"))
    assert [entry["layer"] for entry in result.skipped][:3] == ["frozen", "picky", "custom"]
    assert {entry["layer"] for entry in result.skipped[3:]} == {"gate", "hard_gate"}
    reasons = {entry["layer"]: entry["reason"] for entry in result.skipped}
    assert reasons["frozen"] == "it is frozen (trainable=False), so it keeps its settings and weights"
    assert reasons["picky"] == (
        "TanhOnlyDense could not be rebuilt with the new activation (TanhOnlyDense takes tanh only, not relu)")
    assert reasons["custom"] == ("its activation 'scaled_tanh' is not a built-in Keras activation, so "
                                 "gradadvisor cannot tell whether replacing it is safe")
    assert reasons["gate"].startswith("its sigmoid output multiplies another tensor: it is a gate")
    assert reasons["hard_gate"].startswith("its relu6 output multiplies another tensor: it is a gate")
    assert kept_layers(model, Setup(activation="relu")) == result.skipped
    # The block's input feeds the multiplications too, but it is what the gates scale.
    assert result.changes == [{"layer": "main_relu6", "change": "activation", "from": "relu6", "to": "relu"}]
    new = result.model
    assert [new.get_layer(name).activation.__name__ for name in ("frozen", "picky", "gate")] == [
        "sigmoid", "tanh", "sigmoid"]
    assert new.get_layer("hard_gate").max_value == 6.0
    assert all(np.array_equal(a, b) for a, b in zip(_snapshot(new), before))
    assert not new.get_layer("frozen").trainable
    assert np.isfinite(new.train_on_batch(np.ones((2, 6), "float32"), np.array([0, 1])))
    assert result.to_dict() == {"changes": result.changes, "skipped": result.skipped}


def test_a_change_that_fails_to_build_is_dropped_and_the_rest_is_rewritten(keras_module):
    from gradadvisor.surgery import kept_layers, rewrite

    keras = keras_module
    # One Dense layer applied to a sequence and to a vector: a PReLU after it is
    # built for the first input's rank and refuses the second.
    sequence, vector = keras.Input((5, 4), name="sequence"), keras.Input((4,), name="vector")
    shared = keras.layers.Dense(4, activation="tanh", name="shared")
    pooled = keras.layers.GlobalAveragePooling1D(name="pool")(shared(sequence))
    other = keras.layers.Dense(4, activation="tanh", name="other")(shared(vector))
    outputs = keras.layers.Dense(1, name="out")(keras.layers.Concatenate(name="join")([pooled, other]))
    model = keras.Model([sequence, vector], outputs, name="two_ranks")
    model.compile(keras.optimizers.SGD(0.1), "mse")

    assert kept_layers(model, Setup(activation="prelu")) == []  # only building finds it
    result = rewrite(model, Setup(activation="prelu"))
    assert [entry["layer"] for entry in result.skipped] == ["shared"]
    assert result.skipped[0]["reason"].startswith("Dense could not be rebuilt with the new activation, insert_after (")
    assert {entry["layer"] for entry in result.changes} == {"other"}
    assert result.model.get_layer("shared").activation.__name__ == "tanh"
    assert _classes(result.model).count("PReLU") == 1
    x = [np.ones((2, 5, 4), "float32"), np.ones((2, 4), "float32")]
    assert np.isfinite(result.model.train_on_batch(x, np.zeros((2, 1), "float32")))


def test_bidirectional_direction_wraps_recurrent_layers_under_their_names(keras_module):
    keras = keras_module
    inputs = keras.Input((6, 2))
    sequence = keras.layers.SimpleRNN(4, return_sequences=True, name="first")(inputs)
    last = keras.layers.LSTM(3, name="second")(sequence)
    stateful = keras.layers.GRU(3, return_state=True, name="with_state")(inputs)
    outputs = keras.layers.Dense(2, activation="softmax", name="out")(
        keras.layers.Concatenate(name="join")([last, stateful[0]]))
    model = keras.Model(inputs, outputs)
    model.compile("sgd", "sparse_categorical_crossentropy")
    from gradadvisor.surgery import rewrite

    with pytest.warns(UserWarning, match="'out' has weights of other shapes"):
        result = rewrite(model, Setup(cell="gru", direction="bidirectional"))
    new = result.model
    first, second = new.get_layer("first"), new.get_layer("second")
    assert type(first).__name__ == type(second).__name__ == "Bidirectional"
    assert (type(first.forward_layer).__name__, type(second.forward_layer).__name__) == ("GRU", "LSTM")
    assert first.forward_layer.return_sequences and not second.forward_layer.return_sequences
    # A layer returning its states keeps its direction (Bidirectional would return twice the states).
    assert type(new.get_layer("with_state")).__name__ == "GRU"
    assert {(entry["layer"], entry["to"]) for entry in result.changes if entry["change"] == "direction"} == {
        ("first", "bidirectional"), ("second", "bidirectional")}
    x = np.random.default_rng(0).normal(size=(4, 6, 2)).astype("float32")
    assert np.isfinite(new.train_on_batch(x, np.array([0, 1, 0, 1])))
    assert "layers.Bidirectional(layers.GRU(" in snippet(Setup(cell="gru", direction="bidirectional"), model=model)


def test_batchnorm_goes_in_where_an_identity_stands_between_layer_and_activation(keras_module):
    keras = keras_module
    # The shape of a model whose BatchNormalization layers were replaced by Identity.
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="d"), keras.layers.Identity(name="gone_bn"),
                              keras.layers.Activation("sigmoid", name="act"), keras.layers.Dense(2, name="out")])
    before = describe_changes(model, Setup(normalization="batchnorm_before"))
    after = describe_changes(model, Setup(normalization="batchnorm_after"))
    assert [(e["layer"], e["change"]) for e in before] == [("d", "insert_after")]
    assert [(e["layer"], e["change"]) for e in after] == [("act", "insert_after")]
    assert [layer.name for layer in apply_setup(model, Setup(normalization="batchnorm_before")).layers] == [
        "d", "d_bn", "gone_bn", "act", "out"]
