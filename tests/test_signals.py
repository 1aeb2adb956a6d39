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
