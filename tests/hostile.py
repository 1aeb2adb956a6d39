"""Helpers of the hostile-input suite (tests/test_hostile*.py).

Every case runs the real command line on real files in a fresh folder tree:
``in/`` holds the inputs, ``out/`` is where outputs are asked for, ``tmp/``
is ``$TMPDIR``.  :func:`run_case` checks what every case owes the user: the
exit code, the whole one-line message, no traceback, every file in the tree
(inputs, outputs, temporary files) unchanged in bytes and mtime unless the
case says which new files it writes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from numpy.lib import format as npy

from gradadvisor.cli import main


@dataclasses.dataclass
class Tree:
    """The folders of one case."""

    root: Path
    inputs: Path
    out: Path
    tmp: Path

    @classmethod
    def make(cls, root: Path) -> "Tree":
        tree = cls(root, root / "in", root / "out", root / "tmp")
        for folder in (tree.inputs, tree.out, tree.tmp):
            folder.mkdir(parents=True, exist_ok=True)
        return tree


def snapshot(root: Path) -> dict:
    """``{relative path: (sha256, mtime_ns)}`` of every file and link under ``root``, folders as None."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            relative = str(path.relative_to(root))
            if path.is_symlink():
                found[relative] = ("link", os.readlink(path))
            elif path.is_dir():
                found[relative] = None
            else:
                found[relative] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
    return found


def run_cli(args, tree: Tree, monkeypatch):
    """Run the console script's ``main`` in-process with click's runner; ``(code, out, err)``."""
    monkeypatch.setattr(tempfile, "tempdir", str(tree.tmp))
    runner = CliRunner()
    with runner.isolation(env={"TMPDIR": str(tree.tmp), "COLUMNS": "200"}) as (out, err, _):
        code = main([str(a) for a in args])
    return code, out.getvalue().decode(), err.getvalue().decode()


def expect(args, tree: Tree, monkeypatch, code: int, message: str | None, *, writes=(), kind="error"):
    """Run ``args`` and check the case's promises.

    Args:
        code: The exit code owed.
        message: The whole stderr line after ``gradadvisor: error: `` (None: stderr
            must hold no error line).
        writes: Paths (relative to the tree) the command may create; nothing
            else may appear, change or vanish.
    """
    before = snapshot(tree.root)
    result, out, err = run_cli(args, tree, monkeypatch)
    after = snapshot(tree.root)
    assert "Traceback" not in err and "Traceback" not in out, err
    assert result == code, (result, out, err)
    if message is not None:
        assert err == f"gradadvisor: {kind}: {message}\n", err
    elif code >= 128:  # click starts a fresh line first, as after a ^C echoed by the terminal
        assert err.lstrip("\n") == "gradadvisor: interrupted.\n", err
    else:
        assert "error:" not in err, err
    created = set(after) - set(before)
    assert created == set(writes), f"unexpected files: {sorted(created - set(writes))}"
    for path, state in before.items():
        assert after.get(path) == state, f"{path} changed or vanished"
    assert not any(tree.tmp.iterdir()), f"left in TMPDIR: {list(tree.tmp.iterdir())}"
    return out, err


def npy_bytes(array) -> bytes:
    handle = io.BytesIO()
    np.save(handle, array, allow_pickle=True)
    return handle.getvalue()


# ---------------------------------------------------------------------------- a zip bomb, written fast

def _gf2_times(matrix, vector):
    total, index = 0, 0
    while vector:
        if vector & 1:
            total ^= matrix[index]
        vector >>= 1
        index += 1
    return total


def _append_zeros_operator(length: int) -> list:
    """The GF(2) matrix taking CRC(A) to the CRC of A followed by ``length`` zero bytes, before
    the final xor (zlib's crc32_combine, with the operator kept to apply many times)."""
    def square(matrix):
        return [_gf2_times(matrix, matrix[n]) for n in range(32)]

    one_bit = [0xEDB88320] + [1 << n for n in range(31)]  # one zero bit appended
    operator = [1 << n for n in range(32)]  # identity
    step = square(square(square(one_bit)))  # one zero byte
    while length:
        if length & 1:
            operator = [_gf2_times(step, operator[n]) for n in range(32)]
        length >>= 1
        step = square(step)
    return operator


