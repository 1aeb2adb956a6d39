"""The search: real Keras Tuner trials over rewritten models, with a confirmation run."""

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from gradadvisor.api import diagnose
from gradadvisor.errors import SurgeryError
from gradadvisor.examples import build_example
from gradadvisor.search import DIVERGED_SCORE, expert_starts, recommend, search_space


@pytest.fixture(scope="module")
def sigmoid_case(sigmoid_stack):
    """A small deep sigmoid stack that vanishes, and its diagnosis."""
    model, x, y = sigmoid_stack()
    return model, x, y, diagnose(model, x, y, steps=10)


def test_search_space_follows_the_findings(sigmoid_case):
    model, _, _, diagnosis = sigmoid_case
    assert diagnosis.primary_category == "vanishing_gradients"
    dimensions = {d.name: d for d in search_space(diagnosis, model)}
    assert {"activation", "initializer", "normalization"} <= set(dimensions)
    assert "clipping" not in dimensions
    assert "GA101" in dimensions["activation"].opened_by
    starts = expert_starts(list(dimensions.values()), diagnosis)
    assert starts[0]["activation"] == "relu" and starts[0]["initializer"] == "he_normal"


def test_recommend_confirms_and_saves_a_fixed_model(sigmoid_case, tmp_path, keras_module):
    model, x, y, diagnosis = sigmoid_case
    before = [w.copy() for w in model.get_weights()]
    seen = []
    result = recommend(model, x, y, diagnosis=diagnosis, max_trials=3, trial_steps=20, seed=1,
                       save_fixed=tmp_path / "fixed.keras", progress=lambda *a: seen.append(a))
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert len(result.trials) == 3 and [t["rank"] for t in result.trials] == [1, 2, 3]
    assert result.trials[0]["score"] <= result.trials[1]["score"] <= result.trials[2]["score"]
    assert all(t["score"] < DIVERGED_SCORE * 2 for t in result.trials)
    confirmation = result.confirmation
    assert confirmation["steps"] == 40 and confirmation["metric_name"] == "accuracy"
    assert len(confirmation["original"]["loss"]) == 40 == len(confirmation["recommended"]["loss"])
    assert result.recommended, result.reason
    assert confirmation["recommended"]["val_loss"] < confirmation["original"]["val_loss"]
    assert result.fixed_status == "healthy"
    assert result.changes and "import keras" in result.snippet
    searching = [a[3] for a in seen if a[0] == "search"]
    assert len([text for text in searching if " trying " in text]) == 3 == len(searching) - 3
    assert searching[0].startswith("trial 1: trying ") and ("confirm", 2, 2, "") in seen
    assert "re-probed for 10 steps from its fresh weights, is healthy (no findings)" in result.reason
    loaded = keras_module.models.load_model(tmp_path / "fixed.keras")
    assert loaded.optimizer is not None
    history = loaded.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    document = result.to_dict()
    assert document["setup"] == result.setup.to_dict() and document["fixed_model_path"] == str(tmp_path / "fixed.keras")
    assert "diagnosis" not in document and result.diagnosis is diagnosis
    assert_shows_the_report_in_a_notebook(result, diagnosis)


