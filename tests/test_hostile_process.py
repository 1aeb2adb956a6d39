"""Hostile inputs that need a process of their own: signals, peak memory, what gets imported.

Peak memory is the child's own high-water mark (``VmHWM``, read as it exits),
so each bound is about that command alone.  The bounds are far below what the hostile file
would cost if it were expanded (gigabytes) and well above the command's
baseline on this machine; the figures measured are printed with ``-s``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time

import numpy as np
import pytest

from hostile import PYTHON, python_env, run_measured, write_npz_with_zeros

MiB = 2**20


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, keras_module):
    keras = keras_module
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,), name="features"), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")], name="plain")
    model.compile("adam", "sparse_categorical_crossentropy")
    path = tmp_path_factory.mktemp("hostile-process") / "model.keras"
    model.save(path)
    return path


def _billion_laughs(folder):
    folder.mkdir()
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    (folder / "lol.yaml").write_text("\n".join(lines) + "\n")
    return folder


def _one_error_line(err):
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gradadvisor: error: ") and "Traceback" not in err, err
    return lines[0]


# ============================================================================ memory

def test_billion_laughs_rule_file_is_refused_in_little_memory(tmp_path):
    folder = _billion_laughs(tmp_path / "rules")
    (tmp_path / "tmp").mkdir()
    code, out, err, peak = run_measured(["rules", "list", "--rules", str(folder)],
                                        env=python_env(tmp_path / "tmp"))
    print(f"billion laughs (10 levels, {(folder / 'lol.yaml').stat().st_size} bytes): peak {peak:.0f} MiB")
    assert code == 2
    assert _one_error_line(err) == (
        f"gradadvisor: error: {folder}/lol.yaml:1: the rule file uses a YAML anchor or alias (& or *), which rule "
        "files may not use. Write each value out in full.")
    assert peak < 200, peak


def test_npz_bomb_is_refused_in_little_memory(tmp_path, model_file):
    data = tmp_path / "bomb.npz"
    write_npz_with_zeros(data, {"y": np.zeros(4, "int64")}, {"x": 2**31})
    (tmp_path / "tmp").mkdir()
    code, out, err, peak = run_measured(
        ["diagnose", str(model_file), "--data", str(data)], env=python_env(tmp_path / "tmp"))
    print(f"npz bomb ({data.stat().st_size / MiB:.1f} MiB file, 2 GiB x): peak {peak:.0f} MiB")
    assert code == 2
    assert _one_error_line(err) == (
        f"gradadvisor: error: The data file '{data}' has an array 'x' that would expand from 2.0 MiB to 2048 MiB "
        "(more than 100x), so it was not read. Save plain data with numpy.savez(path, x=..., y=...).")
    assert peak < 200, peak


def test_npz_with_an_unused_2_gib_array_reads_only_x_and_y(tmp_path, model_file):
    data = tmp_path / "data.npz"
    rng = np.random.default_rng(0)
    write_npz_with_zeros(data, {"x": rng.normal(size=(32, 8)).astype("float32"), "y": rng.integers(0, 3, 32)},
                         {"junk": 2**31})
    (tmp_path / "tmp").mkdir()
    code, out, err, peak = run_measured(
        ["diagnose", str(model_file), "--data", str(data), "--steps", "2",
         "--batch-size", "8", "--no-search", "--fail-on", "never", "-q"], env=python_env(tmp_path / "tmp"))
    print(f"npz with an unused 2 GiB array: peak {peak:.0f} MiB (TensorFlow and a probe included)")
    assert code == 0, err
    assert "HEALTHY" in out or "WARNING" in out or "ERROR" in out
    assert peak < 1500, peak  # reading the unused array alone would take 2048 MiB
    assert not any((tmp_path / "tmp").iterdir())


def test_deeply_nested_diagnosis_json_is_refused_in_little_memory(tmp_path):
    source = tmp_path / "d.json"
    source.write_text("[" * 500_000 + "]" * 500_000)
    (tmp_path / "tmp").mkdir()
    code, out, err, peak = run_measured(
        ["report", str(source), "-o", str(tmp_path / "r.html")],
        env=python_env(tmp_path / "tmp"))
    print(f"diagnosis JSON nested 500000 deep: peak {peak:.0f} MiB")
    assert code == 2
    assert _one_error_line(err) == (
        f"gradadvisor: error: The diagnosis file '{source}' nests too deeply to be a diagnosis. Pass the output of "
        "'gradadvisor diagnose --format json'.")
    assert peak < 200, peak
    assert not (tmp_path / "r.html").exists()


# ============================================================================ nothing heavy on the error paths

def test_error_paths_answer_before_tensorflow_loads(tmp_path, model_file):
    rules = _billion_laughs(tmp_path / "rules")
    bomb = tmp_path / "bomb.npz"
    write_npz_with_zeros(bomb, {"y": np.zeros(4, "int64")}, {"x": 2**27})
    (tmp_path / "proj" / "search").mkdir(parents=True)
    (tmp_path / "proj" / "search" / "keep.py").write_text("")
    (tmp_path / "folder.npz").mkdir()
    cases = [
        ["diagnose", str(tmp_path / "none.keras")],
        ["diagnose", "--example", "deep-sigmoid", "--seed", "-1"],
        ["diagnose", str(model_file), "--data", str(tmp_path / "folder.npz")],
        ["diagnose", str(model_file), "--data", str(bomb)],
        ["diagnose", str(model_file), "--tuner-dir", str(tmp_path / "proj")],
        ["diagnose", str(model_file), "--save-fixed", str(model_file), "--force"],
        ["rules", "list", "--rules", str(rules)],
        ["report", str(tmp_path / "none.json"), "-o", str(tmp_path / "r.html")],
    ]
    script = (f"import json, sys\nfrom gradadvisor.cli import main\ncodes = [main(a) for a in {json.dumps(cases)}]\n"
              "print(json.dumps([codes, 'tensorflow' in sys.modules, 'keras' in sys.modules]))")
    done = subprocess.run([PYTHON, "-c", script], capture_output=True, text=True, env=python_env(tmp_path),
                          timeout=300)
    codes, tensorflow, keras = json.loads(done.stdout.splitlines()[-1])
    assert codes == [2] * len(cases), done.stderr
    assert len(done.stderr.splitlines()) == len(cases) and "Traceback" not in done.stderr
    assert not tensorflow and not keras


# ============================================================================ signals

@pytest.mark.slow
@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGHUP"])
def test_termination_signals_during_a_search_are_handled_like_ctrl_c(tmp_path, signal_name):
    number = getattr(signal, signal_name)
    (tmp_path / "tmp").mkdir()
    report = tmp_path / "r.html"
    process = subprocess.Popen(
        [PYTHON, "-m", "gradadvisor", "diagnose", "--example", "tiny-tanh", "--steps", "3", "--max-trials", "50",
         "--trial-steps", "4", "--tuner", "random", "--report", str(report)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=python_env(tmp_path / "tmp"),
        # A test started in the background may inherit ignored signals; a terminal's child would not.
        preexec_fn=lambda: [signal.signal(s, signal.SIG_DFL) for s in (signal.SIGTERM, signal.SIGHUP)])
    deadline, lines = time.time() + 240, []
    while time.time() < deadline:
        line = process.stderr.readline()
        lines.append(line)
        if line.startswith("searching: 1/"):
            break
        if not line and process.poll() is not None:
            break
    tuner_folders = list((tmp_path / "tmp").glob("gradadvisor-tuner-*"))
    process.send_signal(number)
    try:
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert tuner_folders, "".join(lines)  # the search was under way, with its folder in TMPDIR
    assert process.returncode == 128 + number, "".join(lines) + err
    assert err.splitlines()[-1] == "gradadvisor: search interrupted; the best trial so far is shown above."
    assert "Traceback" not in err
    assert "interrupted after" in out and "best so far is" in out
    assert report.exists() and "interrupted" in report.read_text()
    assert not any((tmp_path / "tmp").iterdir()), list((tmp_path / "tmp").iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html", "tmp"]
