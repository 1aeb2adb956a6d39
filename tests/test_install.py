"""A plain (non-editable) install ships the built-in rules and the JSON schema."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_plain_install_ships_rules_and_schema(tmp_path):
    target = tmp_path / "site"
    # Built from a clean copy: setuptools reuses a checkout's build/ folder, whose
    # stale files would hide a package that setup.cfg no longer ships.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        "build", ".git", "__pycache__", "*.egg-info", ".pytest_cache", "dist"))
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--quiet",
         "--target", str(target), str(source)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert build.returncode == 0, build.stderr
    assert not (target / "gradadvisor" / "__editable__").exists()
    # Every module of every subpackage ships (setup.cfg lists the packages one by one).
    shipped = {p.relative_to(target).as_posix() for p in (target / "gradadvisor").rglob("*.py")}
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "gradadvisor").rglob("*.py")}
    assert modules <= shipped, sorted(modules - shipped)
    code = ("import gradadvisor, gradadvisor.analysis.engine as e, pathlib, json;"
            "print(gradadvisor.__file__);"
            "print(e.builtin_rules_dir());"
            "print(len(e.load_rules()));"
            "p = pathlib.Path(gradadvisor.__file__).parent / 'diagnosis.schema.json';"
            "print(json.loads(p.read_text())['$id'])")
    env = dict(os.environ, PYTHONPATH=str(target))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=120, check=True).stdout.splitlines()
    assert out[0].startswith(str(target))
    assert out[1] == str(target / "gradadvisor" / "rules")
    assert int(out[2]) == len(list((ROOT / "rules").glob("GA*.yaml")))
    assert out[3] == "gradadvisor.diagnosis/1"
