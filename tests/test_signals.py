"""Signals against naive reference computations, and the engine's signal cache."""

import math

import numpy as np
import pytest

from gradadvisor.probe import LayerInfo, ProbeResult
from gradadvisor.analysis.signals import REGISTRY, _median, evaluate_signals


def _probe(grad_rms_by_layer, timestep_norms=None, steps=4):
    """A probe of Dense layers (input to output) with the given RMS gradients at every step."""
    layers = [LayerInfo(name=name, class_name="Dense", index=i, activation="relu", num_params=10,
                        is_output=i == len(grad_rms_by_layer) - 1)
              for i, name in enumerate(grad_rms_by_layer)]
    stats = {name: {"grad_rms": [value] * steps} for name, value in grad_rms_by_layer.items()}
    timesteps = {}
    if timestep_norms is not None:
        layers.insert(0, LayerInfo(name="rnn", class_name="SimpleRNN", index=-1, activation="tanh",
                                   num_params=10, recurrent=True))
        timesteps["rnn"] = [list(timestep_norms)] * steps
    return ProbeResult(
        model_name="m", model_class="Sequential", num_params=10 * len(layers), loss_name="mse",
        loss_inferred=False, optimizer={}, data_source="synthetic", batch_size=8, num_steps=steps,
        seed=0, layers=layers, loss=[1.0] * steps, global_grad_norm=[1.0] * steps, stats=stats,
        timestep_grad_norms=timesteps)


def _naive_factor(distances, norms):
    """10 ** (least-squares slope of log10 norm against distance): exact on clean geometric data."""
    slope = np.polyfit(np.asarray(distances, dtype="float64"), np.log10(norms), 1)[0]
    return 10.0 ** slope


def test_depth_decay_factor_matches_a_least_squares_fit_on_clean_data():
    # The RMS gradient shrinks by 0.3 per layer going from the output toward the input.
    rms = {f"dense_{i}": 0.3 ** (5 - i) for i in range(6)}
    value = REGISTRY["depth_decay_factor"].function(_probe(rms), None)
    reference = _naive_factor(range(6), [0.3 ** d for d in range(6)])
    assert value == pytest.approx(reference, rel=1e-3)
    assert reference == pytest.approx(0.3, rel=1e-9)


def test_depth_decay_factor_is_not_moved_by_one_odd_layer():
    rms = {f"dense_{i}": 0.3 ** (5 - i) for i in range(8)}
    rms["dense_0"] = 1.0  # one layer far off the trend
    clean = _naive_factor(range(8), [0.3 ** d for d in range(8)])
    skewed = _naive_factor(range(8), [rms[f"dense_{7 - d}"] for d in range(8)])
    value = REGISTRY["depth_decay_factor"].function(_probe(rms), None)
    assert abs(math.log10(value / clean)) < 0.2 * abs(math.log10(skewed / clean))


@pytest.mark.parametrize("factor", [0.8, 0.999, 1.1])
def test_temporal_decay_factor_matches_a_least_squares_fit_on_clean_data(factor):
    norms = [factor ** (49 - t) for t in range(50)]  # the last timestep gets the largest share
    probe = _probe({"output": 1.0}, timestep_norms=norms)
    layer = probe.layer("rnn")
    value = REGISTRY["temporal_decay_factor"].function(probe, layer)
    reference = _naive_factor(range(49, -1, -1), norms)
    assert value == pytest.approx(reference, rel=1e-4)
    assert REGISTRY["temporal_ratio"].function(probe, layer) == pytest.approx(factor ** 49, rel=1e-9)


def test_median_is_numpys_median_of_the_finite_values():
    rng = np.random.default_rng(0)
    for size in range(0, 30):
        values = rng.lognormal(0, 5, size)
        values[rng.random(size) < 0.2] = np.nan
        values[rng.random(size) < 0.1] = np.inf
        finite = values[np.isfinite(values)]
        assert _median(values) == (float(np.median(finite)) if finite.size else None)


def test_cached_signals_equal_fresh_ones(zoo_diagnoses):
    for name in ("deep-sigmoid", "long-rnn", "large-init-relu"):
        probe = zoo_diagnoses[name].probe
        cache = {}
        for layer in [None] + list(probe.layers):
            names = [n for n, entry in REGISTRY.items() if (entry.scope == "model") == (layer is None)]
            for _ in range(2):  # the second pass reads the cache
                cached = evaluate_signals(probe, names, layer, cache)
                fresh = evaluate_signals(probe, names, layer)
                assert cached.keys() == fresh.keys()
                for key in fresh:
                    assert cached[key] == fresh[key] or (cached[key] != cached[key] and fresh[key] != fresh[key])


