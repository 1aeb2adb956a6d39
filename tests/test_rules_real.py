"""The rules on real programs: no learning signal, output configuration, causes.

Each model trains for real for a few steps; nothing is mocked. The Stack
Overflow program is question 31880720 (the motivating example of the
DeepDiagnosis paper): a one-unit softmax output trained with binary
crossentropy.
"""

import numpy as np
import pytest

from gradadvisor.api import diagnose
from gradadvisor.cli import main

STEPS = 5


@pytest.fixture(scope="module")
def keras22_loss(keras_module):
    """Binary crossentropy as Keras 2.2 computed it: on clipped probabilities.

    Keras 3 reads the logit under a final softmax/sigmoid when it can; this
    formula has no such shortcut, so a one-unit softmax gets no gradient at all.
    """
    keras = keras_module

    @keras.saving.register_keras_serializable(package="gradadvisor_tests")
    def keras22_binary_crossentropy(y_true, y_pred):
        eps = 1e-7
        p = keras.ops.clip(y_pred, eps, 1 - eps)
        y_true = keras.ops.cast(y_true, p.dtype)
        return -keras.ops.mean(y_true * keras.ops.log(p) + (1 - y_true) * keras.ops.log(1 - p), axis=-1)

    return keras22_binary_crossentropy


def _so_program(keras, loss, output="softmax"):
    """SO 31880720, re-typed for Keras 3: tanh MLP, Dense(1) + Activation('softmax'), SGD."""
    keras.utils.set_random_seed(0)
    layers = keras.layers
    model = keras.Sequential([
        keras.Input((14,)),
        layers.Dense(64, kernel_initializer="random_uniform"), layers.Activation("tanh"), layers.Dropout(0.5),
        layers.Dense(64, kernel_initializer="random_uniform"), layers.Activation("tanh"), layers.Dropout(0.5),
        layers.Dense(1, kernel_initializer="random_uniform"), layers.Activation(output, name="out")],
        name="so_31880720")
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True), loss=loss)
    return model


@pytest.fixture(scope="module")
def binary_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 14)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("float32")
    return x, y


@pytest.fixture(scope="module")
def so_diagnosis(keras_module, keras22_loss, binary_data):
    x, y = binary_data
    return diagnose(_so_program(keras_module, keras22_loss), x, y, steps=STEPS, batch_size=32)


def test_so_31880720_with_keras22_loss_is_an_error_not_healthy(so_diagnosis):
    assert so_diagnosis.status == "error"
    rules = {f.rule for f in so_diagnosis.findings}
    assert {"GA601", "GA701"} <= rules
    assert max(so_diagnosis.probe.global_grad_norm) == 0.0
    no_signal = next(f for f in so_diagnosis.findings if f.rule == "GA601")
    assert no_signal.category == "no_learning_signal"
    assert any(c["cause"] == "output_configuration" and "softmax over one unit" in c["reason"]
               for c in no_signal.causes)
    softmax = next(f for f in so_diagnosis.findings if f.rule == "GA701")
    assert softmax.layers == ["out"] and softmax.category == "output_config"


def test_so_31880720_exits_1_on_the_command_line(tmp_path, capsys, keras_module, keras22_loss, binary_data):
    x, y = binary_data
    model_path, data_path = tmp_path / "so.keras", tmp_path / "data.npz"
    _so_program(keras_module, keras22_loss).save(model_path)
    np.savez(data_path, x=x, y=y)
    code = main(["diagnose", str(model_path), "--data", str(data_path), "--steps", "4", "--no-search",
                 "--format", "json"])
    out, err = capsys.readouterr()
    assert code == 1, err
    assert '"no_learning_signal"' in out


def test_so_31880720_with_keras3_loss_still_gets_the_output_finding(keras_module, binary_data):
    # Keras 3 trains through the cached logit, so gradients flow; the output is
    # still 1.0 for every input.
    x, y = binary_data
    diagnosis = diagnose(_so_program(keras_module, "binary_crossentropy"), x, y, steps=3, batch_size=32)
    rules = {f.rule for f in diagnosis.findings}
    assert "GA701" in rules and "GA601" not in rules
    assert diagnosis.status == "error"


def test_search_opens_the_output_dimension_and_the_fix_learns(keras_module, keras22_loss, binary_data,
                                                             so_diagnosis):
    from gradadvisor.search.space import search_space, setup_from_values
    from gradadvisor.surgery import apply_setup

    keras = keras_module
    model = _so_program(keras, keras22_loss)
    dimensions = {d.name: d for d in search_space(so_diagnosis, model)}
    assert dimensions["output"].values == ["keep", "sigmoid"]
    assert set(dimensions["output"].opened_by) >= {"GA601", "GA701"}
    setup = setup_from_values({"output": "sigmoid"})
    fixed = apply_setup(model, setup)
    assert fixed.layers[-1].get_config()["activation"] == "sigmoid"
    assert model.layers[-1].get_config()["activation"] == "softmax"  # the user's model is untouched
    x, y = binary_data
    after = diagnose(fixed, x, y, steps=STEPS, batch_size=32)
    assert not {"GA601", "GA701"} & {f.rule for f in after.findings}
    assert max(after.probe.global_grad_norm) > 0
    history = fixed.fit(x, y, epochs=3, batch_size=32, verbose=0).history["loss"]
    assert history[-1] < history[0]


