"""The probe measures real training steps, on a copy, and rejects bad data clearly."""

import math

import numpy as np
import pytest

from gradadvisor.errors import DataError, UsageError
from gradadvisor.loading import synthetic_data, validate_data
from gradadvisor.probe import ProbeResult, run_probe


def _mlp(keras, depth, activation, init, width=16, inputs=8, classes=3):
    layers = [keras.Input((inputs,))]
    layers += [keras.layers.Dense(width, activation=activation, kernel_initializer=init,
                                  name=f"h{i}") for i in range(depth)]
    layers.append(keras.layers.Dense(classes, activation="softmax", name="out"))
    model = keras.Sequential(layers)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
    return model


def _classification(num=128, inputs=8, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num, inputs)).astype("float32")
    y = (np.argmax(x[:, :classes], axis=1)).astype("int32")
    return x, y


def test_deep_sigmoid_first_layer_gradient_is_orders_below_last(keras_module):
    keras = keras_module
    model = _mlp(keras, 8, "sigmoid", keras.initializers.RandomNormal(stddev=0.05, seed=1))
    x, y = _classification()
    probe = run_probe(model, validate_data(model, x, y, "test"), steps=5, batch_size=32)
    first = np.median(probe.series("h0", "grad_norm"))
    last = np.median(probe.series("out", "grad_norm"))
    assert first < last * 1e-4


def test_large_init_relu_goes_nonfinite_and_records_step_and_layer(keras_module):
    keras = keras_module
    model = _mlp(keras, 6, "relu", keras.initializers.RandomNormal(stddev=3.0, seed=3))
    x, y = _classification()
    probe = run_probe(model, validate_data(model, x, y, "test"), steps=10, batch_size=16)
    assert probe.nonfinite is not None
    assert probe.steps_run == probe.nonfinite["step"] + 1 < 10
    names = [info.name for info in probe.layers]
    assert probe.nonfinite["first_layer_from_output"] in names
    assert probe.nonfinite["first_layer_from_input"] in names
    origin = names.index(probe.nonfinite["first_layer_from_input"])
    closest_to_loss = names.index(probe.nonfinite["first_layer_from_output"])
    assert origin <= closest_to_loss


def test_simple_rnn_with_small_recurrent_weights_decays_toward_early_timesteps(keras_module):
    keras = keras_module
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 30, 2)).astype("float32")
    y = (x[:, 0, 0] > 0).astype("float32")
    model = keras.Sequential([
        keras.Input((30, 2)),
        keras.layers.SimpleRNN(8, recurrent_initializer=keras.initializers.RandomNormal(stddev=0.05, seed=2),
                               name="rnn"),
        keras.layers.Dense(1, activation="sigmoid", name="out")])
    model.compile("adam", "binary_crossentropy")
    probe = run_probe(model, validate_data(model, x, y, "test"), steps=3, batch_size=32)
    norms = np.median(np.array(probe.timestep_grad_norms["rnn"]), axis=0)
    assert norms.shape == (30,)
    assert norms[0] < norms[-1] * 1e-6
    assert np.all(np.diff(norms[-10:]) > 0)


def test_user_model_weights_are_bit_identical_after_probe(keras_module):
    keras = keras_module
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    hidden = keras.layers.BatchNormalization()(hidden)
    outputs = keras.layers.Dense(3, activation="softmax")(hidden)
    model = keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy")
    before = [w.copy() for w in model.get_weights()]
    x, y = _classification()
    run_probe(model, validate_data(model, x, y, "test"), steps=3, batch_size=16)
    after = model.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    assert model.optimizer.iterations.numpy() == 0


def test_subclassed_model_is_probed_by_variable_and_restored(keras_module):
    keras = keras_module

    class Small(keras.Model):
        def __init__(self):
            super().__init__()
            self.hidden = keras.layers.Dense(8, activation="relu")
            self.out = keras.layers.Dense(2, activation="softmax")

        def call(self, inputs):
            return self.out(self.hidden(inputs))

    model = Small()
    model(np.zeros((1, 4), "float32"))
    model.compile("adam", "sparse_categorical_crossentropy")
    optimizer = model.optimizer
    before = [w.copy() for w in model.get_weights()]
    from gradadvisor.loading import Data

    rng = np.random.default_rng(0)
    data = Data([rng.normal(size=(32, 4)).astype("float32")], rng.integers(0, 2, 32), "test")
    probe = run_probe(model, data, steps=2, batch_size=16)
    assert probe.copy_mode == "restore"
    assert not probe.activations_recorded
    assert {info.name for info in probe.weighted_layers()} == {"dense", "dense_1"} or len(
        probe.weighted_layers()) == 2
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert model.optimizer is optimizer and optimizer.iterations.numpy() == 0


