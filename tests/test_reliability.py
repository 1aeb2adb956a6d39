"""Every bad input gets one line on stderr, exit code 2, no traceback and no output file;
the input model is never written to."""

import contextlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from gradadvisor.cli import main


@pytest.fixture(scope="module")
def saved(tmp_path_factory, keras_module):
    """A small saved model (8 inputs, 3 classes) and good data next to it."""
    keras = keras_module
    folder = tmp_path_factory.mktemp("saved")
    model = keras.Sequential([keras.Input((8,), name="features"),
                              keras.layers.Dense(8, activation="relu", name="hidden"),
                              keras.layers.Dense(3, activation="softmax", name="out")], name="small")
    model.compile("adam", "sparse_categorical_crossentropy")
    model.save(folder / "model.keras")
    rng = np.random.default_rng(0)
    np.savez(folder / "good.npz", x=rng.normal(size=(40, 8)).astype("float32"), y=rng.integers(0, 3, 40))
    return folder


def _snapshot(folder):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir()) if p.is_file()}


def _run(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _expect_error(args, capsys, message, folder=None):
    before = _snapshot(folder) if folder else None
    code, out, err = _run(args, capsys)
    assert code == 2, (out, err)
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err == f"gradadvisor: error: {message}\n"
    if folder:
        assert _snapshot(folder) == before, "an input file changed or an output appeared"
    return err


def _npz(folder, name, **arrays):
    path = folder / name
    np.savez(path, **arrays)
    return str(path)


# --------------------------------------------------------------------------- models

def test_missing_model_file(tmp_path, capsys):
    _expect_error(["diagnose", str(tmp_path / "nope.keras")], capsys,
                  f"The model file '{tmp_path}/nope.keras' does not exist. Check the path.")


def test_model_file_that_is_not_a_zip(tmp_path, capsys):
    path = tmp_path / "bad.keras"
    path.write_text("this is not a model")
    _expect_error(["diagnose", str(path)], capsys,
                  f"The model file '{path}' is not a valid .keras archive (it is not a zip file); it "
                  "may be truncated or corrupt. Save the model again with model.save().", tmp_path)


def test_truncated_model_file(saved, tmp_path, capsys):
    path = tmp_path / "cut.keras"
    data = (saved / "model.keras").read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _expect_error(["diagnose", str(path)], capsys,
                  f"The model file '{path}' is not a valid .keras archive (it is not a zip file); it "
                  "may be truncated or corrupt. Save the model again with model.save().", tmp_path)


def test_corrupt_model_config(tmp_path, capsys):
    path = tmp_path / "corrupt.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", "{not json")
        archive.writestr("metadata.json", "{}")
    err = _run(["diagnose", str(path)], capsys)
    code, _, message = err
    assert code == 2 and message.startswith(f"gradadvisor: error: The model file '{path}' could not be loaded (")
    assert message.endswith("Check that it was saved by Keras 3 with model.save().\n")


def test_wrong_extension(saved, tmp_path, capsys):
    path = tmp_path / "model.txt"
    path.write_bytes((saved / "model.keras").read_bytes())
    _expect_error(["diagnose", str(path)], capsys,
                  f"The model file '{path}' has the extension '.txt', but a Keras model file ends in "
                  "'.keras' (or the legacy '.h5'). Save it with model.save('model.keras').", tmp_path)


def test_savedmodel_folder_gets_conversion_hint(tmp_path, capsys):
    folder = tmp_path / "exported"
    folder.mkdir()
    (folder / "saved_model.pb").write_bytes(b"")
    _expect_error(["diagnose", str(folder)], capsys,
                  f"'{folder}' is a TensorFlow SavedModel folder, which Keras 3 cannot train. Re-save "
                  "the model from Python with model.save('model.keras').")


def test_model_without_trainable_weights(tmp_path, capsys, keras_module):
    keras = keras_module
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, trainable=False)], name="frozen")
    model.save(tmp_path / "frozen.keras")
    _expect_error(["diagnose", str(tmp_path / "frozen.keras")], capsys,
                  "The model 'frozen' has no trainable weights, so there are no gradients to diagnose. "
                  "Check that its layers are trainable.", tmp_path)