def _tiny(keras, units, activation, loss):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(units, activation=activation, name="head")])
    model.compile(optimizer="adam", loss=loss)
    return model


@pytest.mark.parametrize("case, rule", [
    ("sigmoid_categorical", "GA702"),
    ("linear_into_probabilities", "GA703"),
    ("softmax_into_logits", "GA704"),
    ("relu_into_categorical", "GA705"),
    ("sigmoid_regression_out_of_range", "GA706"),
    ("softmax_multilabel", "GA707"),
    ("healthy_sparse", None),
    ("healthy_logits", None),
    ("healthy_sigmoid_regression_in_range", None),
    ("healthy_multilabel_sigmoid", None),
])
def test_output_configuration_rules_on_real_models(keras_module, case, rule):
    keras = keras_module
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    labels = rng.integers(0, 3, size=64)
    model, y = {
        "sigmoid_categorical": (lambda: (_tiny(keras, 3, "sigmoid", "categorical_crossentropy"),
                                         np.eye(3, dtype="float32")[labels])),
        "linear_into_probabilities": (lambda: (_tiny(keras, 1, None, "binary_crossentropy"),
                                               (labels > 0).astype("float32"))),
        "softmax_into_logits": (lambda: (_tiny(keras, 3, "softmax",
                                               keras.losses.SparseCategoricalCrossentropy(from_logits=True)),
                                         labels)),
        "relu_into_categorical": (lambda: (_tiny(keras, 3, "relu", "categorical_crossentropy"),
                                           np.eye(3, dtype="float32")[labels])),
        "sigmoid_regression_out_of_range": (lambda: (_tiny(keras, 1, "sigmoid", "mean_squared_error"),
                                                     5.0 + 30.0 * rng.uniform(size=(64, 1)).astype("float32"))),
        "softmax_multilabel": (lambda: (_tiny(keras, 3, "softmax", "mean_squared_error"),
                                        _multi_hot(rng))),
        "healthy_sparse": (lambda: (_tiny(keras, 3, "softmax", "sparse_categorical_crossentropy"), labels)),
        "healthy_sigmoid_regression_in_range": (lambda: (_tiny(keras, 1, "sigmoid", "mean_squared_error"),
                                                         rng.uniform(size=(64, 1)).astype("float32"))),
        "healthy_multilabel_sigmoid": (lambda: (_tiny(keras, 3, "sigmoid", "binary_crossentropy"),
                                                _multi_hot(rng))),
        "healthy_logits": (lambda: (_tiny(keras, 3, None,
                                          keras.losses.SparseCategoricalCrossentropy(from_logits=True)),
                                    labels)),
    }[case]()
    diagnosis = diagnose(model, x, y, steps=3, batch_size=16)
    found = [f for f in diagnosis.findings if f.category == "output_config"]
    if rule is None:
        assert found == []
    else:
        assert [f.rule for f in found] == [rule]
        assert found[0].layers == ["head"]
        assert found[0].fixes == ["output"]


def _multi_hot(rng, rows=64):
    """Several labels per row (some rows none), as sklearn's make_multilabel_classification gives."""
    return (rng.uniform(size=(rows, 3)) < 0.5).astype("float32")


def test_synthetic_targets_are_not_judged_against_the_output_range(keras_module):
    # Synthetic regression targets are made up (normal values); a sigmoid output
    # cannot be blamed for not reaching them.
    diagnosis = diagnose(_tiny(keras_module, 1, "sigmoid", "mean_squared_error"), steps=3, batch_size=16)
    assert diagnosis.probe.outputs[0]["targets"] is None
    assert not [f for f in diagnosis.findings if f.category == "output_config"]


