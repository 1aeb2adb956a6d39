"""GradientMonitor inside real model.fit() runs: tiny seeded models, no mocks."""

import math
import subprocess
import sys
import warnings

import numpy as np
import pytest

from gradadvisor.errors import UsageError


@pytest.fixture(scope="module")
def callback_module(keras):
    import gradadvisor.callback as module

    return module


@pytest.fixture(scope="module")
def GradientMonitor(callback_module):
    return callback_module.GradientMonitor


def small_data(num_samples=128, num_features=16, num_classes=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_samples, num_features)).astype("float32")
    y = (np.abs(x[:, :num_classes]).argmax(axis=1)).astype("int32")
    return x, y


def small_model(keras, optimizer=None, batchnorm_dropout=False, name="small", seed=0):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input(shape=(16,)), keras.layers.Dense(16, activation="relu", name="hidden")]
    if batchnorm_dropout:
        layers += [keras.layers.BatchNormalization(name="norm"), keras.layers.Dropout(0.3, name="drop")]
    layers += [keras.layers.Dense(8, activation="relu", name="hidden_2"),
               keras.layers.Dense(4, activation="softmax", name="output")]
    model = keras.Sequential(layers, name=name)
    model.compile(optimizer=optimizer or keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def regression(keras, learning_rate=1e-5, seed=0):
    """A tanh regression model and data whose target is the first feature."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(256, 16)).astype("float32")
    y = x[:, :1].copy()
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input(shape=(16,)), keras.layers.Dense(8, activation="tanh", name="hidden"),
                              keras.layers.Dense(1, name="output")])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss="mse")
    return model, x, y


def monitor_warnings(record):
    from gradadvisor.callback import GradientWarning

    return [str(w.message) for w in record if issubclass(w.category, GradientWarning)]


# --------------------------------------------------------------------------
# What users rely on

def test_diverging_model_stops_before_the_loss_turns_nan(keras, GradientMonitor):
    from gradadvisor.examples import build_example

    # The premise: left alone, this model's loss turns NaN within its first epoch.
    model, x, y = build_example("high-lr-relu")
    unmonitored = model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert math.isnan(unmonitored.history["loss"][-1])

    model, x, y = build_example("high-lr-relu")
    layer_names = [layer.name for layer in model.layers]
    monitor = GradientMonitor(on_problem="stop")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        history = model.fit(x, y, batch_size=32, epochs=3, verbose=0, callbacks=[monitor])

    losses = history.history["loss"]
    assert len(losses) == 1 and math.isfinite(losses[0])
    assert all(math.isfinite(entry["loss"]) for entry in monitor.history)
    assert model.stop_training is True
    assert monitor.mode == "train_step"
    assert monitor.stop_reason.startswith(
        f"GradientMonitor stopped training at step {monitor.history[-1]['step']}: {monitor.findings[0].rule} ")
    assert [name for name in layer_names if f"Layer: {name} " in monitor.stop_reason]
    assert monitor.stop_reason in monitor_warnings(record)
    assert monitor.findings[0].severity == "error"


def test_exploding_gradients_stop_training_at_once_naming_a_layer(keras, GradientMonitor):
    from gradadvisor.examples import build_example

    model, x, y = build_example("large-init-relu")
    monitor = GradientMonitor(on_problem="stop")
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[monitor])
    # The loss reached about 1e15 at step 1; the gradient norm grew a billionfold.
    assert [entry["step"] for entry in monitor.history] == [0, 1]
    assert monitor.findings[0].rule == "GA203" and monitor.findings[0].category == "exploding_gradients"
    assert "GA203 gradient-blowup (error): The global gradient norm grew by a factor of" in monitor.stop_reason
    assert "has the fastest-growing gradient (norm" in monitor.stop_reason
    assert [layer.name for layer in model.layers if f"Layer: {layer.name} " in monitor.stop_reason]


def test_healthy_model_trains_without_a_warning(keras, GradientMonitor):
    from gradadvisor.examples import build_example

    model, x, y = build_example("healthy-relu")
    monitor = GradientMonitor()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[monitor])
    assert monitor_warnings(record) == []
    assert monitor.findings == [] and monitor.stop_reason is None
    assert monitor.mode == "train_step"
    # The first three measurements are made whatever they cost, at steps 0, 1 and 3.
    steps = [entry["step"] for entry in monitor.history]
    assert steps[:3] == [0, 1, 3] and steps == sorted(set(steps))
    diagnosis = monitor.diagnosis()
    assert diagnosis.status == "healthy"
    assert diagnosis.probe.steps_run == len(monitor.history[-monitor.window:])


def test_statistics_match_a_naive_gradient_tape_computation(keras, tf, GradientMonitor):
    """Step 0 is measured on the whole data (one batch, no shuffling): recompute it by hand."""
    x, y = small_data(64)
    model = small_model(keras, keras.optimizers.SGD(0.1))
    hidden = model.get_layer("hidden")
    with tf.GradientTape() as tape:
        probabilities = model(x, training=True)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, probabilities))
    gradients = tape.gradient(loss, hidden.trainable_weights)
    expected_norm = math.sqrt(sum(float(tf.reduce_sum(g ** 2)) for g in gradients))
    weight_norm = math.sqrt(sum(float(tf.reduce_sum(w ** 2)) for w in hidden.trainable_weights))
    hidden_output = hidden(x).numpy()
    expected_dead = float(np.mean(hidden_output.max(axis=0) == 0))

    monitor = GradientMonitor(every_n_steps=1)
    model.fit(x, y, batch_size=64, epochs=1, shuffle=False, verbose=0, callbacks=[monitor])

    measured = monitor.history[0]
    stats = measured["layers"]["hidden"]
    assert measured["step"] == 0 and measured["batch_size"] == 64
    assert measured["loss"] == pytest.approx(float(loss), rel=1e-4)
    assert stats["grad_norm"] == pytest.approx(expected_norm, rel=1e-4)
    assert stats["weight_norm"] == pytest.approx(weight_norm, rel=1e-5)
    # Plain SGD moves the weights by exactly learning_rate * gradient.
    assert stats["update_ratio"] == pytest.approx(0.1 * expected_norm / weight_norm, rel=1e-4)
    assert stats["dead_fraction"] == pytest.approx(expected_dead)
    assert set(stats) >= {"grad_rms", "grad_max_abs", "zero_grad_fraction", "nonfinite_grads",
                          "activation_mean", "activation_std", "nonfinite_activations"}


def test_training_is_numerically_unchanged_by_the_monitor(keras, GradientMonitor):
    """Same seed, with and without the monitor: the same weights, batch-norm statistics included."""
    x, y = small_data(256)

    def train(callbacks):
        model = small_model(keras, keras.optimizers.Adam(1e-2), batchnorm_dropout=True)
        keras.utils.set_random_seed(1)
        history = model.fit(x, y, batch_size=32, epochs=2, validation_data=(x[:64], y[:64]), verbose=0,
                            callbacks=callbacks)
        return model, history.history

    plain, plain_history = train([])
    monitor = GradientMonitor(every_n_steps=5)
    watched, watched_history = train([monitor])
    assert watched_history == plain_history  # loss, accuracy and validation, epoch by epoch
    assert monitor.mode == "train_step"
    measured = {entry["step"] for entry in monitor.history}
    assert {0, 1, 3, 7, 12} <= measured and 2 not in measured  # measured and unmeasured steps ran
    for before, after in zip(plain.weights, watched.weights):
        np.testing.assert_array_equal(after.numpy(), before.numpy(), err_msg=after.path)
    # Built ahead of tracing, the optimizer's variables are named as Keras names them.
    assert [v.path.replace(watched.optimizer.name, "OPT") for v in watched.optimizer.variables] == \
        [v.path.replace(plain.optimizer.name, "OPT") for v in plain.optimizer.variables]
    # The model's own train function is back once fit() returns.
    from gradadvisor.callback import _MonitoredTrainFunction

    assert not isinstance(watched.train_function, _MonitoredTrainFunction)


def test_training_with_fused_kernels_is_bit_identical(keras, GradientMonitor):
    """A MobileNetV2-like block (convolutions, batch norm, ReLU6, a residual Add, dropout).

    Reducing the update's own layer outputs gave TensorFlow's graph rewrites
    one more consumer to work around, and the update differed in the last
    bits (then MobileNetV2's training drifted apart); the outputs are now
    measured in a stateless pass of their own.
    """
    layers = keras.layers
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 4, size=64).astype("int32")

    def train(callbacks):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((8, 8, 3))
        h = layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv")(inputs)
        h = layers.ReLU(6.0, name="relu")(layers.BatchNormalization(name="bn")(h))
        d = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="depthwise")(h)
        d = layers.ReLU(6.0, name="depthwise_relu")(layers.BatchNormalization(name="depthwise_bn")(d))
        d = layers.BatchNormalization(name="project_bn")(layers.Conv2D(16, 1, use_bias=False, name="project")(d))
        h = layers.GlobalAveragePooling2D(name="pool")(layers.Add(name="add")([h, d]))
        outputs = layers.Dense(4, activation="softmax", name="output")(layers.Dropout(0.3, name="drop")(h))
        model = keras.Model(inputs, outputs, name="block")
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
        keras.utils.set_random_seed(1)
        history = model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=callbacks)
        return model, history.history

    plain, plain_history = train([])
    monitor = GradientMonitor(every_n_steps=3)
    watched, watched_history = train([monitor])
    assert watched_history == plain_history
    # Every variable: weights, batch-norm moving statistics, the dropout seed, the optimizer's.
    for before, after in zip(plain.variables + plain.optimizer.variables,
                             watched.variables + watched.optimizer.variables):
        np.testing.assert_array_equal(after.numpy(), before.numpy(), err_msg=after.path)
    np.testing.assert_array_equal(watched.get_layer("drop").seed_generator.state.numpy(),
                                  plain.get_layer("drop").seed_generator.state.numpy())
    # The layer outputs were still measured, on the measured steps.
    assert [entry["step"] for entry in monitor.history] == [0, 1, 3]
    assert {"activation_mean", "activation_std"} <= set(monitor.history[-1]["layers"]["relu"])


def lstm_task(keras, dropout=0.0, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(64, 12, 3)).astype("float32")
    y = x[:, :1, 0].copy()
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input(shape=(12, 3)),
        keras.layers.LSTM(8, dropout=dropout, recurrent_dropout=dropout, name="lstm"),
        keras.layers.Dense(1, name="output"),
    ])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    return model, x, y


def test_timestep_gradients_match_a_naive_gradient_tape_computation(keras, tf, GradientMonitor):
    """The gradient reaching each timestep of the LSTM's input, at step 0, recomputed by hand."""
    model, x, y = lstm_task(keras)
    inputs = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        loss = tf.reduce_mean(keras.losses.mean_squared_error(y, model(inputs, training=True)))
    gradient = tape.gradient(loss, inputs).numpy()
    expected = np.sqrt((gradient ** 2).sum(axis=(0, 2)))

    monitor = GradientMonitor(every_n_steps=1)
    model.fit(x, y, batch_size=64, epochs=1, shuffle=False, verbose=0, callbacks=[monitor])

    measured = monitor.history[0]["timestep_grad_norms"]["lstm"]
    assert len(measured) == 12
    np.testing.assert_allclose(measured, expected, rtol=1e-4)
    assert measured[0] < measured[-1]  # the first timesteps get the least: the task's memory fades


def test_recurrent_training_is_numerically_unchanged_by_the_monitor(keras, GradientMonitor):
    """Measuring timesteps re-runs the LSTM; its dropout draws and weights must not notice."""

    def train(callbacks):
        model, x, y = lstm_task(keras, dropout=0.2)
        keras.utils.set_random_seed(1)
        history = model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=callbacks)
        return model, history.history

    plain, plain_history = train([])
    monitor = GradientMonitor(every_n_steps=2)
    watched, watched_history = train([monitor])
    assert watched_history == plain_history
    assert len(monitor.history) >= 4 and all(len(m["timestep_grad_norms"]["lstm"]) == 12
                                             for m in monitor.history)
    for before, after in zip(plain.weights, watched.weights):
        np.testing.assert_array_equal(after.numpy(), before.numpy(), err_msg=after.path)


def test_long_training_hands_unmeasured_steps_to_keras_own_function(keras, GradientMonitor):
    """Once its trace fits the budget, Keras' function runs the unmeasured steps; nothing else changes."""
    x, y = small_data(1024)

    def train(callbacks):
        model = small_model(keras, keras.optimizers.Adam(1e-3))
        keras.utils.set_random_seed(1)
        history = model.fit(x, y, batch_size=4, epochs=3, verbose=0, callbacks=callbacks)
        return model, history.history

    plain, plain_history = train([])
    # A generous budget lets a trace pay for itself within a second or two of training.
    monitor = GradientMonitor(every_n_steps=64, max_overhead=0.9, loss_spike=None)
    watched, watched_history = train([monitor])
    function = monitor._state.function
    assert function.keras_function_in_use
    assert function.trace_seconds > 0
    assert watched.train_function is function.original  # put back when training ended
    steps = [entry["step"] for entry in monitor.history]
    assert steps[-1] >= 3 * 256 - 64  # measurements went on to the end
    assert watched_history == plain_history
    for before, after in zip(plain.weights, watched.weights):
        np.testing.assert_array_equal(after.numpy(), before.numpy(), err_msg=after.path)


def test_measurements_are_held_to_the_time_budget(keras, GradientMonitor):
    x, y = small_data(256)

    def measured_steps(max_overhead):
        model = small_model(keras)
        monitor = GradientMonitor(max_overhead=max_overhead, loss_spike=None)
        model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[monitor])
        return [entry["step"] for entry in monitor.history], monitor

    stingy, monitor = measured_steps(1e-6)
    assert stingy == [0, 1, 3]  # the free ones; each later one would exceed the budget
    assert monitor._seconds_measuring > 1e-6 * monitor._seconds_training
    generous, _ = measured_steps(0.99)
    assert generous[:5] == [0, 1, 3, 7, 15] and len(generous) >= 6


