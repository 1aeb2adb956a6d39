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
        "recurrent_initializer, optimizer, optimizer_learning_rate, warmup_steps. Remove it or correct its spelling.")


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