@pytest.mark.parametrize("activation, loss, make_y, fix", [
    ("sigmoid", "mean_squared_error", lambda rng, x: 2.0 + x[:, :1] - 0.5 * x[:, 1:2], "linear"),
    ("softmax", "categorical_crossentropy", lambda rng, x: _multi_hot(rng, len(x)), "sigmoid"),
    ("relu", "categorical_crossentropy",
     lambda rng, x: np.eye(3, dtype="float32")[np.argmax(x[:, :3], axis=1)], "softmax"),
])
def test_output_range_fixes_are_searched_and_the_fixed_model_learns(keras_module, activation, loss, make_y, fix):
    from gradadvisor.search.space import search_space, setup_from_values
    from gradadvisor.surgery import apply_setup

    keras = keras_module
    rng = np.random.default_rng(1)
    x = rng.normal(size=(256, 6)).astype("float32")
    y = make_y(rng, x).astype("float32")
    model = _tiny(keras, y.shape[1], activation, loss)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=loss)
    before = diagnose(model, x, y, steps=STEPS, batch_size=32)
    dimensions = {d.name: d for d in search_space(before, model)}
    assert dimensions["output"].values == ["keep", fix]
    fixed = apply_setup(model, setup_from_values({"output": fix}))
    assert model.layers[-1].get_config()["activation"] == activation  # the user's model is untouched
    after = diagnose(fixed, x, y, steps=STEPS, batch_size=32)
    assert not [f for f in after.findings if f.category == "output_config"]
    original = keras.models.clone_model(model)
    original.compile(optimizer=keras.optimizers.SGD(0.05), loss=loss)
    keras.utils.set_random_seed(0)
    broken = original.fit(x, y, epochs=8, batch_size=32, verbose=0).history["loss"][-1]
    keras.utils.set_random_seed(0)
    history = fixed.fit(x, y, epochs=8, batch_size=32, verbose=0).history["loss"]
    assert np.isfinite(history[-1]) and history[-1] < history[0]
    if fix == "linear":
        assert history[-1] < 0.5 * broken


def test_all_dead_relu_network_without_output_bias_gets_dead_units_and_no_signal(keras_module):
    # Every gradient is exactly zero from the first step: the growth signal used
    # to be undefined then, which silenced GA401.
    keras = keras_module
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(16, activation="relu", bias_initializer=keras.initializers.Constant(-50.0)),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dense(1, use_bias=False)])
    model.compile(optimizer="adam", loss="mse")
    diagnosis = diagnose(model, steps=4, batch_size=16)
    rules = {f.rule for f in diagnosis.findings}
    assert {"GA401", "GA601"} <= rules
    assert diagnosis.status == "error"


def test_standalone_sigmoid_layers_are_named_as_a_cause(keras_module):
    keras = keras_module
    keras.utils.set_random_seed(0)
    layers = [keras.Input((16,))]
    for i in range(8):
        layers += [keras.layers.Dense(16, name=f"dense_{i}"), keras.layers.Activation("sigmoid", name=f"act_{i}")]
    model = keras.Sequential(layers + [keras.layers.Dense(3, activation="softmax", name="out")])
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    diagnosis = diagnose(model, steps=STEPS, batch_size=32)
    vanishing = next(f for f in diagnosis.findings if f.rule == "GA101")
    reasons = {c["cause"]: c["reason"] for c in vanishing.causes}
    assert "saturating_activation" in reasons
    assert "act_0" in reasons["saturating_activation"] and "sigmoid" in reasons["saturating_activation"]


