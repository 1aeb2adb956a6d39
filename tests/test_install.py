"""The wheel holds every subpackage, the built-in rules and the JSON schema, and installs."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_ships_every_subpackage_rules_and_schema(tmp_path):
    target = tmp_path / "site"
    # Built from a clean copy: setuptools reuses a checkout's build/ folder, whose
    # stale files would hide a package that setup.cfg no longer ships.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        "build", ".git", "__pycache__", "*.egg-info", ".pytest_cache", "dist"))
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
         "--wheel-dir", str(wheels), str(source)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("gradadvisor-*.whl")
    # Every module of every subpackage, every rule, template and schema is in the wheel
    # (setup.cfg finds the packages; a listed one was once left out).
    with zipfile.ZipFile(wheel) as archive:
        packed = set(archive.namelist())
    wanted = {p.relative_to(ROOT).as_posix() for p in (ROOT / "gradadvisor").rglob("*")
              if p.is_file() and p.suffix in (".py", ".html", ".json") and "__pycache__" not in p.parts}
    wanted |= {f"gradadvisor/rules/{p.name}" for p in (ROOT / "rules").glob("GA*.yaml")}
    assert wanted <= packed, sorted(wanted - packed)
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(target),
         str(wheel)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert install.returncode == 0, install.stderr
    assert not (target / "gradadvisor" / "__editable__").exists()
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