def test_lambda_layer_refused_in_safe_mode_and_loaded_with_opt_in(tmp_path, capsys, keras_module):
    keras = keras_module
    model = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda t: t * 2.0),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.save(tmp_path / "lambda.keras")
    path = tmp_path / "lambda.keras"
    _expect_error(["diagnose", str(path)], capsys,
                  f"The model file '{path}' contains Python code (for example a Lambda layer), which "
                  "could run anything on this machine, so it was not loaded. If you trust the file, "
                  "pass --unsafe-load (Python: unsafe=True).", tmp_path)
    code, out, err = _run(["diagnose", str(path), "--unsafe-load", "--no-search", "--steps", "2", "-q"], capsys)
    assert code in (0, 1), err
    assert "model" in out


def test_legacy_h5_file_loads(tmp_path, capsys, keras_module):
    keras = keras_module
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, activation="relu"),
                              keras.layers.Dense(2, activation="softmax")], name="legacy")
    model.compile("adam", "sparse_categorical_crossentropy")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save(tmp_path / "legacy.h5")
    code, out, err = _run(["diagnose", str(tmp_path / "legacy.h5"), "--no-search", "--steps", "2", "-q"], capsys)
    assert code == 0, err
    assert out.startswith("HEALTHY  Gradients flow normally through legacy")