def test_message_only_signals_are_filled_in_for_the_named_layer(zoo_diagnoses):
    finding = next(f for f in zoo_diagnoses["long-rnn"].findings if f.rule == "GA102")
    assert "n/a" not in finding.message
    assert "per timestep going back" in finding.message


# --------------------------------------------------------------------------
# No learning signal, divergence around the gradient peak, explained zeros

def _series_probe(losses, norms, layers=None, stats=None, outputs=None):
    """A probe with the given loss and global gradient norm per step."""
    layers = layers or [LayerInfo(name="out", class_name="Dense", index=0, num_params=10, is_output=True)]
    return ProbeResult(
        model_name="m", model_class="Sequential", num_params=10, loss_name="mse", loss_inferred=False,
        optimizer={}, data_source="synthetic", batch_size=8, num_steps=len(losses), seed=0,
        layers=layers, loss=list(losses), global_grad_norm=list(norms), stats=stats or {},
        timestep_grad_norms={}, outputs=outputs or [])


def _signal(name, probe, layer=None):
    return REGISTRY[name].function(probe, layer)


def test_growth_is_measured_from_the_first_nonzero_norm():
    norms = [0.0, 0.0, 0.5, 2.0, 1.0]
    probe = _series_probe([1.0] * 5, norms)
    first = next(n for n in norms if n > 0)
    assert _signal("global_grad_norm_growth", probe) == pytest.approx(max(norms[3:]) / first)
    # All zero: nothing grew (and GA401, which reads it, is no longer silenced).
    assert _signal("global_grad_norm_growth", _series_probe([1.0] * 4, [0.0] * 4)) == 1.0
    assert _signal("global_grad_norm_growth", _series_probe([1.0] * 3, [0.0, 1.0, math.nan])) == math.inf


def test_no_learning_signal_measures_against_naive_references():
    rng = np.random.default_rng(0)
    losses = rng.uniform(0.5, 2.0, 12)
    norms = rng.uniform(0.1, 3.0, 12)
    probe = _series_probe(losses, norms)
    assert _signal("global_grad_norm_max", probe) == pytest.approx(max(norms))
    assert _signal("loss_relative_range", probe) == pytest.approx((max(losses) - min(losses)) / np.median(losses))
    assert _signal("grad_norm_relative_range", probe) == pytest.approx((max(norms) - min(norms)) / np.median(norms))
    assert _signal("probe_steps", probe) == 12
    constant = _series_probe([0.7] * 6, [0.0] * 6)
    assert _signal("global_grad_norm_max", constant) == 0.0
    assert _signal("loss_relative_range", constant) == 0.0
    assert _signal("grad_norm_relative_range", constant) is None  # a zero median says nothing


def test_peak_loss_ratio_tells_a_spike_after_convergence_from_divergence():
    # Recorded in the probe of the Keras docs' BiLSTM classifier (batch 16, seed 0):
    # the gradient peaks at step 28 while the loss keeps most of its progress.
    bilstm_norms = [0.27, 0.26, 0.39, 0.25, 0.41, 0.1, 0.11, 0.11, 0.26, 0.1, 0.11, 0.11, 0.13, 0.3, 0.53,
                    0.58, 0.34, 0.28, 0.51, 0.48, 5, 0.96, 3.1, 5.2, 5.9, 1.1, 1.5, 0.34, 31, 11]
    bilstm_loss = [0.69, 0.69, 0.68, 0.68, 0.71, 0.7, 0.69, 0.69, 0.7, 0.68, 0.68, 0.69, 0.68, 0.69, 0.69,
                   0.68, 0.67, 0.65, 0.63, 0.6, 0.7, 0.47, 0.46, 0.42, 0.37, 0.16, 0.13, 0.051, 0.4, 0.062]
    probe = _series_probe(bilstm_loss, bilstm_norms)
    peak = int(np.argmax(bilstm_norms))
    reference = max(bilstm_loss[peak:peak + 3]) / np.median(bilstm_loss[:3])
    assert _signal("peak_loss_ratio", probe) == pytest.approx(reference)
    assert reference < 1
    assert _signal("global_grad_norm_growth", probe) > 100
    diverging = _series_probe([1.0, 1.1, 0.9, 3.0, 40.0, 30.0], [1.0, 2.0, 5.0, 80.0, 400.0, 10.0])
    assert _signal("peak_loss_ratio", diverging) == pytest.approx(40.0)
    assert _signal("peak_loss_ratio", _series_probe([1.0, math.nan], [1.0, 2.0])) == math.inf


