"""Hostile inputs answered before TensorFlow loads: one parametrised test over a table of cases.

Each case builds real files in ``in/`` and returns the command line and the
whole message it owes; :func:`hostile.expect` checks the exit code, the one
line, no traceback, and that nothing under the case's folder (inputs, the
output folder, ``$TMPDIR``) appeared, changed or vanished.  The cases that
need TensorFlow are in ``test_hostile_tf.py``; signals, memory limits and
child processes in ``test_hostile_process.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile

import numpy as np
import pytest

from hostile import Tree, case_registry, expect, npy_bytes, write_npz_with_zeros

CASES, case = case_registry()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, keras_module):
    """A tiny saved model whose gradients vanish (so a search would run): 8 inputs, 3 classes."""
    keras = keras_module
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,), name="features")] + [
        keras.layers.Dense(8, activation="sigmoid", name=f"d{i}") for i in range(4)
    ] + [keras.layers.Dense(3, activation="softmax", name="out")], name="tiny")
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    path = tmp_path_factory.mktemp("hostile-model") / "model.keras"
    model.save(path)
    return path


def _good_npz(tree, name="data.npz"):
    rng = np.random.default_rng(0)
    path = tree.inputs / name
    np.savez(path, x=rng.normal(size=(40, 8)).astype("float32"), y=rng.integers(0, 3, 40))
    return path


def _json_diagnosis(tree, mutate=None, name="d.json"):
    document = json.loads((_DIAGNOSIS).read_text())
    if mutate:
        mutate(document)
    path = tree.inputs / name
    path.write_text(json.dumps(document))
    return path


_DIAGNOSIS = None  # set by the fixture below: a real diagnosis, written once per module


@pytest.fixture(scope="module", autouse=True)
def real_diagnosis(tmp_path_factory, model_file):
    """A real ``diagnose --format json`` document of the tiny model, for the report cases."""
    global _DIAGNOSIS
    from gradadvisor.api import diagnose

    document = diagnose(str(model_file), steps=3, batch_size=8).to_json()
    _DIAGNOSIS = tmp_path_factory.mktemp("hostile-diagnosis") / "diagnosis.json"
    _DIAGNOSIS.write_text(document)
    return _DIAGNOSIS


def _rules(tree, text, name="rule.yaml"):
    folder = tree.inputs / "rules"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(text) if isinstance(text, str) else (folder / name).write_bytes(text)
    return folder


# ============================================================================ model paths

@case("model-missing")
def _(tree):
    return ["diagnose", tree.inputs / "nope.keras"], f"The model file '{tree.inputs}/nope.keras' does not exist. Check the path."


@case("model-is-folder")
def _(tree):
    (tree.inputs / "m.keras").mkdir()
    return ["diagnose", tree.inputs / "m.keras"], f"'{tree.inputs}/m.keras' is a folder, not a model file. Pass a .keras file."


@case("model-savedmodel-folder")
def _(tree):
    (tree.inputs / "sm").mkdir()
    (tree.inputs / "sm" / "saved_model.pb").write_bytes(b"\x08\x01")
    return ["diagnose", tree.inputs / "sm"], (
        f"'{tree.inputs}/sm' is a TensorFlow SavedModel folder, which Keras 3 cannot train. Re-save the model from "
        "Python with model.save('model.keras').")


@case("model-empty-file")
def _(tree):
    (tree.inputs / "m.keras").write_bytes(b"")
    return ["diagnose", tree.inputs / "m.keras"], (
        f"The model file '{tree.inputs}/m.keras' is not a valid .keras archive (it is not a zip file); it may be "
        "truncated or corrupt. Save the model again with model.save().")


@case("model-zip-without-config")
def _(tree):
    with zipfile.ZipFile(tree.inputs / "m.keras", "w") as archive:
        archive.writestr("metadata.json", "{}")
    return ["diagnose", tree.inputs / "m.keras"], (
        f"The model file '{tree.inputs}/m.keras' is corrupt or incomplete (no readable config.json). Save the "
        "model again with model.save().")


@case("model-wrong-extension")
def _(tree):
    (tree.inputs / "m.pt").write_bytes(b"PK")
    return ["diagnose", tree.inputs / "m.pt"], (
        f"The model file '{tree.inputs}/m.pt' has the extension '.pt', but a Keras model file ends in '.keras' "
        "(or the legacy '.h5'). Save it with model.save('model.keras').")


@case("model-name-with-newline-and-escape")
def _(tree):
    return ["diagnose", tree.inputs / "a\nb\x1b[2J.keras"], (
        f"The model file '{tree.inputs}/a b\\x1b[2J.keras' does not exist. Check the path.")


@case("model-and-example")
def _(tree):
    return ["diagnose", tree.inputs / "m.keras", "--example", "deep-sigmoid"], (
        "Pass either a MODEL file or --example NAME (not both).")


@case("model-nor-example")
def _(tree):
    return ["diagnose"], "Pass either a MODEL file or --example NAME (not both)."


@case("unknown-example")
def _(tree):
    return ["diagnose", "--example", "nope"], (
        "There is no example called 'nope'. Choose one of: deep-sigmoid, tiny-tanh, large-init-relu, healthy-relu, "
        "high-lr-relu, dying-relu, long-rnn, cnn-batchnorm.")


# ============================================================================ options

@case("seed-negative")
def _(tree):
    return ["diagnose", "--example", "deep-sigmoid", "--seed", "-1"], (
        "Invalid value for '--seed': -1 is not in the range 0<=x<=4294967295.")


@case("seed-too-large")
def _(tree):
    return ["diagnose", "--example", "deep-sigmoid", "--seed", str(2**32)], (
        "Invalid value for '--seed': 4294967296 is not in the range 0<=x<=4294967295.")


@case("steps-zero")
def _(tree):
    return ["diagnose", "--example", "deep-sigmoid", "--steps", "0"], (
        "Invalid value for '--steps': 0 is not in the range 1<=x<=100000.")


@case("batch-size-word")
def _(tree):
    return ["diagnose", "--example", "deep-sigmoid", "--batch-size", "lots"], (
        "Invalid value for '--batch-size': 'lots' is not a valid integer range.")


@case("huge-option-value-is-cut")
def _(tree):
    value = "x" * 100_000
    message = f"Invalid value for '--steps': '{value}' is not a valid integer range."
    return ["diagnose", "--example", "deep-sigmoid", "--steps", value], message[:300] + " ... " + message[-300:]


@case("oracle-address-without-distributed")
def _(tree):
    return ["diagnose", "--example", "deep-sigmoid", "--oracle-address", "localhost:1"], (
        "--oracle-address only applies to a distributed search. Add --distributed chief or --distributed worker.")


@case("distributed-without-tuner-dir")
def _(tree):
    return ["diagnose", "--example", "deep-sigmoid", "--distributed", "worker"], (
        "--distributed worker needs --tuner-dir DIR, a folder shared by the chief and every worker (for example on "
        "NFS).")


# ============================================================================ data paths

@case("data-missing")
def _(tree, model):
    return ["diagnose", model, "--data", tree.inputs / "d.npz"], f"The data file '{tree.inputs}/d.npz' does not exist. Check the path."


@case("data-is-folder")
def _(tree, model):
    (tree.inputs / "d").mkdir()
    return ["diagnose", model, "--data", tree.inputs / "d"], (
        f"The data path '{tree.inputs}/d' is a folder. Pass a .npz or .csv file (or module:function).")


@case("data-folder-named-npz")
def _(tree, model):
    (tree.inputs / "d.npz").mkdir()
    return ["diagnose", model, "--data", tree.inputs / "d.npz"], (
        f"The data path '{tree.inputs}/d.npz' is a folder. Pass a .npz or .csv file (or module:function).")


@case("data-wrong-extension")
def _(tree, model):
    (tree.inputs / "d.parquet").write_bytes(b"PAR1")
    return ["diagnose", model, "--data", tree.inputs / "d.parquet"], (
        f"The data file '{tree.inputs}/d.parquet' has the extension '.parquet', but data must be a .npz file, a .csv "
        "file or a module:function.")


@case("data-with-example")
def _(tree, model):
    path = _good_npz(tree)
    return ["diagnose", "--example", "deep-sigmoid", "--data", path], (
        "--data cannot be combined with --example: the example brings its own data.")


@case("npz-not-a-zip")
def _(tree, model):
    np.save(tree.inputs / "d.npy", np.zeros(3))
    os.rename(tree.inputs / "d.npy", tree.inputs / "d.npz")
    return ["diagnose", model, "--data", tree.inputs / "d.npz"], (
        f"The data file '{tree.inputs}/d.npz' is not a readable .npz archive (File is not a zip file). Write it with "
        "numpy.savez(path, x=..., y=...).")


@case("npz-without-y")
def _(tree, model):
    np.savez(tree.inputs / "d.npz", x=np.zeros((4, 8)), labels=np.zeros(4))
    return ["diagnose", model, "--data", tree.inputs / "d.npz"], (
        f"The data file '{tree.inputs}/d.npz' has no array 'y' (it has: x, labels). Save the targets as y.")


@case("npz-object-array")
def _(tree, model):
    with zipfile.ZipFile(tree.inputs / "d.npz", "w") as archive:
        archive.writestr("x.npy", npy_bytes(np.array([{"a": 1}, None], dtype=object)))
        archive.writestr("y.npy", npy_bytes(np.zeros(2)))
    return ["diagnose", model, "--data", tree.inputs / "d.npz"], (
        f"The data file '{tree.inputs}/d.npz' has an array 'x' of Python objects, which is not loaded (it could run "
        "code). Save numeric arrays.")


@case("npz-header-claims-more-than-it-holds")
def _(tree, model):
    good = npy_bytes(np.zeros((4, 8), "float32"))
    end = good.index(b"\n") + 1
    header = good[:end].replace(b"(4, 8)", b"(400000000, 8)")
    header = header.replace(b" " * (len(header) - end) + b"\n", b"\n")  # keep the header's padded length
    with zipfile.ZipFile(tree.inputs / "d.npz", "w") as archive:
        archive.writestr("x.npy", header + good[end:])
        archive.writestr("y.npy", npy_bytes(np.zeros(4)))
    return ["diagnose", model, "--data", tree.inputs / "d.npz"], (
        f"The data file '{tree.inputs}/d.npz' has an array 'x' whose header declares shape (400000000, 8) "
        "(12800000000 bytes) but which holds only 128 bytes; the file is corrupt. Write it again with "
        "numpy.savez(path, x=..., y=...).")


@case("npz-bomb-as-x")
def _(tree, model):
    write_npz_with_zeros(tree.inputs / "d.npz", {"y": np.zeros(4, "int64")}, {"x": 2**30})
    return ["diagnose", model, "--data", tree.inputs / "d.npz"], (
        f"The data file '{tree.inputs}/d.npz' has an array 'x' that would expand from 1.0 MiB to 1024 MiB (more than "
        "100x), so it was not read. Save plain data with numpy.savez(path, x=..., y=...).")


@case("npz-truncated")
def _(tree, model):
    good = _good_npz(tree, "full.npz").read_bytes()
    (tree.inputs / "full.npz").unlink()
    (tree.inputs / "d.npz").write_bytes(good[: len(good) // 2])
    return ["diagnose", model, "--data", tree.inputs / "d.npz"], (
        f"The data file '{tree.inputs}/d.npz' is not a readable .npz archive (File is not a zip file). Write it with "
        "numpy.savez(path, x=..., y=...).")


@case("csv-latin-1")
def _(tree, model):
    (tree.inputs / "d.csv").write_bytes("caf\xe9,label\n1,0\n".encode("latin-1"))
    return ["diagnose", model, "--data", tree.inputs / "d.csv", "--target", "label"], (
        f"The CSV file '{tree.inputs}/d.csv' is not UTF-8 text (byte 0xe9 at offset 3). Save it as UTF-8 (Excel: "
        "'CSV UTF-8').")


@case("csv-ragged-row")
def _(tree, model):
    (tree.inputs / "d.csv").write_text("a,b,label\n1,2,0\n1,2\n")
    return ["diagnose", model, "--data", tree.inputs / "d.csv", "--target", "label"], (
        f"The CSV file '{tree.inputs}/d.csv' has a row with 2 value(s) where the header has 3 (data row 2). Give "
        "every row one value per column.")


@case("csv-nul-byte")
def _(tree, model):
    (tree.inputs / "d.csv").write_bytes(b"a,label\n1\x00,0\n")
    return ["diagnose", model, "--data", tree.inputs / "d.csv", "--target", "label"], (
        f"The CSV file '{tree.inputs}/d.csv' has a value that is not a number (could not convert string to float: "
        "'1\\x00'). Encode every column as numbers.")


@case("csv-header-only")
def _(tree, model):
    (tree.inputs / "d.csv").write_text("a,label\n\n\n")
    return ["diagnose", model, "--data", tree.inputs / "d.csv", "--target", "label"], (
        f"The CSV file '{tree.inputs}/d.csv' has no data rows. Pass a file with a header and rows.")


@case("csv-empty-file")
def _(tree, model):
    (tree.inputs / "d.csv").write_text("")
    return ["diagnose", model, "--data", tree.inputs / "d.csv", "--target", "label"], (
        f"The CSV file '{tree.inputs}/d.csv' has no data rows. Pass a file with a header and rows.")


# ============================================================================ outputs that are inputs

@case("save-fixed-is-the-model")
def _(tree, model):
    return ["diagnose", model, "--save-fixed", model, "--force"], (
        f"The output '{model}' is the input file '{model}'; gradadvisor never writes over its inputs, even with "
        "--force. Choose another output name.")


@case("save-fixed-is-a-link-to-the-model")
def _(tree, model):
    os.symlink(model, tree.out / "link.keras")
    return ["diagnose", model, "--save-fixed", tree.out / "link.keras", "--force"], (
        f"The output '{tree.out}/link.keras' is the input file '{model}'; gradadvisor never writes over its inputs, "
        "even with --force. Choose another output name.")


@case("save-fixed-is-a-hard-link-to-the-model")
def _(tree, model):
    os.link(model, tree.out / "copy.keras")
    return ["diagnose", model, "--save-fixed", tree.out / "copy.keras", "--force"], (
        f"The output '{tree.out}/copy.keras' is the input file '{model}'; gradadvisor never writes over its inputs, "
        "even with --force. Choose another output name.")


@case("save-fixed-through-dotdot")
def _(tree, model):
    (tree.out / "sub").mkdir()
    sneaky = tree.out / "sub" / ".." / ".." / "in" / "model.keras"
    return ["diagnose", model, "--save-fixed", sneaky, "--force"], (
        f"The output '{sneaky}' is the input file '{model}'; gradadvisor never writes over its inputs, even with "
        "--force. Choose another output name.")


@case("report-is-a-hard-link-to-the-data")
def _(tree, model):
    data = _good_npz(tree)
    os.link(data, tree.out / "r.html")
    return ["diagnose", model, "--data", data, "--report", tree.out / "r.html", "--force"], (
        f"The output '{tree.out}/r.html' is the input file '{data}'; gradadvisor never writes over its inputs, even "
        "with --force. Choose another output name.")


@case("report-command-output-is-its-input")
def _(tree):
    source = _json_diagnosis(tree, name="d.html")
    return ["report", source, "-o", source, "--force"], (
        f"The output '{source}' is the input file '{source}'; gradadvisor never writes over its inputs, even with "
        "--force. Choose another output name.")


@case("report-exists-without-force")
def _(tree, model):
    (tree.out / "r.html").write_text("mine")
    return ["diagnose", model, "--report", tree.out / "r.html"], (
        f"The file '{tree.out}/r.html' already exists. Pass --force to replace it, or choose another name.")


@case("report-is-a-folder")
def _(tree, model):
    (tree.out / "r.html").mkdir()
    return ["diagnose", model, "--report", tree.out / "r.html"], (
        f"Cannot write '{tree.out}/r.html': it is a folder. Name a file instead.")


@case("report-in-missing-folder")
def _(tree, model):
    return ["diagnose", model, "--report", tree.out / "no" / "r.html"], (
        f"Cannot write '{tree.out}/no/r.html': the folder '{tree.out}/no' does not exist. Create it first.")


@case("save-fixed-wrong-extension")
def _(tree, model):
    return ["diagnose", model, "--save-fixed", tree.out / "fixed.h5"], (
        f"The output file '{tree.out}/fixed.h5' must end in '.keras'. Name a file like 'fixed.keras'.")


@case("examples-save-over-existing")
def _(tree):
    (tree.out / "deep-sigmoid.npz").write_text("mine")
    return ["examples", "save", "deep-sigmoid", tree.out], (
        f"The file '{tree.out}/deep-sigmoid.npz' already exists. Pass --force to replace it, or choose another name.")


# ============================================================================ the tuner folder

@case("tuner-dir-holds-a-users-search-folder")
def _(tree, model):
    (tree.out / "proj" / "search").mkdir(parents=True)
    (tree.out / "proj" / "search" / "keep.py").write_text("print('mine')\n")
    return ["diagnose", model, "--tuner-dir", tree.out / "proj"], (
        f"The search would replace the folder '{tree.out}/proj/search', which holds files it did not write. Choose "
        "an empty --tuner-dir, or remove that folder yourself.")


@case("tuner-dir-search-is-a-file")
def _(tree, model):
    (tree.out / "proj").mkdir()
    (tree.out / "proj" / "search").write_text("mine")
    return ["diagnose", model, "--tuner-dir", tree.out / "proj"], (
        f"The search would replace '{tree.out}/proj/search', which is not a folder it created. Choose another "
        "--tuner-dir, or remove it yourself.")


@case("tuner-dir-search-is-a-link")
def _(tree, model):
    (tree.out / "proj").mkdir()
    os.symlink(tree.inputs, tree.out / "proj" / "search")
    return ["diagnose", model, "--tuner-dir", tree.out / "proj"], (
        f"The search would replace '{tree.out}/proj/search', which is not a folder it created. Choose another "
        "--tuner-dir, or remove it yourself.")


@case("tuner-dir-is-a-file")
def _(tree, model):
    (tree.out / "proj").write_text("mine")
    return ["diagnose", model, "--tuner-dir", tree.out / "proj"], f"--tuner-dir '{tree.out}/proj' is a file. Name a folder."


@case("distributed-chief-on-a-users-folder")
def _(tree, model):
    (tree.out / "shared" / "search").mkdir(parents=True)
    (tree.out / "shared" / "search" / "notes.txt").write_text("mine")
    return ["diagnose", model, "--distributed", "chief", "--oracle-address", f"127.0.0.1:{_free_port()}", "--tuner-dir",
            tree.out / "shared"], (
        f"The search would replace the folder '{tree.out}/shared/search', which holds files it did not write. "
        "Choose an empty --tuner-dir, or remove that folder yourself.")


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ============================================================================ rule files

@case("rules-billion-laughs")
def _(tree, model):
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    folder = _rules(tree, "\n".join(lines) + "\n")
    return ["rules", "list", "--rules", folder], (
        f"{folder}/rule.yaml:1: the rule file uses a YAML anchor or alias (& or *), which rule files may not use. "
        "Write each value out in full.")


@case("rules-deep-nesting")
def _(tree, model):
    folder = _rules(tree, "when: " + "[" * 5000 + "]" * 5000 + "\n")
    return ["rules", "list", "--rules", folder], (
        f"{folder}/rule.yaml:1: the rule file nests deeper than 32 levels. Flatten the condition.")


@case("rules-number-as-field-name")
def _(tree, model):
    folder = _rules(tree, "id: GA900\n7: seven\n")
    return ["rules", "list", "--rules", folder], (
        f"{folder}/rule.yaml:1: the rule file has the field name 7, which is not text. Name every field with a "
        "word (id, name, when, ...).")


@case("rules-huge-file")
def _(tree, model):
    folder = _rules(tree, "id: GA900\nsummary: " + "x" * 300_000 + "\n")
    return ["rules", "list", "--rules", folder], (
        f"{folder}/rule.yaml: the rule file is 300020 bytes; a rule file holds at most 262144 bytes. Split it into "
        "one file per rule.")


@case("rules-latin-1")
def _(tree, model):
    folder = _rules(tree, "id: GA900\nsummary: caf\xe9\n".encode("latin-1"))
    return ["rules", "list", "--rules", folder], (
        f"{folder}/rule.yaml: cannot read the rule file ('utf-8' codec can't decode byte 0xe9 in position 22: "
        "invalid continuation byte). Save it as UTF-8 text.")


@case("rules-long-unknown-field-is-cut")
def _(tree, model):
    folder = _rules(tree, "id: GA900\n" + "z" * 1000 + ": 1\n")
    return ["rules", "list", "--rules", folder], (
        f"{folder}/rule.yaml:2: rule GA900: unknown field '{'z' * 37}...'. Allowed fields: id, name, category, "
        "severity, scope, summary, rationale, when, message, fixes, examples, causes, locate, explain.")


def _builtin_rule_changed(tree, old, new):
    from gradadvisor.analysis.engine import builtin_rules_dir

    text = next(builtin_rules_dir().glob("GA101-*.yaml")).read_text()
    assert old in text
    return _rules(tree, text.replace(old, new, 1), name="GA101.yaml")


@case("rules-signal-as-a-list")
def _(tree):
    folder = _builtin_rule_changed(tree, "signal: grad_rms_ratio_to_output, op", "signal: [x, y], op")
    return ["rules", "list", "--rules", folder], (
        f"{folder}/GA101.yaml:28: rule GA101: the signal must be one name; got a list. Run 'gradadvisor rules "
        "signals' for the names.")


@case("rules-operator-as-a-mapping")
def _(tree):
    folder = _builtin_rule_changed(tree, 'op: "<", value: 1.0e-3', "op: {a: 1}, value: 1.0e-3")
    return ["rules", "list", "--rules", folder], (
        f"{folder}/GA101.yaml:28: rule GA101: the operator must be one of <, <=, >, >=, ==, !=; got a dict.")


@case("rules-example-value-a-word")
def _(tree):
    folder = _builtin_rule_changed(tree, "grad_rms_ratio_to_output: 1.0e-8,", "grad_rms_ratio_to_output: lots,")
    return ["rules", "list", "--rules", folder], (
        f"{folder}/GA101.yaml:43: rule GA101: example value for 'grad_rms_ratio_to_output' must be a number or "
        "null; got 'lots'.")


@case("rules-missing-folder")
def _(tree, model):
    return ["rules", "list", "--rules", tree.inputs / "nope"], (
        f"The rules folder '{tree.inputs}/nope' does not exist. Pass a folder of .yaml rule files.")


@case("rules-empty-folder")
def _(tree, model):
    (tree.inputs / "rules").mkdir()
    return ["diagnose", model, "--rules", tree.inputs / "rules"], (
        f"The rules folder '{tree.inputs}/rules' holds no .yaml rule files.")


# ============================================================================ diagnosis JSON for `report`

def _report_case(name, mutate, message_tail, text=None):
    @case(f"report-json-{name}")
    def _(tree):
        if text is not None:
            source = tree.inputs / "d.json"
            source.write_bytes(text) if isinstance(text, bytes) else source.write_text(text)
        else:
            source = _json_diagnosis(tree, mutate)
        return ["report", source, "-o", tree.out / "r.html"], f"The diagnosis file '{source}' {message_tail}"


_PASS = "Pass the JSON written by 'gradadvisor diagnose --format json', unedited."
_report_case("model-as-string", lambda d: d.update(model="tiny"),
             f"does not follow the schema gradadvisor.diagnosis/1: at model, 'tiny' is not of type 'object'. {_PASS}")
_report_case("findings-as-numbers", lambda d: d.update(findings=[1, 2]),
             f"does not follow the schema gradadvisor.diagnosis/1: at findings/1, 2 is not of type 'object'. {_PASS}")
_FINDING = {"rule": "GA101", "name": "vanishing-gradients", "category": "gremlins", "severity": "error",
            "layers": ["d0"], "message": "Gradients vanish.", "evidence": {}, "causes": [], "fixes": []}
_report_case("unknown-category", lambda d: d.update(findings=[_FINDING]),
             "does not follow the schema gradadvisor.diagnosis/1: at findings/0/category, 'gremlins' is not one of "
             "['vanishing_gradients', 'exploding_gradients', 'nonfinite', 'dead_units', 'saturated_units', "
             f"'slow_updates', 'large_updates', 'no_le.... {_PASS}")
_report_case("numbers-as-words", lambda d: d["probe"].update(batch_size="eight"),
             f"does not follow the schema gradadvisor.diagnosis/1: at probe/batch_size, 'eight' is not of type "
             f"'integer'. {_PASS}")
_report_case("layer-name-a-number", lambda d: d["layers"][0].update(name=5),
             f"does not follow the schema gradadvisor.diagnosis/1: at layers/0/name, 5 is not of type 'string'. {_PASS}")
_report_case("loss-as-words", lambda d: d["probe"].update(loss=["low"]),
             "does not follow the schema gradadvisor.diagnosis/1: at probe/loss/0, 'low' is not valid under any of "
             f"the given schemas. {_PASS}")
_report_case("deep-nesting", None, "nests too deeply to be a diagnosis. Pass the output of 'gradadvisor diagnose "
             "--format json'.", text="[" * 100_000 + "]" * 100_000)
_report_case("not-json", None, "is not valid JSON (Expecting value: line 1 column 1 (char 0)). Pass the output of "
             "'gradadvisor diagnose --format json'.", text="")
_report_case("latin-1", None, "is not valid JSON ('utf-8' codec can't decode byte 0xe9 in position 2: invalid "
             "continuation byte). Pass the output of 'gradadvisor diagnose --format json'.", text=b'{"\xe9": 1}')
_report_case("a-list", None, "is not a gradadvisor diagnosis (expected schema 'gradadvisor.diagnosis/1'). Pass the "
             "JSON written by 'gradadvisor diagnose --format json'.", text="[1, 2]")


@case("report-json-with-fields-a-newer-version-added-works", code=0)
def _(tree):
    source = _json_diagnosis(tree, lambda d: (d["probe"].update(future=1), d["probe"]["layers"][0].update(future=2)))
    return ["report", source, "-o", tree.out / "r.html"], None, ["out/r.html"]


@case("report-json-is-a-folder")
def _(tree):
    (tree.inputs / "d.json").mkdir()
    return ["report", tree.inputs / "d.json", "-o", tree.out / "r.html"], (
        f"Invalid value for 'DIAGNOSIS_JSON': File '{tree.inputs}/d.json' is a directory.")


# ============================================================================ the runner

def _uses_model(function):
    return function.__code__.co_argcount == 2


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_input(name, tmp_path, monkeypatch, model_file):
    function, code, kind = CASES[name]
    tree = Tree.make(tmp_path)
    if _uses_model(function):
        model = tree.inputs / "model.keras"
        shutil.copy2(model_file, model)
        result = function(tree, model)
    else:
        result = function(tree)
    args, message, writes = result[0], result[1], (result[2] if len(result) > 2 else ())
    expect(args, tree, monkeypatch, code, message, kind=kind, writes=writes)


# ============================================================================ beyond the table

@pytest.mark.parametrize("args", [["rules", "list"], ["rules", "signals"], ["rules", "explain", "GA101"],
                                  ["examples"]])
def test_debug_is_accepted_by_every_command(args, tmp_path, monkeypatch):
    tree = Tree.make(tmp_path)
    expect([*args, "--debug"], tree, monkeypatch, 0, None)


def test_debug_shows_the_traceback_of_a_refused_input(tmp_path, monkeypatch):
    from gradadvisor.errors import UsageError
    from hostile import run_cli

    with pytest.raises(UsageError, match="There is no rule 'GA999'"):
        run_cli(["rules", "explain", "GA999", "--debug"], Tree.make(tmp_path), monkeypatch)


def test_atomic_write_flushes_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    """A crash can only leave the old file or the new one if the data is on disk before the
    rename and the rename is on disk before we return; this records the order of the real calls."""
    from gradadvisor.files import write_text_atomic

    calls = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(handle):
        calls.append(("fsync", os.path.realpath(f"/proc/self/fd/{handle}")))
        real_fsync(handle)

    def replace(source, target):
        calls.append(("replace", str(target)))
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "r.html"
    target.write_text("old")
    write_text_atomic(target, "new")
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]
    assert [kind for kind, _ in calls] == ["fsync", "replace", "fsync"]
    assert calls[0][1].startswith(str(tmp_path / ".r.")) and calls[2][1] == str(tmp_path)
