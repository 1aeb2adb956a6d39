"""The benchmark script: label verification, the baselines' rules, one real quick run."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
sys.path.insert(0, str(SCRIPTS))

import baselines  # noqa: E402
import zoo  # noqa: E402

FLOW = ["dense_1", "dense_2", "dense_3", "output"]


def fake_trace(*, rms=(1.0, 1.0, 1.0, 1.0), losses=None, dead=None, saturated=None,
               nonfinite_step=None, num_epochs=20, checks=None):
    """A hand-made Trace: constant per-layer gradient RMS, a loss curve, unit statistics."""
    steps = 100
    losses = list(losses) if losses is not None else list(1.0 - 0.9 * (i / steps) for i in range(steps))
    layer_stats = {}
    for name in FLOW[:-1]:
        stats = {"mean": 0.5, "nonfinite": False, "nonpositive_fraction": 0.1, "activation": "relu",
                 "dead_fraction": (dead or {}).get(name, 0.0)}
        if saturated is not None:
            stats.update(activation="sigmoid", saturated_fraction=saturated.get(name, 0.0),
                         preactivation_beyond_5=saturated.get(name, 0.0))
            del stats["dead_fraction"]
        layer_stats[name] = stats
    layer_stats["output"] = {"mean": 0.1, "nonfinite": False, "nonpositive_fraction": 0.0,
                             "activation": "softmax"}
    check = {"train_loss": 0.5, "train_accuracy": 0.9, "val_loss": 0.5, "val_accuracy": 0.9,
             "zero_grad_fraction": 0.0, "nonfinite_grads": False, "nonfinite_weights": False,
             "kernel_grad_norm": {n: r for n, r in zip(FLOW, rms)},
             "kernel_grad_mean": {n: 1e-3 for n in FLOW},
             "kernel_grad_mean_abs": {n: r for n, r in zip(FLOW, rms)},
             "kernel_mean": {n: 0.01 for n in FLOW}, "layers": layer_stats}
    if checks is None:
        checks = [dict(check, train_loss=1.0 - 0.04 * i, train_accuracy=0.7 + 0.01 * i,
                       val_accuracy=0.7 + 0.01 * i, kernel_mean={n: 0.01 + 1e-3 * i for n in FLOW})
                  for i in range(num_epochs + 1)]
    info = {n: {"class_name": "Dense", "activation": "relu", "recurrent": False} for n in FLOW}
    return zoo.Trace(
        flow_layers=FLOW, output_layer="output", layer_info=info, loss=losses,
        accuracy=[0.9] * len(losses), global_grad_norm=[1.0] * len(losses),
        kernel_grad_norm={n: [r] * len(losses) for n, r in zip(FLOW, rms)},
        kernel_grad_rms={n: [r] * len(losses) for n, r in zip(FLOW, rms)},
        checks=checks, nonfinite_step=nonfinite_step, steps_per_epoch=5, num_epochs=num_epochs,
        seconds=0.0, learning_rate=0.01, loss_name="sparse_categorical_crossentropy",
        input_range=(0.0, 1.0), label_range=(0.0, 9.0), chance_loss=2.3)


def test_a_model_that_learned_with_even_gradients_is_verified_healthy():
    assert zoo.verify(fake_trace())["label"] == "healthy"


def test_a_mislabelled_healthy_candidate_is_measured_as_vanishing():
    stalled = [2.3] * 100
    verdict = zoo.verify(fake_trace(rms=(1e-7, 1e-5, 1e-2, 1.0), losses=stalled))
    assert verdict["label"] == "vanishing"
    assert verdict["first_bad_layer"] == "dense_2"


def test_vanishing_gradients_in_a_model_that_still_learned_are_ambiguous():
    """Between the fault's criteria and the healthy band an entry is rejected, not kept."""
    assert zoo.verify(fake_trace(rms=(1e-7, 1e-5, 1e-2, 1.0)))["label"] == "ambiguous"