def test_reloading_a_fixed_model_with_a_new_optimizer_shows_no_keras_note(tmp_path):
    """The fixed file's optimizer (Adam, with slots) is unbuilt when saved; its re-probe says nothing of it."""
    model, x, y = build_example("deep-sigmoid")
    diagnosis = diagnose(model, x, y, steps=10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = recommend(model, x, y, diagnosis=diagnosis, max_trials=1, trial_steps=20, seed=1,
                           save_fixed=tmp_path / "fixed.keras")
    assert result.setup.to_dict()["optimizer"].startswith("adam") and result.fixed_model_path
    assert [str(w.message) for w in caught if "Skipping variable loading" in str(w.message)] == []


def assert_shows_the_report_in_a_notebook(result, diagnosis):
    """A recommendation renders, in a sandboxed frame, the report of its diagnosis with its own section."""
    import dataclasses
    import html
    import re

    from gradadvisor.report.html import render_html

    frame = result._repr_html_()
    assert frame.startswith('<iframe srcdoc="') and ' sandbox title="gradadvisor report" ' in frame
    page = html.unescape(re.match(r'<iframe srcdoc="([^"]*)"', frame).group(1))
    assert page == render_html(dataclasses.replace(diagnosis, recommendation=result.to_dict()))
    verdict = "Recommended setup (tested)" if result.recommended else "No setup recommended"
    assert f"<strong>{verdict}.</strong>" in page and "Search not run" not in page
    assert "<script" not in page and diagnosis.recommendation is None
    # The diagnosis rides along without changing what a recommendation is.
    assert dataclasses.replace(result, diagnosis=None) == result
    assert dataclasses.replace(result, diagnosis=None)._repr_html_() is None


def test_diverging_candidates_do_not_stop_the_search(keras_module):
    model, x, y = build_example("high-lr-relu")
    diagnosis = diagnose(model, x, y, steps=10)
    result = recommend(model, x, y, diagnosis=diagnosis, max_trials=4, trial_steps=15, tuner="random")
    assert len(result.trials) == 4
    assert "clipping" in [d.name for d in result.dimensions]
    assert result.trials[0]["status"] != "diverged"


def test_time_budget_and_tuner_dir(sigmoid_case, tmp_path):
    model, x, y, diagnosis = sigmoid_case
    started = time.perf_counter()
    result = recommend(model, x, y, diagnosis=diagnosis, max_trials=50, trial_steps=10, time_budget=1.0,
                       tuner_dir=tmp_path / "tuner")
    assert 1 <= len(result.trials) < 50
    assert (tmp_path / "tuner" / "search" / "oracle.json").exists()
    assert time.perf_counter() - started < 120


def test_hyperband_runs(sigmoid_case):
    model, x, y, diagnosis = sigmoid_case
    result = recommend(model, x, y, diagnosis=diagnosis, max_trials=3, trial_steps=9, tuner="hyperband")
    assert len(result.trials) >= 1 and result.budget["tuner"] == "hyperband"


def test_subclassed_model_cannot_be_rewritten(keras_module):
    keras = keras_module

    class Net(keras.Model):
        def __init__(self):
            super().__init__(name="net")
            self.dense = keras.layers.Dense(2, activation="softmax")

        def call(self, inputs):
            return self.dense(inputs)

    model = Net()
    model(np.zeros((1, 3), "float32"))
    with pytest.raises(SurgeryError) as caught:
        recommend(model, np.zeros((20, 3), "float32"), np.zeros(20, "int32"))
    assert str(caught.value) == (
        "The model 'net' is a subclassed model: diagnosis works, but rewriting it needs a Sequential or "
        "Functional model. Apply the suggested fixes in its code instead.")


@pytest.mark.slow
def test_ctrl_c_during_search_keeps_best_so_far_and_cleans_up(tmp_path):
    env = dict(os.environ, TMPDIR=str(tmp_path))
    report = tmp_path / "r.html"
    process = subprocess.Popen(
        [sys.executable, "-m", "gradadvisor", "diagnose", "--example", "deep-sigmoid", "--steps", "10",
         "--max-trials", "40", "--trial-steps", "30", "--report", str(report)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        # A test run started in the background by a shell has SIGINT ignored, and
        # the child would inherit that: give it the default, as a terminal would.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    lines = []
    while time.time() < deadline:
        line = process.stderr.readline()
        lines.append(line)
        if line.startswith("searching: 2/"):
            break
        if not line and process.poll() is not None:
            break
    process.send_signal(signal.SIGINT)
    try:
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, "".join(lines) + err
    assert "interrupted after" in out and "best so far is" in out
    assert "Traceback" not in err
    assert report.exists() and "interrupted" in report.read_text()
    assert not list(tmp_path.glob("gradadvisor-tuner-*"))


# --------------------------------------------------------------------------
# A recommendation must learn

def test_learning_needs_a_fall_below_start_and_chance():
    from gradadvisor.search.run import NOT_LEARNING_PENALTY, RunResult

    def run(val_loss, start, chance=0.693, status="healthy"):
        return RunResult(None, [], status, val_loss, None, 1.0, start_loss=start, chance_loss=chance)

    assert run(0.5, 0.7).learns and run(0.5, 0.7).score < 1
    assert not run(0.66, 0.75).learns  # below its start, but not clearly below chance
    assert not run(0.6, 0.65).learns  # below chance, but not 0.9x its own start
    assert run(5.0, 100.0, chance=None).learns  # regression: its start only
    assert run(0.66, 0.75).score >= NOT_LEARNING_PENALTY
    assert run(0.3, 0.7, status="warning").score < run(0.66, 0.75).score
    # Ending the search early asks for a margin: 0.8x, not 0.9x.
    assert run(0.5, 0.7).learns_clearly and run(4.0, 100.0, chance=None).learns_clearly
    assert run(0.6, 0.7).learns and not run(0.6, 0.7).learns_clearly
    assert not run(0.66, 0.75).learns_clearly


def test_chance_loss_from_the_labels():
    from gradadvisor.search.data import chance_loss

    assert chance_loss(np.arange(100) % 10, "sparse_categorical_crossentropy", "sparse") == pytest.approx(np.log(10))
    assert chance_loss(np.eye(4)[np.arange(40) % 4], "categorical_crossentropy", "categorical") == pytest.approx(np.log(4))
    assert chance_loss(np.array([0, 1] * 10), "binary_crossentropy", "binary") == pytest.approx(np.log(2))
    assert chance_loss(np.array([0, 0, 0, 1] * 10), "BinaryCrossentropy", "binary") < np.log(2)
    assert chance_loss(np.zeros(10), "mean_squared_error", "regression") is None


def test_a_setup_that_does_not_learn_is_not_recommended(sigmoid_stack, tmp_path):
    model, x, _ = sigmoid_stack()
    # Labels that no input explains: nothing can learn them.
    y = np.random.default_rng(1).integers(0, 3, len(x)).astype("int32")
    diagnosis = diagnose(model, x, y, steps=8)
    assert diagnosis.status == "error"
    result = recommend(model, x, y, diagnosis=diagnosis, max_trials=2, trial_steps=12, seed=0,
                       save_fixed=tmp_path / "fixed.keras")
    assert not result.recommended
    assert result.reason.startswith("No tested setup trains this model within the budget. The best partial "
                                    f"result, {result.setup.describe()}, did not learn: ")
    assert result.confirmation["learns"] is False and not result.confirmation["recommended"]["learns"]
    assert result.fixed_model is None and not (tmp_path / "fixed.keras").exists()
    assert all(trial["learns"] is False for trial in result.trials)


def test_hopeless_trials_stop_early(keras_module):
    from gradadvisor.search.data import split_data
    from gradadvisor.search.run import HOPELESS_SCORE, hopeless, train_and_measure
    from gradadvisor.analysis.engine import load_rules
    from gradadvisor.loading import Data

    assert hopeless([1.0] * 5, 100) is None
    assert hopeless([1.0] * 10 + [4.0] * 10, 100).startswith("loss rising (1 to 4 in 20 steps)")
    assert hopeless([1.0] * 59, 100) is None and hopeless([1.0] * 60, 100).startswith("loss not falling")
    assert hopeless(list(np.linspace(1.0, 0.5, 60)), 100) is None
    keras = keras_module
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(2, activation="softmax")])
    # A learning rate of zero: the loss cannot move.
    model.compile(keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8)).astype("float32")
    train, val = split_data(Data([x], (x[:, 0] > 0).astype("int32"), "arrays"), model, 0)
    result = train_and_measure(model, train, val, steps=60, batch_size=16, seed=0, rules=load_rules(),
                               in_place=True, loss="sparse_categorical_crossentropy", kind="sparse",
                               cut_off=True)
    assert result.status == "stopped" and result.stopped.startswith("loss not falling")
    assert len(result.losses) == 36 and result.score >= HOPELESS_SCORE