def write_npz_with_zeros(path: Path, arrays: dict, zeros: dict, chunk: int = 2**24) -> None:
    """Write a real, valid ``.npz``: ``arrays`` as numpy would, and for each ``zeros`` name an
    all-zero uint8 array of that many bytes, deflated.

    Deflating gigabytes of zeros takes many seconds; after a full flush every
    further chunk of zeros deflates to the same bytes, so the member is built
    from one chunk's output, and its CRC by zlib's combine rule (checked by
    reading such a member back in full once, outside the suite).
    """
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            archive.writestr(f"{name}.npy", npy_bytes(np.asarray(array)))
        for name, size in zeros.items():
            assert size % chunk == 0
            header = io.BytesIO()
            npy.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": (size,)})
            head = header.getvalue()
            zero = bytes(chunk)
            packer = zlib.compressobj(9, zlib.DEFLATED, -15)
            first = packer.compress(head + zero) + packer.flush(zlib.Z_FULL_FLUSH)
            repeat = packer.compress(zero) + packer.flush(zlib.Z_FULL_FLUSH)
            data = first + repeat * (size // chunk - 1) + packer.flush()
            crc, zero_crc = zlib.crc32(head + zero), zlib.crc32(zero)
            operator = _append_zeros_operator(chunk)
            for _ in range(size // chunk - 1):
                crc = _gf2_times(operator, crc) ^ zero_crc
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.file_size, info.compress_size, info.CRC = len(head) + size, len(data), crc
            info.header_offset = archive.fp.tell()
            archive.fp.write(info.FileHeader(False))
            archive.fp.write(data)
            archive.filelist.append(info)
            archive.NameToInfo[info.filename] = info
            archive.start_dir = archive.fp.tell()
            archive._didModify = True


_MEASURED = """\
import atexit, os, runpy, sys

def _peak():
    # VmHWM belongs to this process image alone: ru_maxrss would also count the
    # parent's memory at fork time, which in a test run holds TensorFlow.
    with open("/proc/self/status") as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    with open(os.environ["HOSTILE_PEAK_FILE"], "w") as handle:
        handle.write(str(kib))

atexit.register(_peak)
sys.argv = ["gradadvisor"] + sys.argv[1:]
runpy.run_module("gradadvisor", run_name="__main__", alter_sys=True)
"""


def run_measured(args, env, timeout=600):
    """Run ``python -m gradadvisor ARGS``; ``(returncode, stdout, stderr, peak resident memory in MiB)``."""
    import subprocess

    peak_file = Path(env["TMPDIR"]).parent / "peak-kib.txt"
    env = dict(env, HOSTILE_PEAK_FILE=str(peak_file))
    done = subprocess.run([sys.executable, "-c", _MEASURED, *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)
    peak = int(peak_file.read_text()) / 1024
    peak_file.unlink()
    return done.returncode, done.stdout, done.stderr, peak


def python_env(tmp: Path) -> dict:
    """The environment of a child ``python -m gradadvisor``: this checkout first, TMPDIR at ``tmp``."""
    root = Path(__file__).resolve().parent.parent
    path = os.pathsep.join([str(root)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    return dict(os.environ, PYTHONPATH=path, TMPDIR=str(tmp), TF_CPP_MIN_LOG_LEVEL="3")


PYTHON = sys.executable


def case_registry():
    """``(cases, case)``: an empty table and the decorator that fills it.

    ``@case(name, code=2, kind="error")`` registers ``function(tree) -> (args,
    message)`` under ``name`` with the exit code and kind of output it owes.
    """
    cases = {}

    def case(name, code=2, kind="error"):
        def register(function):
            cases[name] = (function, code, kind)
            return function
        return register

    return cases, case