def test_callable_on_problem_receives_each_finding_once(keras, GradientMonitor):
    from gradadvisor.examples import build_example

    model, x, y = build_example("dying-relu")
    received = []
    monitor = GradientMonitor(on_problem=lambda finding, mon: received.append((finding, mon)))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=32, epochs=1, steps_per_epoch=8, verbose=0, callbacks=[monitor])
    assert received, "dying-relu should trigger at least one finding"
    assert all(mon is monitor for _, mon in received)
    assert "GA401" in {finding.rule for finding, _ in received}
    keys = [(finding.rule, finding.first_layer) for finding, _ in received]
    assert len(keys) == len(set(keys))
    assert [finding for finding, _ in received] == monitor.findings
    assert monitor_warnings(record) == [] and model.stop_training is False


def test_works_with_validation_data_steps_per_epoch_and_other_callbacks(keras, GradientMonitor):
    x, y = small_data(512)
    model = small_model(keras, keras.optimizers.Adam(1e-3))
    monitor = GradientMonitor(every_n_steps=8)
    history = model.fit(
        x, y, batch_size=16, epochs=3, steps_per_epoch=10, validation_data=(x[:64], y[:64]), verbose=0,
        callbacks=[keras.callbacks.EarlyStopping(monitor="val_loss", patience=5), monitor,
                   keras.callbacks.TerminateOnNaN()])
    assert len(history.history["val_loss"]) == 3
    assert [entry["step"] for entry in monitor.history] == [0, 1, 3, 7, 15, 23]
    assert [entry["epoch"] for entry in monitor.history] == [0, 0, 0, 0, 1, 2]
    assert all(entry["batch_size"] == 16 for entry in monitor.history)
    assert "accuracy" in history.history and "_gradadvisor_statistics" not in str(history.history)