# --------------------------------------------------------------------------
# New dimensions: opened by the right findings, applied by surgery

@pytest.fixture(scope="module")
def long_rnn_case(keras_module):
    """A SimpleRNN with small recurrent weights over 60 timesteps, trained with plain SGD."""
    keras = keras_module
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((60, 1)),
        keras.layers.SimpleRNN(8, recurrent_initializer=keras.initializers.RandomNormal(0.0, 0.05, seed=0),
                               name="rnn"),
        keras.layers.Dense(2, activation="softmax", name="output")], name="rnn60")
    model.compile(keras.optimizers.SGD(0.05), "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 60, 1)).astype("float32")
    y = (x[:, 0, 0] > 0).astype("int32")
    return model, x, y, diagnose(model, x, y, steps=5)


def test_recurrent_vanishing_opens_cells_forget_bias_and_an_adaptive_optimizer(long_rnn_case):
    model, _, _, diagnosis = long_rnn_case
    assert "GA102" in {f.rule for f in diagnosis.findings}
    dimensions = {d.name: d for d in search_space(diagnosis, model)}
    assert dimensions["cell"].values == ["keep", "gru", "lstm"] and "GA102" in dimensions["cell"].opened_by
    assert dimensions["forget_bias"].values == ["keep", "unit", "chrono"]
    assert dimensions["recurrent_initializer"].values == ["keep", "orthogonal"]
    assert "adam:0.01" in dimensions["optimizer"].values and "GA102" in dimensions["optimizer"].opened_by
    assert "warmup_steps" not in dimensions and "clipping" not in dimensions
    starts = expert_starts(list(dimensions.values()), diagnosis)
    assert {"gru", "lstm"} <= {start["cell"] for start in starts}


def test_exploding_at_a_high_rate_opens_small_rates_and_warm_up(keras_module):
    model, x, y = build_example("high-lr-relu")
    diagnosis = diagnose(model, x, y, steps=10)
    dimensions = {d.name: d for d in search_space(diagnosis, model, trial_steps=60)}
    assert min(dimensions["learning_rate_scale"].values) == 0.001
    assert dimensions["warmup_steps"].values == [0, 9]
    assert "clipping" in dimensions and "cell" not in dimensions
    # Plain SGD: an adaptive optimizer is offered, but not tried first.
    assert dimensions["optimizer"].default == "keep"
    assert set(dimensions["warmup_steps"].opened_by) <= {f.rule for f in diagnosis.findings}


def test_new_dimensions_are_applied(long_rnn_case, keras_module):
    from gradadvisor.search import setup_from_values
    from gradadvisor.surgery import apply_setup, describe_changes, snippet

    keras = keras_module
    model, x, y, _ = long_rnn_case
    setup = setup_from_values({"cell": "lstm", "forget_bias": "chrono", "recurrent_initializer": "orthogonal",
                               "optimizer": "adam:0.01", "warmup_steps": 6, "learning_rate_scale": 0.3})
    fixed = apply_setup(model, setup)
    layer = fixed.get_layer("rnn")
    assert isinstance(layer, keras.layers.LSTM) and layer.units == 8 and not layer.return_sequences
    bias = layer.cell.bias.numpy()
    input_gate, forget_gate = bias[:8], bias[8:16]
    assert np.allclose(input_gate, -forget_gate) and np.all(forget_gate >= 0)
    assert np.all(forget_gate <= np.log(59) + 1e-5) and np.all(bias[16:] == 0)
    assert isinstance(fixed.optimizer, keras.optimizers.Adam)
    schedule = keras.optimizers.schedules.deserialize(fixed.optimizer.get_config()["learning_rate"])
    assert float(schedule(6)) == pytest.approx(0.003) and float(schedule(0)) < 0.001
    changes = {(c["layer"], c["change"]): c for c in describe_changes(model, setup)}
    assert changes[("rnn", "cell")]["to"] == "LSTM" and changes[("(optimizer)", "optimizer")]["to"] == "Adam"
    assert changes[("rnn", "forget_gate_bias")]["to"] == "chrono, T=60"
    assert "layers.LSTM(8" in snippet(setup, model=model) and "warmup_steps=6" in snippet(setup, model=model)
    gru = apply_setup(model, setup_from_values({"cell": "gru", "recurrent_initializer": "orthogonal"}))
    assert isinstance(gru.get_layer("rnn"), keras.layers.GRU)
    history = gru.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_layers_kept_as_they_are_are_named_in_every_output(keras_module, tmp_path):
    keras = keras_module
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16,))
    x = inputs
    for i in range(6):
        x = keras.layers.Dense(16, activation="sigmoid", name=f"d{i}")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="out")(x)
    model = keras.Model(inputs, outputs)
    model.get_layer("d2").trainable = False
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    data = rng.normal(size=(200, 16)).astype("float32")
    labels = np.argmax(data[:, :3], 1).astype("int32")
    diagnosis = diagnose(model, data, labels, steps=6, search=True,
                         search_options={"max_trials": 1, "trial_steps": 8})
    recommendation = diagnosis.recommendation
    kept = recommendation["skipped"]
    assert [entry["layer"] for entry in kept] == ["d2"] and "frozen" in kept[0]["reason"]
    said = f"kept as it is: layer d2 ({kept[0]['reason']})"
    assert said in recommendation["reason"]
    assert said in " ".join(diagnosis.to_text().split())
    assert '"skipped"' in diagnosis.to_json() and said in diagnosis.to_json()
    diagnosis.save_html(tmp_path / "report.html")
    assert "kept as it is: layer d2" in (tmp_path / "report.html").read_text()


