"""The command line: fast help, examples, diagnose, rules, exit codes, one-line errors."""

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from gradadvisor.cli import main, main_group
from gradadvisor.examples import EXAMPLES


def run(args, **kwargs):
    """Run the CLI in-process the way the console script does: (exit code, stdout, stderr)."""
    runner = CliRunner()
    result = runner.invoke(main_group, args, standalone_mode=False, catch_exceptions=True, **kwargs)
    return result


def run_main(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_help_does_not_import_tensorflow_and_is_fast():
    code = ("import sys, time; t = time.perf_counter(); from gradadvisor.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('TF', any(m == 'tensorflow' or m.startswith('tensorflow.') or m == 'keras' for m in sys.modules));"
            "print('T', time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "TF False" in out
    assert float(out.split("T ")[-1]) < 1.0
    assert "diagnose" in out and "examples" in out and "rules" in out and "report" in out


def test_version(capsys):
    code, out, _ = run_main(["--version"], capsys)
    assert code == 0 and out.startswith("gradadvisor, version ")


def test_examples_lists_every_example_with_verdict(capsys):
    code, out, _ = run_main(["examples"], capsys)
    assert code == 0
    for example in EXAMPLES.values():
        line = next(l for l in out.splitlines() if l.startswith(example.name + " "))
        assert example.verdict in line and example.description in line


def test_every_example_saves_and_loads_back(tmp_path, capsys, keras_module):
    import numpy as np

    for name in EXAMPLES:
        code, out, err = run_main(["examples", "save", name, str(tmp_path)], capsys)
        assert code == 0, err
        model = keras_module.models.load_model(tmp_path / f"{name}.keras")
        with np.load(tmp_path / f"{name}.npz") as data:
            assert len(data["x"]) == len(data["y"])
            prediction = model.predict(data["x"][:4], verbose=0)
        assert prediction.shape[0] == 4
    code, _, err = run_main(["examples", "save", "deep-sigmoid", str(tmp_path)], capsys)
    assert code == 2
    assert err.strip() == (f"gradadvisor: error: The file '{tmp_path}/deep-sigmoid.keras' already "
                           "exists. Pass --force to replace it, or choose another name.")


def test_diagnose_example_text_and_exit_code(capsys):
    code, out, err = run_main(["diagnose", "--example", "deep-sigmoid", "--no-search", "--steps", "10", "-q"], capsys)
    assert code == 1
    assert out.startswith("ERROR  deep_sigmoid has vanishing gradients starting at layer dense_")
    assert "GA101 error [vanishing_gradients]" in out
    assert err == ""
    code, out, _ = run_main(["diagnose", "--example", "deep-sigmoid", "--no-search", "--steps", "10",
                             "-q", "--fail-on", "never"], capsys)
    assert code == 0


def test_diagnose_file_json_on_stdout_only(tmp_path, capsys):
    run_main(["examples", "save", "healthy-relu", str(tmp_path)], capsys)
    model = tmp_path / "healthy-relu.keras"
    before = (model.read_bytes(), os.stat(model).st_mtime_ns)
    code, out, err = run_main(["diagnose", str(model), "--data", str(tmp_path / "healthy-relu.npz"),
                               "--format", "json", "--no-search", "--steps", "8"], capsys)
    assert code == 0, err
    document = json.loads(out)
    assert document["status"] == "healthy"
    assert document["probe"]["data_source"] == f"file {tmp_path / 'healthy-relu.npz'}"
    assert document["model"]["path"] == str(model)
    assert (model.read_bytes(), os.stat(model).st_mtime_ns) == before


def test_diagnose_synthetic_data_when_none_given(tmp_path, capsys):
    run_main(["examples", "save", "long-rnn", str(tmp_path)], capsys)
    code, out, err = run_main(["diagnose", str(tmp_path / "long-rnn.keras"), "--format", "json",
                               "--no-search", "--steps", "5", "-q"], capsys)
    document = json.loads(out)
    assert document["probe"]["data_source"].startswith("synthetic data shaped from the model")
    assert code == 1 and "GA102" in [f["rule"] for f in document["findings"]]


@pytest.mark.parametrize("args, message", [
    (["diagnose"], "Pass either a MODEL file or --example NAME (not both)."),
    (["diagnose", "missing.keras"], "The model file 'missing.keras' does not exist. Check the path."),
    (["diagnose", "--example", "deep-sigmoid", "--steps", "0"],
     "Invalid value for '--steps': 0 is not in the range 1<=x<=100000."),
    (["diagnose", "--example", "deep-sigmoid", "--select", "GA999"],
     "--select names the unknown rule id 'GA999'. Known ids: GA101, GA102, GA201, GA202, GA203, "
     "GA301, GA401, GA402, GA403, GA404, GA501, GA502, GA601, GA602, GA701, GA702, GA703, GA704, GA705, GA706, GA707."),
    (["diagnose", "--example", "deep-sigmoid", "--report", "no/such/folder/r.html"],
     "Cannot write 'no/such/folder/r.html': the folder 'no/such/folder' does not exist. Create it first."),
    (["rules", "explain", "GA000"], "There is no rule 'GA000'. Run 'gradadvisor rules list' for the ids."),
    (["diagnose", "--example", "deep-sigmoid", "--format", "xml"],
     "Invalid value for '--format': 'xml' is not one of 'text', 'json'."),
])
def test_bad_usage_is_one_line_exit_2(capsys, args, message):
    code, out, err = run_main(args, capsys)
    assert code == 2
    assert err == f"gradadvisor: error: {message}\n"
    assert out == ""


def test_rules_list_and_explain(capsys):
    code, out, _ = run_main(["rules", "list"], capsys)
    assert code == 0 and out.splitlines()[0].split() == ["ID", "NAME", "CATEGORY", "SEVERITY", "SCOPE"]
    assert any(line.startswith("GA101  vanishing-gradients") for line in out.splitlines())
    code, out, _ = run_main(["rules", "explain", "ga101"], capsys)
    assert code == 0
    assert "Why it is bad" in out and "grad_rms_ratio_to_output < 0.001" in out
    assert "Fixes the search tries: activation, initializer, normalization" in out


def test_console_script_in_a_real_subprocess(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "gradadvisor.cli", "diagnose", "--example", "dying-relu", "--no-search",
         "--steps", "5", "--format", "json"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    assert json.loads(result.stdout)["findings"][0]["rule"] == "GA401"
    assert "Traceback" not in result.stderr and "I0000" not in result.stderr
