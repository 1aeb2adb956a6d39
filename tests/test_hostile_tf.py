"""Hostile inputs that only show once TensorFlow has loaded the model: one parametrised test.

Odd data (CSV from Excel, ``tf.data`` pipelines that yield nothing or the
wrong thing), odd models (several outputs, names with markup, a custom
class that is not at hand) and odd file systems (a full disk, a read-only
folder).  Each case runs in-process and probes for two steps at most.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from hostile import Tree, case_registry, expect

CASES, case = case_registry()


@pytest.fixture(scope="module")
def models(tmp_path_factory, keras_module):
    """Tiny saved models: ``plain`` (8 -> 3 classes), ``multi`` (two outputs), ``markup`` (names
    with markup), ``custom`` (a layer class registered only while saving)."""
    keras = keras_module
    folder = tmp_path_factory.mktemp("hostile-tf-models")
    keras.utils.set_random_seed(0)
    plain = keras.Sequential([keras.Input((8,), name="features"), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")], name="plain")
    plain.compile("adam", "sparse_categorical_crossentropy")
    plain.save(folder / "plain.keras")

    inputs = keras.Input((8,), name="features")
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    multi = keras.Model(inputs, [keras.layers.Dense(3, activation="softmax", name="cls")(hidden),
                                 keras.layers.Dense(1, name="reg")(hidden)], name="two_out")
    multi.compile("adam", ["sparse_categorical_crossentropy", "mse"])
    multi.save(folder / "multi.keras")

    inputs = keras.Input((8,), name="feat<i>")
    hidden = keras.layers.Dense(8, activation="tanh", name="<b>hid&amp;<b>")(inputs)
    hidden = keras.layers.Dense(8, activation="tanh", name="<script>alert(1)<\\script>")(hidden)
    markup = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="out'\"")(hidden),
                         name="<img src=x onerror=alert(1)>")
    markup.compile("adam", "sparse_categorical_crossentropy")
    markup.save(folder / "markup.keras")

    @keras.saving.register_keras_serializable(package="hostile")
    class ScaledDense(keras.layers.Dense):
        pass

    custom = keras.Sequential([keras.Input((8,)), ScaledDense(4, name="scaled"),
                               keras.layers.Dense(3, activation="softmax")], name="custom")
    custom.compile("adam", "sparse_categorical_crossentropy")
    custom.save(folder / "custom.keras")
    # Loading must find the class missing, as in a fresh process without the user's module.
    del keras.saving.get_custom_objects()["hostile>ScaledDense"]
    return folder


def _copy(models, tree, name):
    path = tree.inputs / f"{name}.keras"
    shutil.copy2(models / f"{name}.keras", path)
    return path


def _data_module(tree, body):
    """A module ``hostile_data_<case>`` on sys.path whose functions return data."""
    name = f"hostile_data_{abs(hash(str(tree.root)))}"
    (tree.inputs / f"{name}.py").write_text(
        "import numpy as np\nimport tensorflow as tf\n\n" + textwrap.dedent(body))
    sys.path.insert(0, str(tree.inputs))
    return name


_QUICK = ["--steps", "2", "--batch-size", "4", "--no-search", "-q", "--fail-on", "never"]


# ============================================================================ data

@case("csv-with-byte-order-mark-works", code=0)
def _(tree, models):
    rows = "".join(f"{','.join(str(v) for v in np.arange(8) * i / 10)},{i % 3}\n" for i in range(12))
    (tree.inputs / "d.csv").write_bytes("\ufeff".encode() + ("," .join(f"f{i}" for i in range(8)) + ",label\n"
                                                             + rows).encode())
    return ["diagnose", _copy(models, tree, "plain"), "--data", tree.inputs / "d.csv", "--target", "label",
            *_QUICK], None


@case("csv-with-blank-lines-works", code=0)
def _(tree, models):
    rows = "".join(f"{','.join(['0.5'] * 8)},{i % 3}\n\n" for i in range(12))
    (tree.inputs / "d.csv").write_text(",".join(f"f{i}" for i in range(8)) + ",label\n\n" + rows + "\n\n")
    return ["diagnose", _copy(models, tree, "plain"), "--data", tree.inputs / "d.csv", "--target", "label",
            *_QUICK], None


@case("csv-target-not-a-column")
def _(tree, models):
    (tree.inputs / "d.csv").write_text("a,b\n1,2\n")
    return ["diagnose", _copy(models, tree, "plain"), "--data", tree.inputs / "d.csv", "--target", "label",
            *_QUICK], (f"The CSV file '{tree.inputs}/d.csv' has no column 'label' (columns: a, b). Pass --target "
                       "with one of them.")


@case("dataset-that-yields-nothing")
def _(tree, models):
    module = _data_module(tree, """
        def make():
            return tf.data.Dataset.from_tensor_slices((np.zeros((0, 8), "float32"), np.zeros(0, "int32"))).batch(4)
        """)
    return ["diagnose", _copy(models, tree, "plain"), "--data", f"{module}:make", *_QUICK], (
        f"The tf.data.Dataset (function {module}:make) yields no elements. Return a dataset with at least one "
        "batch of (x, y).")


@case("dataset-not-batched")
def _(tree, models):
    module = _data_module(tree, """
        def make():
            return tf.data.Dataset.from_tensor_slices((np.zeros((10, 8), "float32"), np.zeros(10, "int32")))
        """)
    return ["diagnose", _copy(models, tree, "plain"), "--data", f"{module}:make", *_QUICK], (
        f"The tf.data.Dataset (function {module}:make) yields single samples of shape (8,), but the probe trains "
        "on batches. Call .batch(32) on it.")


@case("dataset-wrong-shape")
def _(tree, models):
    module = _data_module(tree, """
        def make():
            return tf.data.Dataset.from_tensor_slices((np.zeros((10, 5), "float32"), np.zeros(10, "int32"))).batch(4)
        """)
    return ["diagnose", _copy(models, tree, "plain"), "--data", f"{module}:make", *_QUICK], (
        f"The tf.data.Dataset (function {module}:make) yields x of shape (None, 5), but the model input 'features' "
        "expects (None, 8). Pass batches whose samples have shape (8,).")


@case("dataset-of-single-elements")
def _(tree, models):
    module = _data_module(tree, """
        def make():
            return tf.data.Dataset.from_tensor_slices(np.zeros((10, 8), "float32")).batch(4)
        """)
    return ["diagnose", _copy(models, tree, "plain"), "--data", f"{module}:make", *_QUICK], (
        f"The tf.data.Dataset (function {module}:make) must yield (x, y) pairs; it yields single elements. Return "
        "tf.data.Dataset.from_tensor_slices((x, y)).batch(32).")


@case("data-function-raises-with-a-huge-message")
def _(tree, models):
    module = _data_module(tree, """
        def make():
            raise RuntimeError("no database " + "x" * 10000)
        """)
    return ["diagnose", _copy(models, tree, "plain"), "--data", f"{module}:make", *_QUICK], (
        f"The data function '{module}:make' raised RuntimeError: no database {'x' * 65}.... Fix the function, or "
        "pass a .npz or .csv file.")


@case("npz-with-an-unused-big-array-works", code=0)
def _(tree, models):
    from hostile import write_npz_with_zeros

    rng = np.random.default_rng(0)
    write_npz_with_zeros(tree.inputs / "d.npz", {"x": rng.normal(size=(16, 8)).astype("float32"),
                                                 "y": rng.integers(0, 3, 16)}, {"junk": 2**27})
    return ["diagnose", _copy(models, tree, "plain"), "--data", tree.inputs / "d.npz", *_QUICK], None


# ============================================================================ models

@case("multi-output-model-with-synthetic-data-works", code=0)
def _(tree, models):
    return ["diagnose", _copy(models, tree, "multi"), *_QUICK], None


@case("names-with-markup-work-and-are-escaped", code=0, kind="warning")
def _(tree, models):
    path = tree.inputs / "<img src=x onerror=alert(1)>.keras"
    shutil.copy2(models / "markup.keras", path)
    return (["diagnose", path, *_QUICK, "--report", tree.out / "r.html"], [str((tree.out / "r.html").relative_to(
        tree.root))], (
        f"The model file '{path}' names layers with characters TensorFlow cannot trace, so they are called "
        "differently here: '<img src=x onerror=alert(1)>' as 'model_img_src_x_onerror_alert_1__'; 'feat<i>' as "
        "'feat_i_'; '<b>hid&amp;<b>' as '_b_hid_amp__b_'; '<script>alert(1)<\\\\script>' as '_script_alert_1___script_'"
        "; 'ou.... The file itself is unchanged."))


@case("custom-class-missing-named-by-its-class")
def _(tree, models):
    path = _copy(models, tree, "custom")
    return ["diagnose", path, *_QUICK], (
        f"The model file '{path}' uses the custom class ScaledDense, which Keras does not know. Pass "
        "--custom-objects MODULE naming the module that defines it.")


@case("debug-accepted-on-diagnose", code=0)
def _(tree, models):
    return ["diagnose", _copy(models, tree, "plain"), "--debug", *_QUICK], None


# ============================================================================ file systems

def _mount(folder, options):
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if result.returncode != 0:
        pytest.skip("not allowed to mount a tmpfs here")


@case("report-onto-a-full-disk")
def _(tree, models):
    import json

    from gradadvisor.api import diagnose

    source = tree.inputs / "d.json"
    source.write_text(json.dumps(diagnose(str(_copy(models, tree, "plain")), steps=2, batch_size=4).to_dict()))
    disk = tree.out / "disk"
    disk.mkdir()
    _mount(disk, "size=16k")
    return ["report", source, "-o", disk / "r.html"], (
        f"Cannot write '{disk}/r.html': No space left on device while writing; nothing was replaced. Free some "
        "space or choose another folder.")


@case("save-fixed-into-a-read-only-file-system")
def _(tree, models):
    disk = tree.out / "ro"
    disk.mkdir()
    _mount(disk, "ro,size=16k")
    return ["diagnose", _copy(models, tree, "plain"), "--save-fixed", disk / "fixed.keras"], (
        f"Cannot write '{disk}/fixed.keras': the folder '{disk}' is not writable. Choose a writable folder.")


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_input_after_loading(name, tmp_path, monkeypatch, models):
    function, code, kind = CASES[name]
    tree = Tree.make(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    try:
        result = function(tree, models)
        args, message = result[0], result[-1]
        writes = result[1] if len(result) == 3 else ()
        out, err = expect(args, tree, monkeypatch, code, message, writes=writes, kind=kind)
        if writes:
            html = (tree.root / writes[0]).read_text()
            assert "<img src=x" not in html and "<script>alert" not in html
            assert "&lt;img src=x onerror=alert(1)&gt;.keras" in html
    finally:
        for mount in (tree.out / "disk", tree.out / "ro"):
            if os.path.ismount(mount):
                subprocess.run(["umount", str(mount)], check=False)


def _signalling_data(tree, signal_name):
    return _data_module(tree, f"""
        import os, signal

        def make():
            os.kill(os.getpid(), signal.{signal_name})
            rng = np.random.default_rng(0)
            return rng.normal(size=(16, 8)).astype("float32"), rng.integers(0, 3, 16)
        """)


def test_sigterm_while_loading_stops_cleanly(tmp_path, monkeypatch, models):
    """A real SIGTERM, sent to this process while the data is loading."""
    tree = Tree.make(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    module = _signalling_data(tree, "SIGTERM")
    expect(["diagnose", _copy(models, tree, "plain"), "--data", f"{module}:make", *_QUICK], tree, monkeypatch,
           143, None)


def test_an_ignored_sighup_stays_ignored(tmp_path, monkeypatch, models):
    """'nohup gradadvisor ...' ignores SIGHUP; gradadvisor must not take that back."""
    import signal

    tree = Tree.make(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    module = _signalling_data(tree, "SIGHUP")
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        expect(["diagnose", _copy(models, tree, "plain"), "--data", f"{module}:make", *_QUICK], tree, monkeypatch,
               0, None)
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)