def test_zero_grads_are_explained_by_dead_units_after_the_layer_or_a_sparse_lookup():
    layers = [LayerInfo(name="embed", class_name="Embedding", index=0, num_params=10),
              LayerInfo(name="a", class_name="Dense", index=1, activation="relu", num_params=10),
              LayerInfo(name="b", class_name="Dense", index=2, activation="relu", num_params=10),
              LayerInfo(name="c", class_name="Dense", index=3, activation="tanh", num_params=10),
              LayerInfo(name="out", class_name="Dense", index=4, activation="sigmoid", num_params=10,
                        is_output=True)]
    stats = {"a": {"dead_fraction": [0.0] * 3}, "b": {"dead_fraction": [0.0, 0.9, 0.9]},
             "c": {"saturated_fraction": [0.1] * 3}, "out": {"saturated_fraction": [1.0] * 3}}
    probe = _series_probe([1.0] * 3, [1.0] * 3, layers, stats)
    explained = {info.name: _signal("zero_grads_explained", probe, info) for info in layers}
    # b's dead units (late median 0.9) block what reaches a and b; nothing blocks c;
    # a saturated output sigmoid is trained through its logit, so it blocks nothing.
    assert explained == {"embed": 1.0, "a": 1.0, "b": 1.0, "c": 0.0, "out": 0.0}
    stats["c"]["saturated_fraction"] = [0.8] * 3
    probe = _series_probe([1.0] * 3, [1.0] * 3, layers, stats)
    assert _signal("zero_grads_explained", probe, probe.layer("c")) == 1.0
    assert _signal("zero_grads_explained", _series_probe([1.0] * 3, [0.0] * 3, layers, {}), layers[3]) == 1.0


@pytest.mark.parametrize("entry, flags", [
    ({"activation": "softmax", "units": 1, "loss_kind": "binary", "from_logits": False},
     {"output_softmax_one_unit": 1.0, "output_logits_to_probability_loss": 0.0}),
    ({"activation": "sigmoid", "units": 4, "loss_kind": "categorical", "from_logits": False},
     {"output_sigmoid_multiclass": 1.0, "output_probabilities_to_logits_loss": 0.0}),
    ({"activation": "linear", "units": 1, "loss_kind": "binary", "from_logits": False},
     {"output_logits_to_probability_loss": 1.0, "output_softmax_one_unit": 0.0}),
    ({"activation": "softmax", "units": 3, "loss_kind": "sparse", "from_logits": True},
     {"output_probabilities_to_logits_loss": 1.0, "output_sigmoid_multiclass": 0.0}),
    ({"activation": "linear", "units": 3, "loss_kind": "sparse", "from_logits": None},
     {"output_logits_to_probability_loss": None, "output_probabilities_to_logits_loss": None}),
    ({"activation": "relu", "units": 10, "loss_kind": "categorical", "from_logits": False},
     {"output_nonprobability_to_probability_loss": 1.0, "output_logits_to_probability_loss": 0.0}),
    ({"activation": "softmax", "units": 10, "loss_kind": "categorical", "from_logits": False},
     {"output_nonprobability_to_probability_loss": 0.0}),
    # A sigmoid regression output whose targets run far above 1 (SO 48221692).
    ({"activation": "sigmoid", "units": 1, "loss_kind": "regression", "from_logits": None,
      "targets": {"p01": 5.3, "p99": 35.1, "min": 4.0, "max": 36.0}},
     {"output_targets_out_of_range": 1.0, "output_range_low": 0.0, "output_range_high": 1.0,
      "target_p01": 5.3, "target_p99": 35.1}),
    ({"activation": "sigmoid", "units": 1, "loss_kind": "regression", "from_logits": None,
      "targets": {"p01": 0.0, "p99": 1.0, "min": 0.0, "max": 1.0}},
     {"output_targets_out_of_range": 0.0}),
    ({"activation": "relu", "units": 1, "loss_kind": "regression", "from_logits": None,
      "targets": {"p01": -2.0, "p99": 3.0, "min": -3.0, "max": 4.0}},
     {"output_targets_out_of_range": 1.0, "output_range_high": math.inf}),
    ({"activation": "linear", "units": 1, "loss_kind": "regression", "from_logits": None,
      "targets": {"p01": -200.0, "p99": 300.0, "min": -300.0, "max": 400.0}},
     {"output_targets_out_of_range": 0.0}),
    # Without the user's targets, or for class ids, there is nothing to judge.
    ({"activation": "sigmoid", "units": 1, "loss_kind": "regression", "from_logits": None, "targets": None},
     {"output_targets_out_of_range": None, "output_softmax_rows_not_one": None}),
    ({"activation": "softmax", "units": 3, "loss_kind": "sparse", "from_logits": False,
      "targets": {"p01": 0.0, "p99": 2.0, "min": 0.0, "max": 2.0}},
     {"output_targets_out_of_range": None, "output_softmax_rows_not_one": None}),
    # Multi-hot rows under a softmax (SO 38648195), and one-hot rows.
    ({"activation": "softmax", "units": 3, "loss_kind": "regression", "from_logits": None,
      "targets": {"p01": 0.0, "p99": 1.0, "min": 0.0, "max": 1.0, "row_sum_p01": 0.0, "row_sum_p99": 3.0}},
     {"output_softmax_rows_not_one": 1.0, "output_targets_out_of_range": 0.0, "target_row_sum_p99": 3.0}),
    ({"activation": "softmax", "units": 3, "loss_kind": "categorical", "from_logits": False,
      "targets": {"p01": 0.0, "p99": 1.0, "min": 0.0, "max": 1.0, "row_sum_p01": 1.0, "row_sum_p99": 1.0}},
     {"output_softmax_rows_not_one": 0.0}),
])
def test_output_flags_read_the_recorded_output(entry, flags):
    layers = [LayerInfo(name="hidden", class_name="Dense", index=0, num_params=10),
              LayerInfo(name="inner/head", class_name="Dense", index=1, num_params=10, is_output=True)]
    probe = _series_probe([1.0] * 3, [1.0] * 3, layers, outputs=[{"layer": "head", **entry}])
    for name, value in flags.items():
        assert _signal(name, probe, probe.layer("inner/head")) == value
        assert _signal(name, probe, probe.layer("hidden")) is None