def test_custom_objects_module(tmp_path, capsys, keras_module, monkeypatch):
    keras = keras_module
    (tmp_path / "mylayers.py").write_text(
        "import keras\n"
        "@keras.saving.register_keras_serializable(package='mylayers')\n"
        "class Twice(keras.layers.Layer):\n"
        "    def call(self, x):\n"
        "        return 2.0 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    mylayers = importlib.import_module("mylayers")
    model = keras.Sequential([keras.Input((4,)), mylayers.Twice(), keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.save(tmp_path / "custom.keras")
    code, out, err = _run(["diagnose", str(tmp_path / "custom.keras"), "--custom-objects", "mylayers",
                           "--no-search", "--steps", "2", "-q"], capsys)
    assert code == 0, err
    _expect_error(["diagnose", str(tmp_path / "custom.keras"), "--custom-objects", "no_such_module_xyz"],
                  capsys, "Cannot import the custom-objects module 'no_such_module_xyz': No module named "
                  "'no_such_module_xyz'. Make sure it is on PYTHONPATH.")


# --------------------------------------------------------------------------- data

@pytest.mark.parametrize("arrays, message", [
    (dict(x=np.zeros((40, 7), "float32"), y=np.zeros(40)),
     "The input 'features' has shape (40, 7), but the model expects (None, 8). Pass data whose samples "
     "have shape (8,)."),
    (dict(x=np.array([["a"] * 8] * 40), y=np.zeros(40)),
     "The input 'features' has dtype <U1, but the model expects numbers (float32). Convert it to a "
     "numeric array."),
    (dict(x=np.zeros((40, 8), "float32"), y=np.zeros(39)),
     "x and y have different numbers of samples (40 vs 39). Pass one target per sample."),
    (dict(x=np.zeros((0, 8), "float32"), y=np.zeros(0)),
     "The input 'features' is empty. Pass at least one sample."),
    (dict(x=np.full((40, 8), np.inf, "float32"), y=np.zeros(40)),
     "The input 'features' holds 320 NaN or infinite value(s). Clean or impute them before diagnosing."),
    (dict(x=np.zeros((40, 8), "float32"), y=np.full(40, 3)),
     "The labels y must be integers from 0 to 2 for sparse_categorical_crossentropy with 3 output units, "
     "but range from 3 to 3. Encode the classes as 0..n-1."),
    (dict(x=np.zeros((40, 8), "float32")),
     "The data file '{path}' has no array 'y' (it has: x). Save the targets as y."),
    (dict(inputs=np.zeros((40, 8), "float32"), y=np.zeros(40)),
     "The data file '{path}' has no array 'x' and no arrays named after the model's inputs (features); it "
     "has: inputs, y. Save the inputs as x, or one array per input name."),
])
def test_bad_data_files(saved, tmp_path, capsys, arrays, message):
    path = _npz(tmp_path, "data.npz", **arrays)
    _expect_error(["diagnose", str(saved / "model.keras"), "--data", path, "--no-search"], capsys,
                  message.format(path=path), saved)


def test_data_named_by_input(saved, tmp_path, capsys):
    rng = np.random.default_rng(1)
    path = _npz(tmp_path, "named.npz", features=rng.normal(size=(40, 8)).astype("float32"),
                y=rng.integers(0, 3, 40))
    code, out, err = _run(["diagnose", str(saved / "model.keras"), "--data", path, "--no-search",
                           "--steps", "2", "-q", "--format", "json", "--fail-on", "never"], capsys)
    assert code == 0, err
    assert f'"data_source": "file {path}"' in out


def test_csv_data_errors_and_success(saved, tmp_path, capsys):
    path = tmp_path / "train.csv"
    rng = np.random.default_rng(2)
    rows = ["a,b,c,d,e,f,g,h,label"] + [",".join([f"{v:.3f}" for v in rng.normal(size=8)] + [str(i % 3)])
                                         for i in range(40)]
    path.write_text("\n".join(rows) + "\n")
    model = str(saved / "model.keras")
    _expect_error(["diagnose", model, "--data", str(path)], capsys,
                  f"The CSV file '{path}' needs a label column. Pass --target COLUMN.")
    _expect_error(["diagnose", model, "--data", str(path), "--target", "class"], capsys,
                  f"The CSV file '{path}' has no column 'class' (columns: a, b, c, d, e, f, g, h, label). "
                  "Pass --target with one of them.")
    code, out, err = _run(["diagnose", model, "--data", str(path), "--target", "label", "--no-search",
                           "--steps", "2", "-q", "--fail-on", "never"], capsys)
    assert code == 0, err
    assert f"file {path} (target column 'label')" in out


def test_wrong_data_extension_and_missing_function(saved, tmp_path, capsys):
    model = str(saved / "model.keras")
    (tmp_path / "data.parquet").write_bytes(b"x")
    _expect_error(["diagnose", model, "--data", str(tmp_path / "data.parquet")], capsys,
                  f"The data file '{tmp_path}/data.parquet' has the extension '.parquet', but data must be a "
                  ".npz file, a .csv file or a module:function.")
    _expect_error(["diagnose", model, "--data", "no_such_mod_abc:load"], capsys,
                  "Cannot load the data function 'no_such_mod_abc:load' (No module named 'no_such_mod_abc'). "
                  "Pass module:function with the module on PYTHONPATH.")


@pytest.mark.parametrize("args, message", [
    (["--steps", "0"], "Invalid value for '--steps': 0 is not in the range 1<=x<=100000."),
    (["--steps", "-3"], "Invalid value for '--steps': -3 is not in the range 1<=x<=100000."),
    (["--batch-size", "0"], "Invalid value for '--batch-size': 0 is not in the range x>=1."),
    (["--batch-size", "41"], "The batch size 41 is larger than the data (40 samples). Pass --batch-size 40 or less."),
    (["--steps", "many"], "Invalid value for '--steps': 'many' is not a valid integer range."),
])
def test_bad_steps_and_batch_size(saved, capsys, args, message):
    _expect_error(["diagnose", str(saved / "model.keras"), "--data", str(saved / "good.npz"), "--no-search"]
                  + args, capsys, message, saved)


# --------------------------------------------------------------------------- outputs

def test_report_into_missing_folder(saved, capsys):
    _expect_error(["diagnose", str(saved / "model.keras"), "--report", str(saved / "no" / "r.html")], capsys,
                  f"Cannot write '{saved}/no/r.html': the folder '{saved}/no' does not exist. Create it first.",
                  saved)


def test_existing_output_is_refused_without_force(saved, tmp_path, capsys):
    report = tmp_path / "r.html"
    report.write_text("precious")
    _expect_error(["diagnose", str(saved / "model.keras"), "--report", str(report)], capsys,
                  f"The file '{report}' already exists. Pass --force to replace it, or choose another name.",
                  tmp_path)
    assert report.read_text() == "precious"


@contextlib.contextmanager
def _read_only_folder(base):
    """A real read-only file system (root ignores chmod), or skip where mounting is not allowed."""
    folder = base / "ro"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                             capture_output=True).returncode == 0
    if not mounted:
        os.chmod(folder, 0o555)
        if os.access(folder, os.W_OK) and os.geteuid() == 0:
            pytest.skip("cannot make a read-only folder here: not allowed to mount, and root ignores chmod")
    try:
        yield folder
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=False)
        else:
            os.chmod(folder, 0o755)


def test_output_into_read_only_folder(saved, tmp_path, capsys):
    with _read_only_folder(tmp_path) as folder:
        _expect_error(["diagnose", str(saved / "model.keras"), "--report", str(folder / "r.html")], capsys,
                      f"Cannot write '{folder}/r.html': the folder '{folder}' is not writable. Choose a "
                      "writable folder.", saved)


def test_report_with_wrong_extension(saved, capsys):
    _expect_error(["diagnose", str(saved / "model.keras"), "--report", str(saved / "r.pdf")], capsys,
                  f"The output file '{saved}/r.pdf' must end in '.html'. Name a file like 'r.html'.", saved)


# --------------------------------------------------------------------------- rules

def test_malformed_rule_folder(saved, tmp_path, capsys):
    (tmp_path / "GA900-x.yaml").write_text("id: GA900\nname: x\n")
    _expect_error(["diagnose", str(saved / "model.keras"), "--rules", str(tmp_path)], capsys,
                  f"{tmp_path}/GA900-x.yaml:1: rule GA900: missing field 'category'.", saved)


def test_missing_rule_folder(saved, tmp_path, capsys):
    _expect_error(["diagnose", str(saved / "model.keras"), "--rules", str(tmp_path / "none")], capsys,
                  f"The rules folder '{tmp_path}/none' does not exist. Pass a folder of .yaml rule files.")


@pytest.mark.parametrize("option", ["--select", "--ignore"])
def test_unknown_rule_id(saved, capsys, option):
    err = _expect_error(["diagnose", str(saved / "model.keras"), option, "GA101,XX123"], capsys,
                        f"{option} names the unknown rule id 'XX123'. Known ids: GA101, GA102, GA201, GA202, "
                        "GA203, GA301, GA401, GA402, GA403, GA404, GA501, GA502, GA601, GA602, GA701, GA702, GA703, GA704, GA705, GA706, GA707.", saved)


def test_report_from_bad_json(tmp_path, capsys):
    bad = tmp_path / "d.json"
    bad.write_text("{}")
    _expect_error(["report", str(bad), "-o", str(tmp_path / "r.html")], capsys,
                  f"The diagnosis file '{bad}' is not a gradadvisor diagnosis (expected schema 'gradadvisor.diagnosis/1'). Pass the "
                  "JSON written by 'gradadvisor diagnose --format json'.", tmp_path)
    bad.write_text("{nope")
    code, _, err = _run(["report", str(bad), "-o", str(tmp_path / "r.html")], capsys)
    assert code == 2 and err.startswith(f"gradadvisor: error: The diagnosis file '{bad}' is not valid JSON (")


# --------------------------------------------------------------------------- behaviour

def test_error_paths_do_not_import_tensorflow(tmp_path):
    code = ("import sys; from gradadvisor.cli import main;"
            f"rc = main(['diagnose', {str(tmp_path / 'missing.keras')!r}]);"
            "print(rc, 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert out.strip() == "2 False"


def test_debug_shows_the_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "gradadvisor", "--debug", "diagnose",
                             str(tmp_path / "missing.keras")], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "Traceback" in result.stderr and "ModelLoadError" in result.stderr


def test_input_model_unchanged_by_successful_commands(saved, tmp_path, capsys):
    before = _snapshot(saved)
    code, _, err = _run(["diagnose", str(saved / "model.keras"), "--data", str(saved / "good.npz"),
                         "--no-search", "--steps", "3", "--format", "json", "-q"], capsys)
    assert code == 0, err
    assert _snapshot(saved) == before