def test_statistics_match_a_naive_gradient_tape_reference(keras_module):
    """The in-graph statistics equal a slow, obviously correct eager computation."""
    import tensorflow as tf

    keras = keras_module
    model = _mlp(keras, 2, "tanh", "glorot_uniform", width=8)
    x, y = _classification(num=32)
    probe = run_probe(model, validate_data(model, x, y, "test"), steps=1, batch_size=32, seed=0)
    # Batch order of step 0 with seed 0: the probe's permutation.
    order = np.random.default_rng(0).permutation(32)
    xb, yb = tf.constant(x[order]), tf.constant(y[order])
    with tf.GradientTape() as tape:
        prediction = model(xb, training=True)
        loss = keras.losses.SparseCategoricalCrossentropy()(yb, prediction)
    layer = model.get_layer("h1")
    grads = tape.gradient(loss, layer.trainable_weights)
    norm = math.sqrt(sum(float(tf.reduce_sum(g * g)) for g in grads))
    size = sum(int(np.prod(g.shape)) for g in grads)
    assert probe.loss[0] == pytest.approx(float(loss), rel=1e-5)
    assert probe.series("h1", "grad_norm")[0] == pytest.approx(norm, rel=1e-4)
    assert probe.series("h1", "grad_rms")[0] == pytest.approx(norm / math.sqrt(size), rel=1e-4)
    assert probe.series("h1", "grad_max_abs")[0] == pytest.approx(
        max(float(tf.reduce_max(tf.abs(g))) for g in grads), rel=1e-4)
    weight_norm = math.sqrt(sum(float(np.sum(w ** 2)) for w in layer.get_weights()))
    assert probe.series("h1", "weight_norm")[0] == pytest.approx(weight_norm, rel=1e-5)
    # SGD(0.01): the update is exactly lr * gradient.
    assert probe.series("h1", "update_ratio")[0] == pytest.approx(0.01 * norm / weight_norm, rel=1e-3)
    hidden = keras.Model(model.inputs, layer.output)(xb).numpy()
    assert probe.series("h1", "activation_mean")[0] == pytest.approx(hidden.mean(), abs=1e-6)
    assert probe.series("h1", "saturated_fraction")[0] == pytest.approx(np.mean(np.abs(hidden) > 0.99))


def test_dead_fraction_counts_units_zero_for_the_whole_batch(keras_module):
    keras = keras_module
    model = keras.Sequential([
        keras.Input((4,)),
        keras.layers.Dense(4, activation="relu", name="h",
                           kernel_initializer=keras.initializers.Constant(0.0),
                           bias_initializer=keras.initializers.Constant([1.0, -1.0, -1.0, -1.0])),
        keras.layers.Dense(2, activation="softmax", name="out")])
    model.compile(keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 4)).astype("float32"), rng.integers(0, 2, 16)
    probe = run_probe(model, validate_data(model, x, y, "test"), steps=2, batch_size=8)
    assert probe.series("h", "dead_fraction").tolist() == [0.75, 0.75]


def test_probe_result_round_trips_exactly(keras_module):
    keras = keras_module
    model = _mlp(keras, 6, "relu", keras.initializers.RandomNormal(stddev=3.0, seed=3))
    x, y = _classification()
    probe = run_probe(model, validate_data(model, x, y, "test"), steps=4, batch_size=16)
    import json

    text = json.dumps(probe.to_dict(), allow_nan=False)
    again = ProbeResult.from_dict(json.loads(text))
    assert json.dumps(again.to_dict(), allow_nan=False) == text
    assert again.layers == probe.layers