def test_results_saved_before_outputs_were_recorded_still_load():
    data = _series_probe([1.0] * 3, [1.0] * 3).to_dict()
    del data["outputs"]
    assert ProbeResult.from_dict(data).outputs == []


def test_persistent_dead_fraction_is_the_smallest_late_share():
    layers = [LayerInfo(name="head", class_name="Dense", index=0, activation="relu", num_params=10),
              LayerInfo(name="out", class_name="Dense", index=1, num_params=10, is_output=True)]
    # Nine steps: the last third is the last three. Units off for one small batch
    # raise the median, not the share that is off in every late batch.
    series = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.9, 0.55, 0.8]
    probe = _series_probe([1.0] * 9, [1.0] * 9, layers, {"head": {"dead_fraction": series}})
    assert _signal("dead_fraction", probe, layers[0]) == pytest.approx(0.8)
    assert _signal("dead_fraction_persistent", probe, layers[0]) == pytest.approx(min(series[-3:]))
    assert _signal("dead_fraction_persistent", probe, layers[1]) is None


def test_the_most_damaged_layer_and_the_loss_against_the_untrained_model():
    layers = [LayerInfo(name="a", class_name="Conv2D", index=0, activation="relu", num_params=10),
              LayerInfo(name="b", class_name="Conv2D", index=1, activation="relu", num_params=10),
              LayerInfo(name="out", class_name="Dense", index=2, num_params=10, is_output=True)]
    dead = {"a": {"dead_fraction": [0.0, 0.2, 0.3, 0.3, 0.4, 0.3]},
            "b": {"dead_fraction": [0.0, 0.9, 0.95, 0.99, 0.8, 0.97]}}
    # Recorded in VGG16's probe (Adam 1e-3): the second step blows up, then the
    # loss sits at the untrained model's. Its median of the first three steps
    # hides a blow-up that lasts two steps; the first step alone does not.
    losses = [2.3, 13181.8, 43.8, 2.37, 2.39, 2.42]
    probe = _series_probe(losses, [1.0] * 6, layers, dead)
    assert _signal("dead_fraction_persistent_max", probe) == pytest.approx(min(0.8, 0.97))
    assert _signal("loss_end_to_untrained", probe) == pytest.approx(2.39 / 2.3)
    assert _signal("loss_ratio", probe) == pytest.approx(2.39 / 43.8)
    assert _signal("loss_end_to_untrained", _series_probe([2.3, math.inf], [1.0, 1.0])) == math.inf
    # The built-in large-init-relu example: the gradients turn NaN at the third
    # step while the loss there is finite; a run that broke did not end anywhere.
    broken = _series_probe([71048.2, 2.6e15, 2.3], [1.8e5, 4.9e14, math.nan])
    broken.nonfinite = {"step": 2, "layers": ["dense_6"]}
    assert _signal("loss_end_to_untrained", broken) == math.inf
    without_relu = _series_probe(losses, [1.0] * 6, layers[2:], {})
    assert _signal("dead_fraction_persistent_max", without_relu) is None


