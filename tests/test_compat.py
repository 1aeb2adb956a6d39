"""Each private Keras / Keras Tuner access in gradadvisor._compat still works.

A new release that renames or changes one of them fails here, by name, before
it fails somewhere inside a probe or a search.
"""

import numpy as np
import pytest

from gradadvisor import _compat

keras = pytest.importorskip("keras")
keras_tuner = pytest.importorskip("keras_tuner")


def versions() -> str:
    return f"Keras {keras.__version__}, Keras Tuner {keras_tuner.__version__}"


@pytest.fixture(scope="module")
def graph():
    """A small Functional model with an operation node (``a + b``) and an Embedding."""
    tokens = keras.Input((5,), dtype="int32", name="tokens")
    embedded = keras.layers.Embedding(10, 4, name="embed")(tokens)
    flat = keras.layers.Flatten(name="flat")(embedded)
    a = keras.layers.Dense(3, name="a")(flat)
    b = keras.layers.Dense(3, name="b")(flat)
    out = keras.layers.Dense(1, name="out")(a + b)
    model = keras.Model(tokens, out, name="graph")
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    return model


def test_functional_class_is_what_keras_model_builds(graph):
    assert isinstance(graph, _compat.functional_class()), versions()
    assert not isinstance(keras.Sequential([keras.layers.Dense(1)]), _compat.functional_class())


def test_run_through_graph_calls_every_layer_and_reproduces_the_model(graph):
    x = np.arange(10, dtype="int32").reshape(2, 5)
    called = []

    def call(operation, *args, **kwargs):
        called.append(operation.name)
        return operation(*args, **kwargs)

    outputs = _compat.run_through_graph(graph, [keras.ops.convert_to_tensor(x)],
                                        operation_fn=lambda op: op, call_fn=call)
    out = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
    np.testing.assert_allclose(np.asarray(out), np.asarray(graph(x)), rtol=1e-6)
    assert {"embed", "flat", "a", "b", "out"} <= set(called), (called, versions())


def test_producer_and_nodes_by_depth_describe_the_graph(graph):
    assert _compat.producer(graph.output).name == "out", versions()
    assert isinstance(_compat.producer(graph.input), keras.layers.InputLayer)
    depths = _compat.nodes_by_depth(graph)
    names = {getattr(node.operation, "name", None) for nodes in depths.values() for node in nodes}
    assert {"tokens", "embed", "flat", "a", "b", "out"} <= names, versions()
    assert all(isinstance(depth, int) for depth in depths)


def test_inbound_nodes_name_a_layers_inputs(graph):
    (node,) = _compat.inbound_nodes(graph.get_layer("embed"))
    assert [_compat.producer(t).name for t in node.input_tensors] == ["tokens"], versions()
    assert _compat.inbound_nodes(keras.layers.Dense(2)) == []


def test_sequential_layers_include_the_input_layer():
    model = keras.Sequential([keras.Input((3,), name="in"), keras.layers.Dense(2, name="d")])
    layers = _compat.sequential_layers(model)
    assert isinstance(layers[0], keras.layers.InputLayer), versions()
    assert [layer.name for layer in layers[1:]] == ["d"]


def test_training_internals_compute_what_fit_computes(graph):
    x = np.arange(10, dtype="int32").reshape(2, 5)
    y = np.array([[1.0], [2.0]], dtype="float32")
    assert _compat.train_step_internals_present(graph), versions()
    assert type(graph).train_step is _compat.keras_train_step()
    assert _compat.model_strategy(graph) is None
    y_pred = graph(x, training=True)
    loss = _compat.compute_loss(graph, x=x, y=y, y_pred=y_pred, sample_weight=None, training=True)
    expected = np.mean((np.asarray(y_pred) - y) ** 2)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    np.testing.assert_allclose(float(_compat.unscale_loss_for_distribution(loss)), expected, rtol=1e-5)
    assert hasattr(_compat.loss_tracker(graph), "update_state")


def test_metrics_can_be_built_ahead_of_the_first_trace():
    import tensorflow as tf

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    spec = tf.data.Dataset.from_tensor_slices((np.zeros((4, 3), "float32"),
                                               np.zeros((4, 1), "float32"))).batch(2).element_spec
    assert _compat.build_metrics_ahead(model, spec) is True, versions()
    assert _compat.build_metrics_ahead(model, spec) is False


def test_oracle_internals(tmp_path):
    hp = keras_tuner.HyperParameters()
    hp.Choice("a", [1, 2, 3])
    oracle = keras_tuner.oracles.RandomSearchOracle(
        objective=keras_tuner.Objective("score", "min"), max_trials=3, hyperparameters=hp)
    oracle._set_project_dir(str(tmp_path), "compat")
    assert _compat.chief_may_exit(oracle) is True, versions()
    trial = oracle.create_trial("tuner0")
    assert _compat.oracle_has_tried(oracle, dict(trial.hyperparameters.values)) is True
    assert _compat.oracle_has_tried(oracle, {"a": 99}) is False
    assert _compat.chief_may_exit(oracle) is False


def test_oracle_call_timeout_is_set_and_restored():
    from keras_tuner.src.distribute import oracle_client

    before = oracle_client.TIMEOUT
    with _compat.oracle_call_timeout(7.5):
        assert oracle_client.TIMEOUT == 7.5, versions()
    assert oracle_client.TIMEOUT == before


def test_the_learning_rate_setting_tells_a_schedule_from_a_float():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    assert _compat.optimizer_learning_rate_setting(keras.optimizers.SGD(schedule)) is schedule, versions()
    plain = _compat.optimizer_learning_rate_setting(keras.optimizers.SGD(0.25))
    assert hasattr(plain, "assign") and float(plain.numpy()) == 0.25