def test_held_out_loss_reads_batchnorm_statistics_of_the_training_data(keras_module):
    from gradadvisor.loading import Data
    from gradadvisor.search import held_out
    from gradadvisor.search.data import recalibrate_batch_norm

    keras = keras_module
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization(momentum=0.999, name="bn"),
                              keras.layers.Dense(2, activation="softmax", name="out")])
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(300, 4)) * 5.0 + 10.0).astype("float32")
    train, val = Data([x[:256]], np.zeros(256, "int32"), "test"), Data([x[256:]], np.zeros(44, "int32"), "test")
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    assert recalibrate_batch_norm(model, train)
    bn = model.get_layer("bn")
    # The average of the two 128-sample batches' statistics.
    batches = x[:256].reshape(2, 128, 4)
    np.testing.assert_allclose(bn.moving_mean.numpy(), batches.mean(1).mean(0), rtol=1e-4)
    np.testing.assert_allclose(bn.moving_variance.numpy(), batches.var(1).mean(0), rtol=1e-3)
    assert bn.momentum == 0.999
    weights = [w.copy() for w in model.get_layer("out").get_weights()]
    held_out(model, loss_fn, val, "sparse", calibration=train)
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_layer("out").get_weights()))
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="out")])
    assert not recalibrate_batch_norm(plain, train)