def test_nonfinite_loss_is_measured_on_the_next_step_and_named(keras, GradientMonitor):
    """A NaN between two scheduled measurements is still caught, and traced to a layer."""
    model, x, y = regression(keras)
    y[5 * 32 + 3] = np.nan  # in the batch of step 5 (no shuffling): its update makes every weight NaN
    monitor = GradientMonitor(every_n_steps=100, on_problem="stop")
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0, callbacks=[monitor])
    assert [(entry["step"], entry["trigger"]) for entry in monitor.history] == [
        (0, "schedule"), (1, "schedule"), (3, "schedule"), (6, "nonfinite_loss")]
    assert model.stop_training is True
    assert "Layer: hidden " in monitor.stop_reason
    assert "GA301" in {finding.rule for finding in monitor.findings}
    assert monitor.diagnosis().probe.nonfinite["step"] == 6


def test_loss_spike_triggers_a_measurement(keras, GradientMonitor):
    model, x, y = regression(keras)
    y[4 * 32:5 * 32] *= 1000.0  # step 4's loss is about a million times the others
    monitor = GradientMonitor(every_n_steps=100, on_problem=lambda finding, mon: None)
    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0, callbacks=[monitor])
    assert [(entry["step"], entry["trigger"]) for entry in monitor.history] == [
        (0, "schedule"), (1, "schedule"), (3, "schedule"), (5, "loss_spike"), (7, "schedule")]


