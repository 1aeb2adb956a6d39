"""Property-based tests: loaders return a clean result or the documented error, nothing else."""

import copy
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradadvisor.analysis.engine import Rule, builtin_rules_dir, load_rule_file
from gradadvisor.errors import DataError, RuleError
from gradadvisor.loading import Data, validate_data

SETTINGS = settings(max_examples=80, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
structures = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)), max_leaves=20)

VALID = yaml.safe_load(Path(builtin_rules_dir(), "GA101-vanishing-gradients.yaml").read_text())
KEYS = sorted(VALID)


def _load(tmp_path, text):
    path = tmp_path / "rule.yaml"
    path.write_text(text)
    try:
        return load_rule_file(path)
    except RuleError as exc:
        assert str(exc).startswith(str(path)) and "\n" not in str(exc)
        return exc


@SETTINGS
@given(document=structures)
def test_random_yaml_structures_load_or_raise_rule_error(tmp_path, document):
    result = _load(tmp_path, yaml.safe_dump(document))
    assert isinstance(result, (Rule, RuleError))


@SETTINGS
@given(key=st.sampled_from(KEYS), value=structures, drop=st.booleans())
def test_mutated_valid_rule_loads_or_raises_rule_error(tmp_path, key, value, drop):
    document = copy.deepcopy(VALID)
    if drop:
        del document[key]
    else:
        document[key] = value
    result = _load(tmp_path, yaml.safe_dump(document))
    assert isinstance(result, (Rule, RuleError))


@SETTINGS
@given(text=st.text(max_size=200))
def test_arbitrary_text_loads_or_raises_rule_error(tmp_path, text):
    assert isinstance(_load(tmp_path, text), (Rule, RuleError))


@pytest.fixture(scope="module")
def model(keras_module):
    keras = keras_module
    built = keras.Sequential([keras.Input((4,), name="x"), keras.layers.Dense(3, activation="softmax")])
    built.compile("adam", "sparse_categorical_crossentropy")
    return built


dtypes = st.sampled_from(["float32", "float64", "int32", "int64", "uint8", "bool", "complex64", "<U3", "object"])
shapes = st.one_of(
    st.lists(st.integers(0, 6), min_size=0, max_size=4).map(tuple),
    st.sampled_from([(5, 4), (0, 4), (1, 4), (5, 4, 1), (4,), (), (5,), (5, 1), (5, 3), (6,), (0,)]))


def _array(shape, dtype, fill):
    if dtype == "object":
        return np.full(shape, fill, dtype=object)
    if dtype == "<U3":
        return np.full(shape, "abc")
    return np.full(shape, fill).astype(dtype)


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
@SETTINGS
@given(x_shape=shapes, x_dtype=dtypes, y_shape=shapes, y_dtype=dtypes,
       fill=st.sampled_from([0.0, 1.0, 2.5, -1.0, np.nan, np.inf, 7.0]))
def test_random_arrays_validate_or_raise_data_error(model, x_shape, x_dtype, y_shape, y_dtype, fill):
    x, y = _array(x_shape, x_dtype, fill), _array(y_shape, y_dtype, fill)
    try:
        data = validate_data(model, x, y, "property test")
    except DataError as exc:
        assert "\n" not in str(exc) and str(exc).endswith(".")
        return
    assert isinstance(data, Data)
    assert data.x[0].shape[1:] == (4,) and np.all(np.isfinite(data.x[0]))
    assert len(data.x[0]) == len(data.y) > 0
    assert data.y.min() >= 0 and data.y.max() < 3


@SETTINGS
@given(count=st.integers(0, 3), names=st.lists(st.sampled_from(["x", "y", "z"]), max_size=3))
def test_random_input_structures_validate_or_raise_data_error(model, count, names):
    arrays = [np.zeros((5, 4), "float32") for _ in range(count)]
    for structure in (arrays, tuple(arrays), {n: np.zeros((5, 4), "float32") for n in names}):
        try:
            validate_data(model, structure, np.zeros(5, "int32"), "property test")
        except DataError:
            pass