# --------------------------------------------------------------------------
# The budget counts CPU time, which a busy machine does not inflate

def test_probe_records_cpu_time_and_the_budget_is_sized_from_it(sigmoid_case):
    import dataclasses

    from gradadvisor.search.budget import size_budget

    model, _, _, diagnosis = sigmoid_case
    probe = diagnosis.probe
    assert probe.cpu_seconds > 0
    options = dict(max_trials=10, trial_steps=None, confirm_steps=None, time_budget=None, tuner="bayesian")
    measured = size_budget(model, probe, **options)
    # The same probe as a starved process would time it: 50 times the wall time, the same work.
    starved = size_budget(model, dataclasses.replace(probe, seconds=50 * probe.seconds + 500.0), **options)
    for key in ("trial_steps", "confirm_steps", "time_budget", "sized"):
        assert starved[key] == measured[key]
    assert measured["clock"] == "cpu" and "CPU s per probe step" in measured["sized"][-2]
    # Given by the caller, a time budget is wall time.
    assert size_budget(model, probe, **dict(options, time_budget=5.0))["clock"] == "wall"


def test_an_automatic_budget_stops_trials_on_the_cpu_clock(sigmoid_case, monkeypatch):
    import time as time_module

    from gradadvisor.search import recommendation

    model, x, y, diagnosis = sigmoid_case
    seen = []
    real = recommendation._oracle

    def watched(request, tuner):
        oracle = real(request, tuner)
        seen.append(oracle)
        return oracle

    monkeypatch.setattr(recommendation, "_oracle", watched)
    result = recommend(model, x, y, diagnosis=diagnosis, max_trials=1, confirm_steps=4)
    assert seen[0].clock is time_module.process_time and result.budget["clock"] == "cpu"
    assert 0 < result.budget["cpu_seconds_used"] and any("CPU s" in s for s in result.budget["sized"])


