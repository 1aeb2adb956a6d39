"""A plain (non-editable) install ships the built-in rules and the JSON schema."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_plain_install_ships_rules_and_schema(tmp_path):
    target = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--quiet",
         "--target", str(target), str(ROOT)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert build.returncode == 0, build.stderr
    assert not (target / "gradadvisor" / "__editable__").exists()
    code = ("import gradadvisor, gradadvisor.engine as e, pathlib, json;"
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