def test_nonfinite_loss_is_exploding_and_dead_units_are_found_from_the_input_side():
    losses = [2.3, 5.0, math.nan]
    assert zoo.verify(fake_trace(losses=losses, nonfinite_step=2))["label"] == "exploding"
    verdict = zoo.verify(fake_trace(dead={"dense_2": 1.0, "dense_3": 1.0}))
    assert (verdict["label"], verdict["first_bad_layer"]) == ("dead_units", "dense_2")


def test_every_zoo_entry_has_a_known_label_and_a_unique_name():
    assert len(zoo.ZOO) >= 40
    assert len(zoo.BY_NAME) == len(zoo.ZOO)
    assert {entry.label for entry in zoo.ZOO} == set(zoo.LABELS)
    healthy = sum(entry.label == "healthy" for entry in zoo.ZOO)
    assert 0.28 <= healthy / len(zoo.ZOO) <= 0.4


def test_autotrainer_reports_vanishing_only_for_a_model_that_does_not_converge():
    """beta_1 = 1e-3 on the first/last kernel-gradient ratio, beta_2 = 1e-4 on the first."""
    vanishing = (1e-6, 1e-4, 1e-2, 1.0)
    converging = fake_trace(rms=vanishing)
    assert baselines.autotrainer(converging)["category"] is None
    stuck = fake_trace(rms=vanishing, checks=[
        dict(fake_trace(rms=vanishing).checks[0], train_accuracy=0.1, val_accuracy=0.1)
        for _ in range(21)])
    verdict = baselines.autotrainer(stuck)
    assert verdict["category"] == "vanishing" and verdict["symptom"] == "vanish"


def test_naive_ratio_thresholds():
    assert baselines.naive_ratio(fake_trace(rms=(1e-4, 1, 1, 1.0)))["category"] == "vanishing"
    assert baselines.naive_ratio(fake_trace(rms=(2e3, 1, 1, 1.0)))["category"] == "exploding"
    assert baselines.naive_ratio(fake_trace(rms=(0.5, 1, 1, 1.0)))["category"] is None


def test_deepdiagnosis_saturation_and_vanishing_thresholds():
    saturated = fake_trace(saturated={"dense_1": 0.8})
    verdict = baselines.deepdiagnosis(saturated)
    assert (verdict["category"], verdict["layer"], verdict["epoch"]) == ("saturation", "dense_1", 4)
    vanishing = baselines.deepdiagnosis(fake_trace(rms=(1e-8, 1e-3, 1e-2, 1.0)))
    assert (vanishing["category"], vanishing["layer"]) == ("vanishing", "dense_1")


@pytest.mark.slow
def test_quick_benchmark_runs_end_to_end(tmp_path):
    entries = ["shallow-sigmoid-sgd-cancer", "deep-sigmoid-sgd-digits", "large-init-relu-sgd-digits",
               "sigmoid-raw-wine"]
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / "benchmark.py"), "--quick", "--only", ",".join(entries),
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| gradadvisor |" in result.stdout and "| AUTOTRAINER |" in result.stdout
    data = json.loads((tmp_path / "results.json").read_text())
    summary = data["summary"]
    assert summary["schema"] == "gradadvisor.benchmark/1"
    assert summary["num_candidates"] == len(entries)
    accepted = {row["name"]: row for row in data["entries"]}
    assert set(accepted) | {row["name"] for row in data["rejected"]} == set(entries)
    for row in accepted.values():
        for detector in ("gradadvisor", "AUTOTRAINER", "DeepDiagnosis", "naive ratio"):
            assert "category" in row[detector]
        assert row["diagnosis_seconds"] > 0 and row["fit_seconds"] > 0
    assert set(summary["metrics"]) == {"gradadvisor", "AUTOTRAINER", "DeepDiagnosis", "naive ratio"}
    assert "time_to_diagnosis" in summary and "overhead_vs_fit" in summary
    assert (tmp_path / "results.md").read_text().startswith("# gradadvisor benchmark")