def test_rewrite_output_sets_from_logits_units_and_refuses_what_it_cannot_change(keras_module):
    from gradadvisor.errors import SurgeryError
    from gradadvisor.surgery.output import output_fix_for, rewrite_output

    keras = keras_module
    model = _tiny(keras, 3, None, "sparse_categorical_crossentropy")
    new, loss = rewrite_output(model, "from_logits", "sparse_categorical_crossentropy")
    assert isinstance(loss, keras.losses.SparseCategoricalCrossentropy) and loss.from_logits
    x = np.ones((2, 6), "float32")
    np.testing.assert_allclose(new.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    _, loss = rewrite_output(model, "probabilities", keras.losses.CategoricalCrossentropy(from_logits=True))
    assert loss.from_logits is False
    wider, _ = rewrite_output(model, "units=5", "sparse_categorical_crossentropy")
    assert wider.predict(x, verbose=0).shape == (2, 5) and model.predict(x, verbose=0).shape == (2, 3)
    with pytest.raises(SurgeryError, match="not a Keras crossentropy"):
        rewrite_output(model, "from_logits", lambda y, p: (y - p) ** 2)
    with pytest.raises(SurgeryError, match="unknown"):
        rewrite_output(model, "tanh", "mse")
    assert output_fix_for([{"activation": "softmax", "units": 1}]) == "sigmoid"
    from gradadvisor.surgery import Setup, snippet

    text = snippet(Setup(output="sigmoid"))
    assert 'activation="sigmoid"' in text and "binary_crossentropy" in text
    compile(text, "snippet", "exec")
    assert output_fix_for([{"activation": "softmax", "units": 3, "loss_kind": "sparse",
                            "from_logits": False}]) is None


def _digit_images():
    """The first 512 of scikit-learn's 8x8 digit images, scaled to [0, 1], and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.data[:512] / 16.0).astype("float32").reshape(-1, 8, 8, 1), digits.target[:512].astype("int32")


def _relu_convolutions(keras, rate):
    """Two small ReLU convolutions on 8x8 digit images, trained with SGD at ``rate``."""
    x, y = _digit_images()
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((8, 8, 1))]
        + [keras.layers.Conv2D(channels, 3, padding="same", activation="relu", kernel_initializer="he_normal",
                               name=f"conv_{i}") for i, channels in enumerate((8, 16))]
        + [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10, activation="softmax", name="out")])
    model.compile(keras.optimizers.SGD(rate), "sparse_categorical_crossentropy")
    return model, x, y


def test_relu_units_dying_under_large_steps_are_found_before_most_are_dead(keras_module):
    # SGD at 5: 5 of conv_1's 16 units die within 30 steps, far under GA401's
    # three quarters, while the loss stays where it started.
    model, x, y = _relu_convolutions(keras_module, 5.0)
    diagnosis = diagnose(model, x, y, steps=30, batch_size=32)
    found = {f.rule: f for f in diagnosis.findings}
    assert "GA403" in found and "GA401" not in found
    assert found["GA403"].layers == ["conv_1"] and found["GA403"].category == "dead_units"
    assert "learning_rate" in found["GA403"].fixes
    # At a usual rate no unit dies and nothing is found.
    model, x, y = _relu_convolutions(keras_module, 0.05)
    assert diagnose(model, x, y, steps=30, batch_size=32).status == "healthy"


def _plain_relu_stack(keras, rate):
    """Six ReLU convolutions and a ReLU Dense layer without normalization (a small VGG) on
    8x8 digit images, trained with Adam at ``rate``."""
    x, y = _digit_images()
    keras.utils.set_random_seed(0)
    layers = keras.layers
    model = keras.Sequential(
        [keras.Input((8, 8, 1))]
        + [layers.Conv2D(16, 3, padding="same", activation="relu", name=f"conv_{i}") for i in range(6)]
        + [layers.Flatten(), layers.Dense(64, activation="relu", name="fc"),
           layers.Dense(10, activation="softmax", name="out")])
    model.compile(keras.optimizers.Adam(rate), "sparse_categorical_crossentropy")
    return model, x, y


def test_units_killed_by_a_blowup_are_dead_units_not_divergence(keras_module):
    # Adam at 0.05: the second step's gradient is thousands of times the first
    # and its loss over a hundred times the start; then the units are dead and
    # the loss sits at the untrained model's. Diverging, it is not.
    model, x, y = _plain_relu_stack(keras_module, 0.05)
    diagnosis = diagnose(model, x, y, steps=30, batch_size=32)
    found = {f.rule: f for f in diagnosis.findings}
    assert "GA404" in found and "GA203" not in found and "GA401" not in found
    assert diagnosis.primary_category == "dead_units"
    assert found["GA404"].evidence["global_grad_norm_growth"] > 100
    assert 0.9 <= found["GA404"].evidence["loss_end_to_untrained"] <= 2
    assert found["GA404"].fixes[0] == "learning_rate"
    # At Adam's default rate the same network learns and nothing is found.
    model, x, y = _plain_relu_stack(keras_module, 1e-3)
    assert diagnose(model, x, y, steps=30, batch_size=32).status == "healthy"


def _xor_program(keras, fixed):
    """Stack Overflow 31556268 re-typed: a 2-4-1 sigmoid network on XOR, MAE at SGD 0.05 (fix: Adam, MSE)."""
    keras.utils.set_random_seed(0)
    layers = keras.layers
    model = keras.Sequential([keras.Input((2,)), layers.Dense(4), layers.Activation("sigmoid"),
                              layers.Dense(1), layers.Activation("sigmoid")])
    if fixed:
        model.compile(optimizer="adam", loss="mse")
    else:
        model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.11, nesterov=True), loss="mean_absolute_error")
    return model


@pytest.mark.parametrize("seed", [0, 1])
def test_a_loss_that_stalls_in_full_batch_training_is_a_warning_and_its_fix_is_quiet(keras_module, seed):
    x = np.array([[1, 1], [1, 0], [0, 0], [0, 1]], dtype="float32")
    y = np.array([[0], [1], [0], [1]], dtype="float32")
    stalled = diagnose(_xor_program(keras_module, fixed=False), x, y, batch_size=4, seed=seed)
    finding = next(f for f in stalled.findings if f.rule == "GA602")
    assert finding.severity == "warning" and finding.category == "slow_updates"
    assert max(stalled.probe.global_grad_norm) > 0 and "GA601" not in {f.rule for f in stalled.findings}
    learning = diagnose(_xor_program(keras_module, fixed=True), x, y, batch_size=4, seed=seed)
    assert "GA602" not in {f.rule for f in learning.findings}