@pytest.mark.parametrize("kind", ["dense", "conv2d", "embedding_lstm", "two_inputs"])
def test_synthetic_data_fits_the_model(keras_module, kind):
    keras = keras_module
    layers = keras.layers
    if kind == "dense":
        model = keras.Sequential([keras.Input((6,)), layers.Dense(4, activation="relu"),
                                  layers.Dense(3, activation="softmax")])
        model.compile("adam", "sparse_categorical_crossentropy")
    elif kind == "conv2d":
        model = keras.Sequential([keras.Input((8, 8, 1)), layers.Conv2D(4, 3, activation="relu"),
                                  layers.Flatten(), layers.Dense(1)])
    elif kind == "embedding_lstm":
        model = keras.Sequential([keras.Input((12,), dtype="int32"), layers.Embedding(50, 8),
                                  layers.LSTM(8, name="lstm"), layers.Dense(1, activation="sigmoid")])
    else:
        a, b = keras.Input((5,), name="a"), keras.Input((3,), name="b")
        merged = layers.Concatenate()([layers.Dense(4)(a), layers.Dense(4)(b)])
        model = keras.Model([a, b], layers.Dense(4, activation="softmax")(merged))
        model.compile("adam", "categorical_crossentropy")
    data = synthetic_data(model, num_samples=40, seed=1)
    assert "synthetic" in data.source
    validate_data(model, data.x, data.y, "check")
    if kind == "embedding_lstm":
        assert data.x[0].dtype.kind == "i" and data.x[0].max() < 50 and data.x[0].min() >= 0
    if kind == "two_inputs":
        assert [a.shape for a in data.x] == [(40, 5), (40, 3)]
        assert np.allclose(data.y.sum(axis=1), 1.0)
    probe = run_probe(model, None, steps=2, batch_size=8)
    assert probe.steps_run == 2 and "synthetic" in probe.data_source
    if kind == "embedding_lstm":
        assert any(info.class_name == "Embedding" for info in probe.layers)
        assert "lstm" in probe.timestep_grad_norms


@pytest.fixture(scope="module")
def two_input_model(keras_module):
    keras = keras_module
    a, b = keras.Input((5,), name="a"), keras.Input((3,), name="b")
    merged = keras.layers.Concatenate()([a, b])
    model = keras.Model([a, b], keras.layers.Dense(4, activation="softmax")(merged))
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


def _good(n=10):
    return [np.zeros((n, 5), "float32"), np.zeros((n, 3), "float32")], np.zeros(n, "int32")


@pytest.mark.parametrize("change, message", [
    (lambda x, y: ([np.zeros((10, 4), "float32"), x[1]], y),
     "The input 'a' has shape (10, 4), but the model expects (None, 5). Pass data whose samples "
     "have shape (5,)."),
    (lambda x, y: ([x[0]], y),
     "The model has 2 input(s) (a, b), but the data gives 1. Pass one array per model input."),
    (lambda x, y: ([np.array([["s"] * 5] * 10), x[1]], y),
     "The input 'a' has dtype <U1, but the model expects numbers (float32). Convert it to a "
     "numeric array."),
    (lambda x, y: (x, np.full(10, 7)),
     "The labels y must be integers from 0 to 3 for sparse_categorical_crossentropy with 4 output "
     "units, but range from 7 to 7. Encode the classes as 0..n-1."),
    (lambda x, y: ([np.zeros((0, 5), "float32"), np.zeros((0, 3), "float32")], y[:0]),
     "The input 'a' is empty. Pass at least one sample."),
    (lambda x, y: ([np.full((10, 5), np.nan, "float32"), x[1]], y),
     "The input 'a' holds 50 NaN or infinite value(s). Clean or impute them before diagnosing."),
    (lambda x, y: (x, y[:7]),
     "x and y have different numbers of samples (10, 10 vs 7). Pass one target per sample."),
    (lambda x, y: ({"a": x[0], "c": x[1]}, y),
     "The data has no input named 'b'; it has 'a', 'c'. Name the arrays after the model's inputs."),
])
def test_bad_data_gets_one_clear_line(two_input_model, change, message):
    x, y = change(*_good())
    with pytest.raises(DataError) as caught:
        validate_data(two_input_model, x, y, "test")
    assert str(caught.value) == message
    assert "\n" not in str(caught.value)