def test_tensorboard_files_hold_per_layer_scalars_and_histograms(keras, tf, GradientMonitor, tmp_path):
    x, y = small_data(128)
    model = small_model(keras)
    monitor = GradientMonitor(every_n_steps=2, tensorboard_dir=tmp_path / "logs")
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[monitor])
    files = list((tmp_path / "logs").glob("events.out.tfevents.*"))
    assert files
    scalars, histograms = {}, {}
    for path in files:
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                array = tf.make_ndarray(value.tensor)
                plugin = value.metadata.plugin_data.plugin_name
                target = histograms if plugin == "histograms" else scalars
                target.setdefault(value.tag, {})[event.step] = array
    steps = [entry["step"] for entry in monitor.history]
    assert steps == [0, 1, 3]
    for layer in ("hidden", "hidden_2", "output"):
        series = scalars[f"gradients/{layer}/grad_norm"]
        assert sorted(series) == steps
        assert float(series[3]) == pytest.approx(monitor.history[-1]["layers"][layer]["grad_norm"], rel=1e-6)
        assert f"updates/{layer}/update_ratio" in scalars
        buckets = histograms[f"gradients/{layer}/histogram"][0]
        assert buckets.shape == (30, 3)
        num_params = sum(int(np.prod(w.shape)) for w in model.get_layer(layer).trainable_weights)
        assert buckets[:, 2].sum() == num_params
    assert "activations/hidden/dead_fraction" in scalars and "gradients/global_norm" in scalars


