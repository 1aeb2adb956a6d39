"""The benchmark script: label verification, the baselines' rules, one real quick run."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
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


# --------------------------------------------------------------------------
# Outcome labels: real training of tiny entries (a few dozen steps)

import outcome_labels as outcome  # noqa: E402


def _iris_mlp(activation, optimizer, bias=0.0, init="he_normal"):
    def build(seed):
        import keras

        data = zoo.iris()
        model = keras.Sequential([
            keras.Input(shape=(4,)),
            keras.layers.Dense(16, activation=activation, kernel_initializer=init,
                               bias_initializer=keras.initializers.Constant(bias), name="dense_1"),
            keras.layers.Dense(16, activation=activation, kernel_initializer=init,
                               bias_initializer=keras.initializers.Constant(bias), name="dense_2"),
            keras.layers.Dense(3, activation="softmax", name="output")])
        model.compile(optimizer=optimizer(), loss="sparse_categorical_crossentropy")
        return model, data

    return build


def _entry(name, label, builder, reference=None):
    return zoo.Entry(name, "mlp", label, builder, "tiny test entry", steps=60, batch_size=16,
                     reference=reference)


@pytest.fixture(scope="module")
def tiny_labels():
    import keras

    healthy = _iris_mlp("relu", lambda: keras.optimizers.Adam(3e-2))
    entries = [
        _entry("tiny-healthy", "healthy", healthy),
        _entry("tiny-exploding", "exploding",
               _iris_mlp("relu", lambda: keras.optimizers.SGD(30.0, momentum=0.9), init="glorot_uniform"),
               reference=healthy),
        _entry("tiny-dead", "dead_units", _iris_mlp("relu", lambda: keras.optimizers.Adam(1e-3), bias=-20.0)),
    ]
    return {entry.name: outcome.label(entry) for entry in entries}


def test_outcome_labeller_calls_a_tiny_mlp_that_learns_healthy(tiny_labels):
    verdict = tiny_labels["tiny-healthy"]
    run = verdict["runs"]["as_built"]
    assert verdict["label"] == "healthy", verdict["reasons"]
    assert run["final_loss"] <= outcome.LEARNED_RATIO * run["chance_loss"]
    assert set(verdict["runs"]) == {"as_built"}  # no control run was needed


def test_outcome_labeller_calls_a_diverging_model_exploding_after_a_control_learns(tiny_labels):
    verdict = tiny_labels["tiny-exploding"]
    assert verdict["label"] == "exploding", verdict["reasons"]
    assert outcome.diverged(verdict["runs"]["as_built"]) is not None
    controls = [verdict["runs"][name] for name in ("lower_lr", "reference") if name in verdict["runs"]]
    assert any(outcome.learned(run) for run in controls)


def test_outcome_labeller_calls_units_dead_on_every_sample_dead(tiny_labels):
    verdict = tiny_labels["tiny-dead"]
    assert verdict["label"] == "dead_units", verdict["reasons"]
    assert verdict["runs"]["as_built"]["dead_fraction"] == 1.0


def test_outcome_labeller_judges_a_batch_norm_model_by_its_weights_not_by_lagging_moving_averages():
    # Batch statistics far from the initial moving averages (mean 0, variance 1), averaged with
    # keras.applications' MobileNet momentum: after 60 steps the averages still hold 94% of
    # their start, so in inference mode the trained model looked as if it had learned nothing.
    def build(seed):
        import keras

        data = zoo.iris()
        model = keras.Sequential([
            keras.Input(shape=(4,)),
            keras.layers.Dense(16, bias_initializer=keras.initializers.Constant(5.0)),
            keras.layers.BatchNormalization(momentum=0.999), keras.layers.Activation("relu"),
            keras.layers.Dense(3, activation="softmax")])
        model.compile(optimizer=keras.optimizers.Adam(3e-2), loss="sparse_categorical_crossentropy")
        return model, data

    verdict = outcome.label(_entry("tiny-batchnorm", "healthy", build))
    assert verdict["label"] == "healthy", verdict["reasons"]


def test_reference_fix_swaps_saturating_activations_and_recurrent_cells():
    import keras

    model, _ = zoo.BY_NAME["deep-sigmoid-sgd-digits"].build(0)
    fixed = outcome.reference_model(model, 0)
    hidden = [layer for layer in fixed.layers if layer.name.startswith("dense_")]
    assert hidden and all(layer.get_config()["activation"] == "relu" for layer in hidden)
    assert fixed.layers[-1].get_config()["activation"] == "softmax"
    assert isinstance(fixed.optimizer, keras.optimizers.Adam)
    rnn, _ = zoo.BY_NAME["simplernn-short-recall"].build(0)
    assert any(isinstance(layer, keras.layers.LSTM) for layer in outcome.reference_model(rnn, 0).layers)


# --------------------------------------------------------------------------
# Calibration / test split

import benchmark  # noqa: E402


def test_split_is_deterministic_honours_the_calibration_list_and_each_stratum():
    items = [(f"entry-{i}", ("MLP", "healthy" if i % 2 else "vanishing")) for i in range(40)]
    forced = {"entry-3", "entry-8"}
    first = benchmark.assign_split(items, forced)
    assert first == benchmark.assign_split(list(reversed(items)), forced)
    assert first["entry-3"] == first["entry-8"] == "calibration"
    share = sum(v == "calibration" for v in first.values()) / len(first)
    assert 0.25 <= share <= 0.6
    for stratum in {s for _, s in items}:
        sides = {first[n] for n, s in items if s == stratum}
        assert sides == {"calibration", "test"}
    # Adding entries never moves one already assigned.
    more = benchmark.assign_split(items + [(f"new-{i}", ("CNN", "healthy")) for i in range(5)], forced)
    assert all(more[name] == side for name, side in first.items())


def test_calibration_list_is_read_from_backticked_names(tmp_path):
    path = tmp_path / "calibration.md"
    path.write_text("# Calibration\n\n- `gru-short-adding`: GA102\n- `docs-bilstm` and `convnext-tiny`\n")
    assert benchmark.calibration_names(path) == {"gru-short-adding", "docs-bilstm", "convnext-tiny"}
    assert benchmark.calibration_names(tmp_path / "absent.md") == set()
    listed = benchmark.calibration_names()
    assert {"gru-short-adding", "large-init-cnn-relu", "convnext-tiny", "docs-bilstm",
            "mobilenet-v2-sigmoid-nonorm"} <= listed


# --------------------------------------------------------------------------
# Peers: n/a where they do not cover a category or do not localise


def _row(truth, verdicts, layer=None):
    return {"truth": truth, "truth_layer": "dense_2" if truth != "healthy" else None,
            "layer_order": {"dense_1": 0, "dense_2": 1, "output": 2},
            **{name: {"category": verdicts.get(name), "layer": layer} for name in benchmark.DETECTORS}}


def test_peers_show_na_for_categories_they_do_not_cover_and_for_localisation():
    rows = [_row("saturation", {"gradadvisor": "saturation", "DeepDiagnosis": "saturation"}, "dense_2"),
            _row("dead_units", {"gradadvisor": "dead_units", "AUTOTRAINER": "dead_units"}, "dense_2"),
            _row("healthy", {})]
    auto = benchmark.metrics(rows, "AUTOTRAINER")
    assert auto["categories"]["saturation"]["recall"] == "n/a"
    assert auto["categories"]["dead_units"]["recall"] == 1.0
    assert auto["localisation"]["accuracy"] == "n/a"
    assert auto["num_scored"] == 2  # the saturation entry is outside its coverage
    naive = benchmark.metrics(rows, "naive ratio")
    assert naive["categories"]["dead_units"]["precision"] == "n/a"
    deep = benchmark.metrics(rows, "DeepDiagnosis")
    assert deep["categories"]["saturation"]["recall"] == 1.0
    assert deep["localisation"]["hits"] == 1
    ours = benchmark.metrics(rows, "gradadvisor")
    assert ours["localisation"] == {"accuracy": 1.0, "hits": 2, "cases": 2}
    table = "\n".join(benchmark._detection_table({"AUTOTRAINER": auto}))
    assert "| n/a | n/a |" in table and table.rstrip().endswith("n/a |")


def test_real_bug_providers_are_modules_with_an_entries_function(tmp_path, monkeypatch):
    folder = tmp_path / "bugs_for_test"
    folder.mkdir()
    (folder / "one.py").write_text(
        "import zoo\n\ndef entries():\n    return [zoo.BY_NAME['deep-sigmoid-sgd-digits']]\n")
    (folder / "_helper.py").write_text("raise RuntimeError('helpers are not providers')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = benchmark.real_bug_entries(folder)
    assert [entry.name for entry in found] == ["deep-sigmoid-sgd-digits"]
    assert benchmark.real_bug_entries(tmp_path / "absent") == []


@pytest.mark.slow
def test_benchmark_runs_end_to_end_and_rerenders_from_its_caches(tmp_path):
    entries = ["shallow-sigmoid-sgd-cancer", "deep-sigmoid-sgd-digits", "large-init-relu-sgd-digits",
               "sigmoid-raw-wine"]
    command = [sys.executable, str(SCRIPTS / "benchmark.py"), "--family", "zoo", "--only", ",".join(entries),
               "--out", str(tmp_path), "--no-fit"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "## Detection on the test split" in result.stdout
    labels = json.loads((tmp_path / "labels.json").read_text())["entries"]
    assert set(labels) == set(entries)
    data = json.loads((tmp_path / "results.json").read_text())
    summary = data["summary"]
    assert summary["schema"] == "gradadvisor.benchmark/2"
    assert set(data["split"]) == set(entries) and set(data["split"].values()) <= {"calibration", "test"}
    for name, row in data["entries"].items():
        assert row["truth"] == labels[name]["label"]
        assert "label" in row["gradient_opinion"]
        for detector in ("gradadvisor", "AUTOTRAINER", "DeepDiagnosis", "naive ratio"):
            assert "category" in row[detector]
    assert summary["label_agreement"]["compared"] == len(data["entries"])
    again = subprocess.run(command + ["--report-only"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((tmp_path / "results.json").read_text())["entries"].keys() == data["entries"].keys()


def test_shard_option_accepts_k_of_n_and_explains_a_bad_value():
    import argparse

    assert benchmark._shard("1/2") == (1, 2)
    for text in ("2/2", "x", "1"):
        with pytest.raises(argparse.ArgumentTypeError, match=f"expected K/N .* got '{text}'"):
            benchmark._shard(text)


def test_false_alarm_sweep_orders_the_docs_models_then_the_cheapest_applications():
    import third_party

    assert sorted(third_party.CHEAPEST_FIRST) == sorted(a[0] for a in third_party.APPLICATIONS)
    healthy = [entry for entry in third_party.entries() if entry.label == "healthy"]
    ordered = [entry.name for entry in third_party.cheapest_first(healthy)]
    assert sorted(ordered) == sorted(entry.name for entry in healthy)
    assert ordered[:3] == ["docs-transformer", "docs-bilstm", "mobilenet-v3-small"]
    assert ordered[-1] == "convnext-xlarge"


def test_false_alarm_sweep_covers_every_model_at_a_seed_before_the_next_seed():
    entries = [_Tiny("a"), _Tiny("b")]
    runs = {"b|16|0": {}, "b|32|0": {}, "a|16|1": {}}  # made at some earlier code
    plan = [f"{e.name}|{batch}|{seed}" for e, batch, seed in benchmark.sweep_plan(entries, runs)][:6]
    assert plan == ["a|16|0", "a|32|0", "b|16|0", "b|32|0", "a|32|1", "b|16|1"]


class _Tiny:
    """A stand-in entry: a two-layer model that builds in milliseconds."""

    def __init__(self, name):
        self.name, self.label = name, "healthy"

    def build(self, seed):
        import keras

        x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
        y = (x[:, 0] > 0).astype("float32")
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="tanh"),
                                  keras.layers.Dense(1, activation="sigmoid")])
        model.compile(optimizer="adam", loss="binary_crossentropy")
        return model, zoo.Dataset("tiny", x, y, x, y)


def test_false_alarm_shards_share_one_cache_without_losing_runs(tmp_path, monkeypatch):
    import argparse

    monkeypatch.setattr(benchmark, "FALSE_ALARM_SEEDS", (0,))
    entries = [_Tiny("tiny-a"), _Tiny("tiny-b")]
    # Another process's run, written after this one read the cache, must survive.
    stranger = {"entry": "other", "batch_size": 16, "seed": 0, "status": "healthy", "alarms": [],
                "seconds": 1.0, "fingerprint": benchmark.code_fingerprint()}
    real_diagnose = __import__("gradadvisor.api", fromlist=["diagnose"]).diagnose

    def diagnose_and_meanwhile_write(*args, **kwargs):
        path = tmp_path / "cache" / "false_alarms.json"
        cache = benchmark.read_json(path, {"runs": {}})
        cache["runs"]["other|16|0"] = stranger
        benchmark.write_json(path, cache)
        return real_diagnose(*args, **{**kwargs, "steps": 3})

    monkeypatch.setattr("gradadvisor.api.diagnose", diagnose_and_meanwhile_write)
    args = argparse.Namespace(out=str(tmp_path), refresh=False, shard=(1, 2))
    runs = benchmark.ensure_false_alarms(entries, args)
    # Plan: a|16, a|32, b|16, b|32; shard 1 of 2 takes the second and fourth.
    assert sorted(runs) == ["tiny-a|32|0", "tiny-b|32|0"]
    on_disk = json.loads((tmp_path / "cache" / "false_alarms.json").read_text())["runs"]
    assert set(on_disk) == {"tiny-a|32|0", "tiny-b|32|0", "other|16|0"}
    # Each run's probe is kept, and the rules applied to it again give the run's verdict.
    from gradadvisor.analysis.engine import evaluate, load_rules

    fingerprint, probe = benchmark.load_probe(tmp_path / "cache" / "false_alarm_probes" / "tiny-a-32-0.json.gz")
    assert fingerprint == benchmark.probe_fingerprint() and probe.steps_run == 3
    again = [f.rule for f in evaluate(probe, load_rules()) if f.severity in ("warning", "error")]
    assert again == [a["rule"] for a in on_disk["tiny-a|32|0"]["alarms"]]

    # Rules changed since a run, probe code not: the rules are applied to the saved probe, nothing is probed.
    on_disk["tiny-a|32|0"].update(fingerprint="earlier-rules", alarms=[{"rule": "GA999"}])
    on_disk["tiny-b|32|0"].update(fingerprint="earlier-rules", probe_fingerprint="earlier-probe")
    benchmark.write_json(tmp_path / "cache" / "false_alarms.json", {"runs": on_disk})
    probed = []
    monkeypatch.setattr("gradadvisor.api.diagnose",
                        lambda *a, **k: probed.append(k["batch_size"]) or real_diagnose(*a, **{**k, "steps": 3}))
    runs = benchmark.ensure_false_alarms(entries, argparse.Namespace(out=str(tmp_path), refresh=False, shard=None))
    assert runs["tiny-a|32|0"]["rules_reapplied"] and [a["rule"] for a in runs["tiny-a|32|0"]["alarms"]] == again
    assert runs["tiny-a|32|0"]["fingerprint"] == benchmark.code_fingerprint()
    # Probed: the two runs never made (batch 16) and tiny-b at 32, whose probe code changed; not tiny-a at 32.
    assert sorted(probed) == [16, 16, 32] and not runs["tiny-b|32|0"].get("rules_reapplied")

    # The report paths apply the current rules again to kept probes too, without probing anything.
    on_disk = json.loads((tmp_path / "cache" / "false_alarms.json").read_text())["runs"]
    on_disk["tiny-a|32|0"].update(fingerprint="earlier-rules", alarms=[{"rule": "GA999"}], rules_reapplied=False)
    benchmark.write_json(tmp_path / "cache" / "false_alarms.json", {"runs": on_disk})
    probed.clear()
    benchmark.rejudge_false_alarms(argparse.Namespace(out=str(tmp_path)))
    rejudged = json.loads((tmp_path / "cache" / "false_alarms.json").read_text())["runs"]["tiny-a|32|0"]
    assert rejudged["fingerprint"] == benchmark.code_fingerprint() and rejudged["rules_reapplied"]
    assert [a["rule"] for a in rejudged["alarms"]] == again and probed == []


def test_false_alarm_report_keeps_runs_of_earlier_code_apart():
    def run(entry, batch, seed, fingerprint, alarms=()):
        return {"entry": entry, "batch_size": batch, "seed": seed, "fingerprint": fingerprint, "seconds": 10.0,
                "status": "error" if alarms else "healthy",
                "alarms": [{"rule": r, "severity": "error", "first_layer": None, "summary": "grew"} for r in alarms]}

    runs = {"vgg16|16|0": run("vgg16", 16, 0, "old", ["GA203"]), "vgg16|32|0": run("vgg16", 32, 0, "new"),
            "resnet50|16|1": run("resnet50", 16, 1, "new", ["GA101"]), "other|16|0": run("other", 16, 0, "new")}
    text = benchmark.render_false_alarm_runs(runs, ["vgg16", "resnet50", "mobilenet"],
                                             {"vgg16": {"label": "exploding"}}, "new", set(), "cmd")
    assert "2 of 30 runs done, 1 with an alarm." in text
    assert "| 1 | 1/1 with an alarm | not run |" in text and "| 0 | not run | 0/1 with an alarm |" in text
    assert ("1 runs made before the code last changed (fingerprints `old`); not counted above. 1 of them had an "
            "alarm. 1 of these are on models whose outcome label is a fault, not healthy (vgg16: exploding)") in text
    assert "| vgg16 | no | exploding | 1: 32/0 | 0 | 1 | 1 | 10 |" in text
    assert "Never run at any code version: mobilenet." in text
    assert "- vgg16 batch 16 seed 0 (code `old`): GA203 (error) at the model: grew" in text
    assert "other" not in text


def test_real_bug_programs_are_summarised_with_the_calibration_programs_apart(tmp_path):
    def program(name, identified, fixed_status="healthy", reproduces=True):
        return {"name": name, "reproduces": reproduces,
                "detection": {"identified": identified} if reproduces else None,
                "fixed_detection": {"status": fixed_status}}

    record = {"run_command": "python scripts/real_bugs/run.py", "entries": [
        program("so-1-softmax", True), program("so-2-xor", False, "error"), program("so-3-mse", True),
        program("so-4-odd", False, reproduces=False)]}
    (tmp_path / "real_bugs.json").write_text(json.dumps(record))
    summary = benchmark.real_bug_programs(tmp_path / "real_bugs.json", {"so-1"})
    assert summary["ported"] == 4 and summary["reproducing"] == 3
    assert summary["all"] == {"programs": 3, "identified": 2, "fixed_with_alarm": 1, "missed": ["so-2-xor"]}
    assert summary["test"]["programs"] == 2 and summary["calibration"] == ["so-1-softmax"]
    assert benchmark.real_bug_programs(tmp_path / "absent.json", set()) is None