def test_steps_and_batch_size_are_validated(two_input_model):
    x, y = _good()
    data = validate_data(two_input_model, x, y, "test")
    with pytest.raises(UsageError, match="The 'steps' parameter must be a whole number of at least 1. Got 0 instead."):
        run_probe(two_input_model, data, steps=0)
    with pytest.raises(UsageError) as caught:
        run_probe(two_input_model, data, steps=1, batch_size=11)
    assert str(caught.value) == ("The batch size 11 is larger than the data (10 samples). "
                                 "Pass --batch-size 10 or less.")


@pytest.mark.parametrize("optimizer", ["adam", "sgd_momentum", "adamw"])
def test_update_sizes_read_from_the_optimizer_equal_those_from_a_copy(keras_module, optimizer):
    """The update the optimizer writes measures the same as after - before from a copy."""
    import tensorflow as tf

    from gradadvisor.probe.updates import apply_and_measure, updates_can_be_recorded

    keras = keras_module
    make = {"adam": lambda: keras.optimizers.Adam(0.01),
            "sgd_momentum": lambda: keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True),
            "adamw": lambda: keras.optimizers.AdamW(0.01, weight_decay=0.1)}[optimizer]
    rng = np.random.default_rng(0)
    gradients = [tf.constant(rng.normal(size=shape).astype("float32")) for shape in ((4, 3), (3,))]
    measured = []
    for record in (True, False):
        variables = [keras.Variable(rng.normal(size=g.shape).astype("float32") * 0 + 1.0) for g in gradients]
        opt = make()
        opt.build(variables)
        record = record and updates_can_be_recorded(opt)
        step = tf.function(lambda: apply_and_measure(tf, opt, gradients, variables, record), autograph=False)
        for _ in range(3):  # momentum and Adam's moments make later updates differ from the first
            weights, deltas = step()
        measured.append((np.array(weights), np.array(deltas)))
    assert updates_can_be_recorded(make()) == (optimizer != "adamw")
    np.testing.assert_allclose(measured[0][0], measured[1][0], rtol=1e-6)
    np.testing.assert_allclose(measured[0][1], measured[1][1], rtol=1e-4)
    assert np.all(measured[0][1] > 0)


@pytest.mark.parametrize("limit", [0, 8, 10**9], ids=["one_by_one", "mixed", "all_batched"])
def test_weight_statistics_fused_equal_the_per_layer_reference(keras_module, limit):
    """weight_stats_matrix (the probe's) equals layer_weight_stats (the monitor's), NaN counts too,
    whether the variables are reduced one by one, all batched, or some of each."""
    import tensorflow as tf

    from gradadvisor.probe.stats import WEIGHT_STATS, LayerReductions, layer_weight_stats, weight_stats_matrix

    rng = np.random.default_rng(1)
    shapes = [(5, 4), (4,), (4, 2), (2,)]
    reductions = LayerReductions(shapes, [0, 0, 1, 1], 2, limit=limit)
    before = [rng.normal(size=s).astype("float32") for s in shapes]
    after = [b - 0.01 * rng.normal(size=b.shape).astype("float32") for b in before]
    for bad in (False, True):
        grads = [rng.normal(size=s).astype("float32") for s in shapes]
        grads[1][0] = 0.0
        if bad:
            grads[2][0, 0], grads[2][1, 1] = np.nan, np.inf
        matrix, total = weight_stats_matrix(
            tf, [tf.constant(g) for g in grads], reductions.square_sums(tf, [tf.constant(b) for b in before]),
            reductions.square_sums(tf, [tf.constant(a - b) for a, b in zip(after, before)]), reductions,
            [24.0, 10.0])
        for row, (first, last) in enumerate([(0, 2), (2, 4)]):
            reference, _ = layer_weight_stats(tf, [tf.constant(a) for a in after[first:last]],
                                              [tf.constant(g) for g in grads[first:last]],
                                              [tf.constant(b) for b in before[first:last]])
            expected = np.array([float(reference[name]) for name in WEIGHT_STATS])
            np.testing.assert_allclose(matrix.numpy()[row], expected, rtol=1e-4, equal_nan=True)
        assert math.isfinite(float(total)) != bad