def test_report_is_written_when_training_ends(keras, GradientMonitor, tmp_path):
    pytest.importorskip("gradadvisor.report.html")
    x, y = small_data(128)
    model = small_model(keras, name="reported_model")
    path = tmp_path / "grads.html"
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[GradientMonitor(report=path)])
    assert monitor_warnings(record) == []
    text = path.read_text(encoding="utf-8")
    assert text.lstrip().lower().startswith("<!doctype html") and "reported_model" in text


# --------------------------------------------------------------------------
# The fallback mode

def test_custom_train_step_uses_the_probe_batch_and_leaves_training_alone(keras, GradientMonitor):
    class CustomStep(keras.Sequential):
        def train_step(self, data):
            return super().train_step(data)

    x, y = small_data(256)

    def build():
        keras.utils.set_random_seed(0)
        model = CustomStep([keras.Input(shape=(16,)), keras.layers.Dense(16, activation="relu", name="hidden"),
                            keras.layers.BatchNormalization(name="norm"), keras.layers.Dropout(0.3, name="drop"),
                            keras.layers.Dense(4, activation="softmax", name="output")])
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
        return model

    with pytest.raises(UsageError, match=r"needs probe_data .*defines its own train_step.*Pass probe_data=\(x, y\)"):
        build().fit(x, y, epochs=1, verbose=0, callbacks=[GradientMonitor()])

    plain = build()
    keras.utils.set_random_seed(1)
    plain.fit(x, y, batch_size=32, epochs=2, verbose=0)
    watched = build()
    monitor = GradientMonitor(every_n_steps=4, probe_data=(x[:32], y[:32]))
    keras.utils.set_random_seed(1)
    watched.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[monitor])
    assert monitor.mode == "probe_batch"
    assert [entry["step"] for entry in monitor.history] == [0, 1, 3, 7, 11, 15]
    assert all(entry["batch_size"] == 32 for entry in monitor.history)
    assert monitor.history[1]["layers"]["hidden"]["update_ratio"] > 0
    for before, after in zip(plain.weights, watched.weights):
        np.testing.assert_array_equal(after.numpy(), before.numpy(), err_msg=after.path)