def test_a_gru_model_keeps_its_cell_in_the_gru_starts(long_rnn_case, keras_module):
    keras = keras_module
    _, _, _, diagnosis = long_rnn_case
    gru = keras.Sequential([keras.Input((60, 1)), keras.layers.GRU(8, name="rnn"),
                            keras.layers.Dense(2, activation="softmax", name="output")], name="gru60")
    gru.compile(keras.optimizers.SGD(0.05), "sparse_categorical_crossentropy")
    dimensions = search_space(diagnosis, gru)
    assert next(d for d in dimensions if d.name == "cell").values == ["keep", "lstm"]
    starts = expert_starts(dimensions, diagnosis)
    # The bidirectional GRU with Adam at 1e-2 stays a GRU, not the LSTM the cell dimension defaults to.
    assert any(s["cell"] == "keep" and s["direction"] == "bidirectional" and s["optimizer"] == "adam:0.01"
               for s in starts)
    assert any(s["cell"] == "lstm" and s["forget_bias"] == "chrono" for s in starts)


@pytest.mark.parametrize("optimizer, standard", [("adam", "adam:0.001"), ("rmsprop", "rmsprop:0.001")])
def test_an_adaptive_optimizer_far_above_its_rate_gets_its_standard_rate_early(keras_module, optimizer, standard):
    keras = keras_module
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((30,))] + [keras.layers.Dense(32, activation="relu", kernel_initializer="he_normal")
                                for _ in range(4)] + [keras.layers.Dense(2, activation="softmax")])
    model.compile({"adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop}[optimizer](20.0),
                  "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 30)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("int32")
    diagnosis = diagnose(model, x, y, steps=10)
    assert "exploding_gradients" in diagnosis.categories
    dimensions = {d.name: d for d in search_space(diagnosis, model, trial_steps=60)}
    assert standard in dimensions["optimizer"].values and dimensions["optimizer"].default == "keep"
    assert set(dimensions["optimizer"].opened_by) <= {f.rule for f in diagnosis.findings}
    starts = expert_starts(list(dimensions.values()), diagnosis, model)
    assert starts[0]["optimizer"] == "keep"
    # Only the optimizer changes in the second start.
    assert starts[1]["optimizer"] == standard and starts[1]["learning_rate_scale"] == 1.0
    assert starts[1]["clipping"] == "none" and starts[1].get("initializer", "keep") == "keep"


def test_exploding_through_time_opens_gated_cells(keras_module):
    keras = keras_module
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((30, 1)),
        keras.layers.SimpleRNN(8, activation="relu", name="rnn",
                               recurrent_initializer=keras.initializers.Orthogonal(gain=3.0, seed=0)),
        keras.layers.Dense(2, activation="softmax", name="output")], name="relu_rnn")
    model.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 30, 1)).astype("float32")
    y = (x[:, 0, 0] > 0).astype("int32")
    diagnosis = diagnose(model, x, y, steps=5)
    assert "GA202" in {f.rule for f in diagnosis.findings}
    dimensions = {d.name: d for d in search_space(diagnosis, model)}
    assert "GA202" in dimensions["cell"].opened_by and "clipping" in dimensions
    starts = expert_starts(list(dimensions.values()), diagnosis, model)
    assert any(s["cell"] == "gru" and s["optimizer"] == "adam:0.01" for s in starts[:3])