def test_batched_and_per_variable_reductions_give_the_same_statistics_on_a_model(keras_module):
    """A model whose layers mix large and small variables (kernels, biases, batch-norm scales and
    offsets): the probe's statistics are the same whether every variable is reduced on its own,
    the small ones together, or all of them together."""
    import tensorflow as tf

    from gradadvisor.probe.step import ProbeStep
    from gradadvisor.probe.working_copy import make_loss_function

    keras = keras_module
    keras.utils.set_random_seed(3)
    model = keras.Sequential([
        keras.Input((6, 6, 2)), keras.layers.Conv2D(8, 3, name="conv"), keras.layers.BatchNormalization(name="bn"),
        keras.layers.ReLU(name="relu"), keras.layers.DepthwiseConv2D(3, name="depthwise"),
        keras.layers.Flatten(name="flat"), keras.layers.Dense(12, activation="relu", name="hidden"),
        keras.layers.Dense(3, activation="softmax", name="out")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    sizes = sorted(int(np.prod(v.shape)) for v in model.trainable_weights)
    data = synthetic_data(model, num_samples=32, seed=0)
    results = {}
    for limit in (0, 20, 10**9):  # one by one; biases and batch-norm vectors batched; all batched
        work = keras.models.clone_model(model)
        work.set_weights(model.get_weights())
        probe = ProbeStep(work, tf, keras, True, make_loss_function(model.loss, keras), keras.optimizers.Adam(0.01))
        probe.batched_variable_size = limit
        results[limit] = probe.run(data, 3, 16, 0, None)
    assert sizes[0] <= 20 < sizes[-1]  # the middle setting does split the variables
    reference = results[0]["stats"]
    assert set(reference) == {"conv", "bn", "depthwise", "hidden", "out"} | {"relu", "flat"}
    for limit in (20, 10**9):
        assert results[limit]["stats"].keys() == reference.keys()
        for layer, stats in reference.items():
            for name, series in stats.items():
                np.testing.assert_allclose(results[limit]["stats"][layer][name], series, rtol=2e-5, atol=1e-7,
                                           err_msg=f"{limit} {layer} {name}")
        np.testing.assert_allclose(results[limit]["global_grad_norm"], results[0]["global_grad_norm"], rtol=2e-5)


def test_activation_statistics_equal_a_naive_reference_with_and_without_nonfinite_entries(keras_module):
    """The fast path (finite outputs) and the masked one (NaN, inf) against numpy, in one call."""
    import tensorflow as tf

    from gradadvisor.probe.stats import activation_stats_vector

    rng = np.random.default_rng(2)
    relu = np.maximum(rng.normal(size=(6, 3, 5)), 0.0).astype("float32")
    relu[..., 1] = 0.0  # one unit dead on every sample and position
    sigmoid = (1.0 / (1.0 + np.exp(-3.0 * rng.normal(size=(6, 4))))).astype("float32")
    tanh = np.tanh(2.0 * rng.normal(size=(6, 4))).astype("float32")

    def reference(values, activation):
        finite = np.isfinite(values)
        safe = np.where(finite, values, 0.0).astype("float64")
        stats = {"activation_mean": safe.mean(), "activation_std": safe.std(),
                 "nonfinite_activations": float((~finite).sum())}
        if activation == "sigmoid":
            stats["saturated_fraction"] = np.mean((safe < 0.01) | (safe > 0.99))
        if activation == "tanh":
            stats["saturated_fraction"] = np.mean(np.abs(safe) > 0.99)
        if activation == "relu":
            stats["dead_fraction"] = 1.0 - np.mean(safe.reshape(-1, safe.shape[-1]).max(axis=0) > 0)
        return stats

    for bad in (False, True):
        outputs = [relu.copy(), sigmoid.copy(), tanh.copy()]
        if bad:
            outputs[0][0, 0, 0], outputs[2][1, 1] = np.nan, -np.inf
        items = list(zip(outputs, ["relu", "sigmoid", "tanh"]))
        vector, names = activation_stats_vector(tf, [(tf.constant(o), a) for o, a in items])
        got = iter(vector.numpy().tolist())
        for (values, activation), layer_names in zip(items, names):
            expected = reference(values, activation)
            assert layer_names == list(expected)
            for name in layer_names:
                assert next(got) == pytest.approx(expected[name], rel=1e-5, abs=1e-6), (bad, activation, name)
        assert next(got, None) is None