def test_probe_batch_statistics_match_a_naive_computation(keras, tf, GradientMonitor):
    """With a learning rate of 0 the probe batch sees the initial weights: recompute by hand."""
    x, y = small_data(64)
    model = small_model(keras, keras.optimizers.SGD(0.0))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y[:16], model(x[:16], training=True)))
    gradients = tape.gradient(loss, model.get_layer("output").trainable_weights)
    expected = math.sqrt(sum(float(tf.reduce_sum(g ** 2)) for g in gradients))
    monitor = GradientMonitor(mode="probe_batch", probe_data=(x[:16], y[:16]), every_n_steps=1)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[monitor])
    assert monitor.mode == "probe_batch"
    measured = monitor.history[0]
    assert measured["loss"] == pytest.approx(float(loss), rel=1e-4)
    assert measured["layers"]["output"]["grad_norm"] == pytest.approx(expected, rel=1e-4)
    assert measured["layers"]["output"]["update_ratio"] == 0.0


# --------------------------------------------------------------------------
# Errors and import hygiene

@pytest.mark.parametrize("kwargs, message", [
    ({"every_n_steps": 0}, "The 'every_n_steps' parameter of GradientMonitor must be a whole number of at "
                           "least 1. Got 0 instead."),
    ({"max_overhead": 2}, "The 'max_overhead' parameter of GradientMonitor must be a fraction between 0 and 1, "
                          "like 0.02 for 2%. Got 2 instead."),
    ({"on_problem": "explode"}, "The 'on_problem' parameter of GradientMonitor must be 'warn', 'stop', "
                                "'recover' or a callable (finding, monitor) -> None. Got 'explode' instead."),
    ({"min_severity": "fatal"}, "The 'min_severity' parameter of GradientMonitor must be 'error', 'warning' or "
                                "'info'. Got 'fatal' instead."),
    ({"mode": "fast"}, "The 'mode' parameter of GradientMonitor must be 'auto', 'train_step' or 'probe_batch'. "
                       "Got 'fast' instead."),
    ({"loss_spike": 0.5}, "The 'loss_spike' parameter of GradientMonitor must be a number above 1, or None to "
                          "turn the loss-spike trigger off. Got 0.5 instead."),
    ({"select": ["GA999"]}, "The 'select' parameter names the unknown rule id 'GA999'."),
])
def test_bad_parameters_are_refused_with_a_clear_message(GradientMonitor, kwargs, message):
    with pytest.raises(UsageError) as info:
        GradientMonitor(**kwargs)
    assert str(info.value).startswith(message)


def test_diagnosis_before_training_says_what_to_do(GradientMonitor):
    with pytest.raises(UsageError, match="has measured nothing yet: call diagnosis\\(\\) after model.fit"):
        GradientMonitor().diagnosis()


def test_importing_the_module_does_not_import_tensorflow():
    code = "import sys, gradadvisor.callback; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]
