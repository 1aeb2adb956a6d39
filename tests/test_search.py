"""The search: real Keras Tuner trials over rewritten models, with a confirmation run."""

import os
import signal
import subprocess
import sys
import time
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
    assert [a[0] for a in seen].count("search") == 3 and ("confirm", 2, 2, "") in seen
    loaded = keras_module.models.load_model(tmp_path / "fixed.keras")
    assert loaded.optimizer is not None
    history = loaded.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    document = result.to_dict()
    assert document["setup"] == result.setup.to_dict() and document["fixed_model_path"] == str(tmp_path / "fixed.keras")


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
