"""Shared fixtures: quiet TensorFlow, fixed seeds, and models probed once per session."""

import os
import random

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np
import pytest

from gradadvisor._tf import import_keras


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same random state."""
    random.seed(0)
    np.random.seed(0)
    if "keras" in __import__("sys").modules:
        import keras

        keras.utils.set_random_seed(0)


@pytest.fixture(scope="session")
def keras_module():
    _, keras = import_keras()
    return keras


@pytest.fixture(scope="session")
def keras(keras_module):
    """The ``keras`` module, for tests that take it as a fixture."""
    return keras_module


@pytest.fixture(scope="session")
def tf(keras_module):
    """The ``tensorflow`` module (imported once Keras is)."""
    import tensorflow

    return tensorflow


@pytest.fixture(scope="session")
def zoo_diagnoses():
    """``{example name: Diagnosis}`` for every built-in example, probed once."""
    from gradadvisor.api import diagnose
    from gradadvisor.examples import EXAMPLES, build_example

    results = {}
    for name in EXAMPLES:
        model, x, y = build_example(name)
        results[name] = diagnose(model, x, y, steps=30, batch_size=32)
    return results


@pytest.fixture(scope="session")
def sigmoid_stack(keras_module):
    """A builder of ``(model, x, y)``: a small deep sigmoid stack that vanishes.

    Each call builds the same fresh, compiled model (seeded), so tests that
    save, search or train it do not share state.
    """
    keras = keras_module

    def build():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((16,))] + [
            keras.layers.Dense(16, activation="sigmoid", name=f"d{i}") for i in range(8)
        ] + [keras.layers.Dense(3, activation="softmax", name="out")], name="sig")
        model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
        rng = np.random.default_rng(0)
        x = rng.normal(size=(300, 16)).astype("float32")
        y = np.argmax(x[:, :3], 1).astype("int32")
        return model, x, y

    return build
