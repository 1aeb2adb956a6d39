"""The ported real-bug programs build, and their data fit their models (no training)."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import real_bugs  # noqa: E402

CATEGORIES = {"vanishing_gradients", "exploding_gradients", "nonfinite", "dead_units",
              "saturated_units", "slow_updates", "large_updates", "no_learning_signal",
              "output_config"}
ENTRIES = real_bugs.entries()


def test_entries_are_described():
    names = [entry.name for entry in ENTRIES]
    assert len(names) == len(set(names)) >= 15
    for entry in ENTRIES:
        assert entry.family == "real-bugs"
        assert entry.category in CATEGORIES and entry.accepted[0] == entry.category
        assert set(entry.accepted) <= CATEGORIES
        assert entry.task in {"binary", "multiclass", "multilabel", "regression"}
        assert entry.symptom in {"no_learning", "diverges"}
        assert ("stackoverflow.com/questions/" in entry.source
                or "AUTOTRAINER" in entry.source), entry.source
        assert (entry.epochs or entry.steps) and entry.batch_size >= 1


def _check_fits(model, x, y):
    assert model.optimizer is not None and model.loss is not None
    assert tuple(model.input_shape[1:]) == x.shape[1:]
    assert model.output_shape[-1] == (int(np.prod(y.shape[1:])) if y.ndim > 1 else 1)
    assert len(x) == len(y) and np.all(np.isfinite(x)) and np.all(np.isfinite(y))


@pytest.mark.parametrize("entry", ENTRIES, ids=[entry.name for entry in ENTRIES])
def test_program_and_fix_build_and_match_their_data(entry):
    x, y = entry.data(0)
    again_x, again_y = entry.data(0)
    np.testing.assert_array_equal(x, again_x)
    np.testing.assert_array_equal(y, again_y)
    _check_fits(entry.build(), x, y)
    if entry.build_fixed is not None:
        _check_fits(entry.build_fixed(), *entry.data_fixed(0))


def test_keras2_binary_crossentropy_gives_a_one_unit_softmax_no_gradient():
    import tensorflow as tf

    from real_bugs import so_31880720

    model = so_31880720.build()
    x, y = so_31880720.data(0)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(model.loss(y[:16, None], model(x[:16], training=False)))
    gradients = tape.gradient(loss, model.trainable_variables)
    assert np.isfinite(float(loss)) and float(loss) > 1.0
    assert all(float(tf.reduce_max(tf.abs(g))) == 0.0 for g in gradients if g is not None)


def test_keras2_categorical_crossentropy_normalises_then_clips():
    from real_bugs._common import categorical_crossentropy_keras2

    outputs = np.array([[0.9, 0.9, 0.2], [0.0, 1.0, 0.0]], dtype="float32")
    labels = np.array([[1, 0, 0], [1, 0, 0]], dtype="float32")
    expected = [-np.log(0.9 / 2.0), -np.log(1e-7)]
    np.testing.assert_allclose(np.asarray(categorical_crossentropy_keras2(labels, outputs)),
                               expected, rtol=1e-5)