def _saturated_sigmoid(keras, optimizer):
    """One sigmoid layer with N(0, 8) weights: most of its outputs sit on an asymptote (GA402)."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((16,)),
        keras.layers.Dense(16, activation="sigmoid", name="hidden",
                           kernel_initializer=keras.initializers.RandomNormal(0.0, 8.0, seed=0)),
        keras.layers.Dense(3, activation="softmax", name="out")], name="saturated")
    model.compile(optimizer, "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 16)).astype("float32")
    y = (x[:, 0] > 0).astype("int32") + (x[:, 1] > 0).astype("int32")
    return model, x, y


def test_saturation_at_a_standard_adaptive_rate_opens_a_faster_rate(keras_module):
    keras = keras_module
    model, x, y = _saturated_sigmoid(keras, keras.optimizers.Adam(1e-3))
    diagnosis = diagnose(model, x, y, steps=10)
    assert "GA402" in {f.rule for f in diagnosis.findings}
    dimensions = {d.name: d for d in search_space(diagnosis, model)}
    scale = dimensions["learning_rate_scale"]
    assert 10.0 in scale.values and scale.default == 1.0 and scale.opened_by == ["GA402"]
    starts = expert_starts(list(dimensions.values()), diagnosis, model)
    # The textbook starts come first, at the model's own rate; the faster rate
    # comes last, paired with each normalization placement.
    assert starts[0]["learning_rate_scale"] == 1.0
    faster = [s for s in starts if s["learning_rate_scale"] == 10.0]
    assert starts[-len(faster):] == faster
    assert {s["normalization"] for s in faster} == {"batchnorm_before", "batchnorm_after"}
    assert all(s["activation"] == "relu" and s["initializer"] == "he_normal" for s in faster)
    # No start is the unchanged model (a scale not offered falls back to 1.0).
    assert not any(all(v in ("keep", "none", 1.0) for v in s.values()) for s in starts)


@pytest.mark.parametrize("optimizer", ["sgd", "adam-slow", "adam-fast"])
def test_a_faster_rate_is_not_opened_off_the_standard_adaptive_rate(keras_module, optimizer):
    # SGD and a slow Adam are offered Adam at its standard rate instead; an
    # Adam already at 1e-2 gets no faster rate than that.
    keras = keras_module
    compiled = {"sgd": keras.optimizers.SGD(0.01), "adam-slow": keras.optimizers.Adam(1e-4),
                "adam-fast": keras.optimizers.Adam(1e-2)}[optimizer]
    model, x, y = _saturated_sigmoid(keras, compiled)
    diagnosis = diagnose(model, x, y, steps=10)
    assert "GA402" in {f.rule for f in diagnosis.findings}
    assert not {"exploding_gradients", "nonfinite", "large_updates"} & set(diagnosis.categories)
    dimensions = {d.name: d for d in search_space(diagnosis, model)}
    if optimizer != "adam-fast":
        assert "adam:0.001" in dimensions["optimizer"].values
    scale = dimensions.get("learning_rate_scale")
    assert scale is None or 10.0 not in scale.values
