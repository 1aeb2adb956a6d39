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
