"""The package's shape: no import cycle, no private name crossing subpackages, no TensorFlow on import."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import import_graph  # noqa: E402


def test_no_import_cycle_and_no_private_import_across_subpackages():
    result = import_graph.analyse(ROOT)
    assert result["module_cycles"] == []
    assert result["group_cycles"] == []
    assert result["private"] == []


def test_the_checker_sees_a_cycle_and_a_private_import(tmp_path):
    package = tmp_path / "gradadvisor"
    (package / "a").mkdir(parents=True)
    (package / "b").mkdir()
    (package / "__init__.py").write_text("")
    (package / "a" / "__init__.py").write_text("from ..b.x import _hidden\n")
    (package / "b" / "__init__.py").write_text("")
    (package / "b" / "x.py").write_text("def f():\n    from ..a import thing\n_hidden = 1\n")
    result = import_graph.analyse(tmp_path)
    assert result["group_cycles"] == [["a", "b"]]
    assert result["private"] == ["gradadvisor.a imports _hidden from gradadvisor.b.x"]


def test_importing_the_package_and_its_cli_loads_no_tensorflow():
    code = ("import sys, gradadvisor, gradadvisor.cli, gradadvisor.api;"
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT, timeout=120).stdout.split()
    assert out == ["False", "False"]