def test_targets_are_described_by_percentiles_and_row_sums():
    from gradadvisor.probe import describe_targets

    rng = np.random.default_rng(0)
    summary = describe_targets(rng.uniform(5.0, 35.0, size=(1000, 1)).astype("float32"))
    assert 5.0 <= summary["p01"] < 6.0 and 34.0 < summary["p99"] <= 35.0
    assert "row_sum_p01" not in summary
    multi_hot = np.array([[1, 1, 0], [1, 1, 1], [0, 0, 0], [1, 0, 0]] * 25, dtype="float32")
    rows = describe_targets(multi_hot)
    assert rows["row_sum_p01"] == 0.0 and rows["row_sum_p99"] == 3.0
    assert describe_targets(None) is None
    assert describe_targets(np.array(["a", "b"])) is None


def test_dead_fraction_rise_counts_units_that_died_during_the_probe():
    layers = [LayerInfo(name="conv", class_name="Conv2D", index=0, activation="relu", num_params=10),
              LayerInfo(name="out", class_name="Dense", index=1, num_params=10, is_output=True)]
    # Nine steps: 10% dead at the first step, at least 40% in every one of the last three.
    series = [0.1, 0.2, 0.3, 0.4, 0.5, 0.4, 0.45, 0.4, 0.6]
    probe = _series_probe([1.0] * 9, [1.0] * 9, layers, {"conv": {"dead_fraction": series}})
    assert _signal("dead_fraction_rise", probe, layers[0]) == pytest.approx(min(series[-3:]) - series[0])
    assert _signal("dead_fraction_rise", probe, layers[1]) is None
    # Units dead from the start did not die during the probe.
    dead_from_start = _series_probe([1.0] * 9, [1.0] * 9, layers, {"conv": {"dead_fraction": [0.8] * 9}})
    assert _signal("dead_fraction_rise", dead_from_start, layers[0]) == 0.0


def test_largest_update_ratio_is_the_largest_finite_step():
    layers = [LayerInfo(name="conv", class_name="Conv2D", index=0, activation="relu", num_params=10)]
    # A large first step, then the layer's dead units get no gradient and the steps shrink.
    series = [0.9, float("nan"), 0.02, 0.001, 0.0005, 0.0004]
    probe = _series_probe([1.0] * 6, [1.0] * 6, layers, {"conv": {"update_ratio": series}})
    assert _signal("update_ratio_max", probe, layers[0]) == pytest.approx(0.9)
    finite = [0.9, 0.02, 0.001, 0.0005, 0.0004]
    assert _signal("update_ratio", probe, layers[0]) == pytest.approx(float(np.median(finite)))


@pytest.mark.parametrize("depth,odd,fires", [(40, False, True), (11, True, False)])
def test_a_gentle_decay_is_vanishing_over_a_deep_network_and_one_odd_layer_is_not(depth, odd, fires):
    # 0.79 per layer (EfficientNetB0 with sigmoid units and no normalization): above the
    # 0.7 a shallow network needs, yet 1e-4 of the output's gradient over 40 layers. Over
    # 11 layers the same trend is 0.075x, and one layer far under it must not count.
    from gradadvisor.analysis.engine import evaluate, load_rules

    rms = {f"dense_{i}": 0.79 ** (depth - i) for i in range(depth + 1)}
    if odd:
        rms["dense_0"] = 1e-4
    probe = _probe(rms)
    assert REGISTRY["depth_decay_factor"].function(probe, None) > 0.7
    total = REGISTRY["depth_trend_total"].function(probe, None)
    assert total == pytest.approx(REGISTRY["depth_decay_factor"].function(probe, None) ** depth, rel=1e-9)
    assert (total < 1e-3) is fires
    findings = evaluate(probe, {"GA101": load_rules()["GA101"]})
    assert bool(findings) is fires
    if fires:
        # Located where the gradient itself first falls under 1e-3 of the output's.
        assert findings[0].first_layer == f"dense_{depth - 30}"
