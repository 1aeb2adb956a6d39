"""Data in: ``.npz``, ``.csv``, ``module:function`` or arrays, checked against the model."""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any

import numpy as np

from .._tf import import_keras
from ..errors import DataError, quote
from .introspection import input_specs
from .loss import resolve_loss


@dataclasses.dataclass
class Data:
    """Arrays ready for training, and a sentence saying where they came from.

    Attributes:
        x: A list of arrays, one per model input, in the model's input order
            (a single array for a one-input model is stored as a one-item list).
        y: The targets, or a list of targets for several outputs.
        source: Where the data came from, shown in every output.
        dataset: A ``tf.data.Dataset`` when the user gave one instead of arrays.
    """

    x: list | None
    y: Any
    source: str
    dataset: Any = None

    @property
    def num_samples(self) -> int:
        return int(len(self.x[0])) if self.x else 0


MAX_EXPANSION = 100
"""An ``.npz`` member may expand to at most this many times its compressed size..."""
EXPANSION_FLOOR = 64 * 2**20
"""...once it is larger than this many bytes: small or stored (uncompressed) arrays always pass."""
def check_data_path(spec) -> None:
    """Check a data path before TensorFlow loads: it exists, is a file of a known kind and is sane.

    A ``.npz`` file has its archive and array headers read (not its arrays) and
    a ``.csv`` file is read as text, so a bad file is refused at once.

    Raises:
        DataError: with the reason and the fix.
    """
    text = str(spec)
    path = Path(text)
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".csv") and ":" in text and not path.exists():
        return  # module:function, imported later with the model at hand
    if path.is_dir():
        raise DataError(f"The data path '{path}' is a folder. Pass a .npz or .csv file (or module:function).")
    if not path.exists():
        raise DataError(f"The data file '{path}' does not exist. Check the path.")
    if suffix == ".npz":
        with _open_npz(path) as archive:
            members = _npz_members(archive, path)
            needed = [name for name in ("x", "y") if name in members]
            for name in needed:
                _check_member(archive, members[name], path, name)
            if "y" not in members:
                raise DataError(
                    f"The data file '{path}' has no array 'y' (it has: {quote(', '.join(members) or 'none')}). "
                    "Save the targets as y.")
    elif suffix == ".csv":
        _read_csv(path)
    else:
        raise DataError(
            f"The data file '{path}' has the extension '{quote(path.suffix or '(none)', 20)}', but data must "
            "be a .npz file, a .csv file or a module:function."
        )


def load_data(spec, model, *, target: str | None = None) -> Data:
    """Read ``.npz``, ``.csv`` or ``module:function`` data for ``model``.

    Args:
        spec: A path to a ``.npz`` (arrays ``x`` and ``y``, or one array per
            input name plus ``y``) or ``.csv`` file, or ``module:function``.
        model: The model the data must fit.
        target: The label column of a CSV file.
    """
    text = str(spec)
    path = Path(text)
    if path.suffix.lower() == ".npz":
        return _load_npz(path, model)
    if path.suffix.lower() == ".csv":
        return _load_csv(path, model, target)
    if ":" in text and not path.exists():
        return _load_function(text, model)
    check_data_path(path)  # refuses every other path, with the reason
    raise DataError(f"The data path '{path}' is not a .npz file, a .csv file or a module:function.")


def _open_npz(path: Path):
    import zipfile

    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise DataError(
            f"The data file '{path}' is not a readable .npz archive ({quote(str(exc))}). "
            "Write it with numpy.savez(path, x=..., y=...)."
        ) from None


def _npz_members(archive, path: Path) -> dict:
    """``{array name: ZipInfo}`` of an ``.npz`` archive, from its directory alone."""
    return {info.filename[:-4]: info for info in archive.infolist() if info.filename.endswith(".npy")}


def _check_member(archive, info, path: Path, name: str) -> None:
    """Check one array's declared sizes (zip directory and ``.npy`` header) before it is read.

    Only the zip directory and the first bytes of the member are read, so a
    small file that claims a huge array is refused without allocating it.
    """
    from numpy.lib import format as npy

    expanded, packed = info.file_size, max(info.compress_size, 1)
    if expanded > EXPANSION_FLOOR and expanded > MAX_EXPANSION * packed:
        raise DataError(
            f"The data file '{path}' has an array '{quote(name, 40)}' that would expand from "
            f"{packed / 2**20:.1f} MiB to {expanded / 2**20:.0f} MiB (more than {MAX_EXPANSION}x), so it was "
            "not read. Save plain data with numpy.savez(path, x=..., y=...).")
    try:
        with archive.open(info) as stream:
            version = npy.read_magic(stream)
            if version == (1, 0):
                shape, _, dtype = npy.read_array_header_1_0(stream)
            else:
                shape, _, dtype = npy.read_array_header_2_0(stream)
            header = stream.tell()
    except Exception as exc:
        raise DataError(
            f"The data file '{path}' has an array '{quote(name, 40)}' that is not a readable .npy array "
            f"({quote(str(exc))}). Write it with numpy.savez(path, x=..., y=...).") from None
    if dtype.hasobject:
        raise DataError(
            f"The data file '{path}' has an array '{quote(name, 40)}' of Python objects, which is not "
            "loaded (it could run code). Save numeric arrays.")
    declared = int(np.prod(shape, dtype=np.float64) * dtype.itemsize)
    if declared > expanded - header:
        raise DataError(
            f"The data file '{path}' has an array '{quote(name, 40)}' whose header declares shape "
            f"{quote(shape, 40)} ({declared} bytes) but which holds only {max(expanded - header, 0)} bytes; "
            "the file is corrupt. Write it again with numpy.savez(path, x=..., y=...).")


def _load_npz(path: Path, model) -> Data:
    check_data_path(path)
    names = [name for name, _, _ in input_specs(model)]
    with _open_npz(path) as archive:
        members = _npz_members(archive, path)
    if "x" in members:
        wanted = ["x", "y"]
    elif all(name in members for name in names):
        wanted = names + ["y"]
    else:
        raise DataError(
            f"The data file '{path}' has no array 'x' and no arrays named after the model's "
            f"inputs ({quote(', '.join(names))}); it has: {quote(', '.join(members))}. Save the inputs as x, "
            "or one array per input name."
        )
    arrays = {}
    try:
        with _open_npz(path) as archive:
            for name in wanted:
                _check_member(archive, members[name], path, name)
        # NpzFile reads a member only when it is asked for: the other arrays stay on disk.
        with np.load(path, allow_pickle=False) as archive:
            for name in wanted:
                arrays[name] = archive[name]
    except DataError:
        raise
    except Exception as exc:
        raise DataError(
            f"The data file '{path}' is not a readable .npz archive ({quote(str(exc))}). "
            "Write it with numpy.savez(path, x=..., y=...)."
        ) from None
    x = arrays["x"] if "x" in arrays else [arrays[name] for name in names]
    return validate_data(model, x, arrays["y"], source=f"file {path}")


def _read_csv(path: Path) -> tuple:
    """The header and the non-blank rows of a UTF-8 CSV file (a byte-order mark is allowed)."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    except UnicodeDecodeError as exc:
        raise DataError(
            f"The CSV file '{path}' is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
            f"{exc.start}). Save it as UTF-8 (Excel: 'CSV UTF-8')."
        ) from None
    except csv.Error as exc:
        raise DataError(f"The CSV file '{path}' cannot be parsed ({quote(str(exc))}). Save it as plain "
                        "comma-separated text.") from None
    except OSError as exc:
        raise DataError(f"The CSV file '{path}' cannot be read ({quote(exc.strerror or str(exc))}). "
                        "Check its permissions.") from None
    if len(rows) < 2:
        raise DataError(f"The CSV file '{path}' has no data rows. Pass a file with a header and rows.")
    header = [cell.strip() for cell in rows[0]]
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DataError(
                f"The CSV file '{path}' has a row with {len(row)} value(s) where the header has "
                f"{len(header)} (data row {number - 1}). Give every row one value per column.")
    return header, rows[1:]


def _load_csv(path: Path, model, target: str | None) -> Data:
    if path.is_dir():
        raise DataError(f"The data path '{path}' is a folder. Pass a .npz or .csv file (or module:function).")
    if not path.exists():
        raise DataError(f"The data file '{path}' does not exist. Check the path.")
    if not target:
        raise DataError(
            f"The CSV file '{path}' needs a label column. Pass --target COLUMN."
        )
    header, body = _read_csv(path)
    if target not in header:
        raise DataError(
            f"The CSV file '{path}' has no column '{quote(target, 40)}' (columns: {quote(', '.join(header))}). "
            "Pass --target with one of them."
        )
    try:
        table = np.array([[float(cell) for cell in row] for row in body], dtype="float64")
    except ValueError as exc:
        raise DataError(
            f"The CSV file '{path}' has a value that is not a number ({quote(str(exc))}). "
            "Encode every column as numbers."
        ) from None
    column = header.index(target)
    y = table[:, column]
    x = np.delete(table, column, axis=1).astype("float32")
    if np.all(np.mod(y, 1) == 0):
        y = y.astype("int64")
    return validate_data(model, x, y, source=f"file {path} (target column '{target}')")


def _load_function(spec: str, model) -> Data:
    module_name, _, function_name = spec.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except Exception as exc:
        raise DataError(
            f"Cannot load the data function '{spec}' ({quote(str(exc))}). Pass module:function with the "
            "module on PYTHONPATH."
        ) from None
    try:
        result = function()
    except Exception as exc:
        raise DataError(f"The data function '{spec}' raised {type(exc).__name__}: {quote(str(exc))}. Fix "
                        "the function, or pass a .npz or .csv file.") from None
    return from_python(result, None, model, source=f"function {spec}")


def from_python(x, y, model, source: str = "arrays passed in Python") -> Data:
    """Accept ``(x, y)``, a ``tf.data.Dataset`` or ``x, y`` arrays from Python."""
    tf, _ = import_keras()
    if isinstance(x, tf.data.Dataset):
        source = source.replace("arrays", "a tf.data.Dataset")
        _check_dataset(model, x, source)
        return Data(None, None, source, dataset=x)
    if y is None and isinstance(x, tuple) and len(x) == 2:
        x, y = x
    if y is None:
        raise DataError(
            "Targets are missing: pass y together with x (or a tf.data.Dataset of (x, y) pairs)."
        )
    return validate_data(model, x, y, source=source)


def _check_dataset(model, dataset, source: str) -> None:
    """Check a ``tf.data.Dataset``'s structure and shapes against the model, and that it yields something."""
    import tensorflow as tf

    spec = dataset.element_spec
    if not isinstance(spec, (tuple, list)) or len(spec) < 2:
        raise DataError(f"The tf.data.Dataset ({source}) must yield (x, y) pairs; it yields single elements. "
                        "Return tf.data.Dataset.from_tensor_slices((x, y)).batch(32).")
    x_spec = spec[0]
    if getattr(model, "inputs", None) and isinstance(x_spec, tf.TensorSpec):
        (name, shape, _), *rest = input_specs(model)
        got = tuple(x_spec.shape.as_list()) if x_spec.shape.rank is not None else None
        if not rest and got is not None:
            if len(got) == len(shape) and all(g == w or g is None or w is None for g, w in zip(got, shape)):
                raise DataError(
                    f"The tf.data.Dataset ({source}) yields single samples of shape {_shape_text(got)}, but the "
                    "probe trains on batches. Call .batch(32) on it.")
            if len(got) != len(shape) + 1 or any(
                    g is not None and w is not None and g != w for g, w in zip(got[1:], shape)):
                raise DataError(
                    f"The tf.data.Dataset ({source}) yields x of shape {_shape_text(got)}, but the model input "
                    f"'{name}' expects {_shape_text((None,) + tuple(shape))}. Pass batches whose samples have "
                    f"shape {_shape_text(tuple(shape))}.")
    for _ in dataset.take(1):
        return
    raise DataError(f"The tf.data.Dataset ({source}) yields no elements. Return a dataset with at least one "
                    "batch of (x, y).")


def validate_data(model, x, y, source: str) -> Data:
    """Check arrays against the model's inputs and loss; return them as :class:`Data`.

    A subclassed model declares no inputs: its arrays are checked for dtype,
    values and lengths only, and the model itself reports shape mismatches.
    """
    if getattr(model, "inputs", None):
        specs = input_specs(model)
    else:
        count = len(x) if isinstance(x, (list, tuple, dict)) else 1
        names = list(x) if isinstance(x, dict) else [f"input_{i}" for i in range(count)]
        arrays = list(x.values()) if isinstance(x, dict) else (list(x) if count > 1 or isinstance(x, (list, tuple)) else [x])
        specs = [(name, tuple(np.shape(a)[1:]), "float32") for name, a in zip(names, arrays)]
        x = arrays
    if isinstance(x, dict):
        missing = [name for name, _, _ in specs if name not in x]
        if missing:
            raise DataError(
                f"The data has no input named {', '.join(repr(m) for m in missing)}; it has "
                f"{', '.join(map(repr, x))}. Name the arrays after the model's inputs."
            )
        arrays = [x[name] for name, _, _ in specs]
    elif isinstance(x, (list, tuple)):
        arrays = list(x)
    else:
        arrays = [x]
    if len(arrays) != len(specs):
        raise DataError(
            f"The model has {len(specs)} input(s) ({', '.join(n for n, _, _ in specs)}), but the "
            f"data gives {len(arrays)}. Pass one array per model input."
        )
    checked = []
    for array, (name, shape, dtype) in zip(arrays, specs):
        array = np.asarray(array)
        if array.dtype.kind not in "biuf":
            raise DataError(
                f"The input '{name}' has dtype {array.dtype}, but the model expects numbers "
                f"({dtype}). Convert it to a numeric array."
            )
        if array.shape[:1] == (0,) or array.size == 0:
            raise DataError(f"The input '{name}' is empty. Pass at least one sample.")
        expected = (None,) + tuple(shape)
        if array.ndim != len(expected) or any(
                want is not None and got != want for got, want in zip(array.shape[1:], shape)):
            raise DataError(
                f"The input '{name}' has shape {array.shape}, but the model expects "
                f"{_shape_text(expected)}. Pass data whose samples have shape "
                f"{_shape_text(tuple(shape))}."
            )
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            count = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
            raise DataError(
                f"The input '{name}' holds {count} NaN or infinite value(s). Clean or impute "
                "them before diagnosing."
            )
        if "int" in dtype and array.dtype.kind == "f":
            if not np.all(np.mod(array, 1) == 0):
                raise DataError(
                    f"The input '{name}' must hold integer ids ({dtype}), but has fractional "
                    "values. Pass integer token ids."
                )
        checked.append(array.astype(dtype if dtype in ("int32", "int64") else "float32"))
    lengths = {len(a) for a in checked}
    y_arrays = y if isinstance(y, (list, tuple)) else [y]
    y_arrays = [np.asarray(t) for t in y_arrays]
    for target in y_arrays:
        if target.ndim == 0:
            raise DataError("The targets y are a single number. Pass one label per sample (an array).")
        if target.size == 0:
            raise DataError("The targets y are empty. Pass at least one label per sample.")
        if target.dtype.kind not in "biuf":
            raise DataError(
                f"The targets y have dtype {target.dtype}; they must be numbers. Encode labels as integers."
            )
        if target.dtype.kind == "f" and not np.all(np.isfinite(target)):
            raise DataError("The targets y hold NaN or infinite values. Clean them before diagnosing.")
        lengths.add(len(target))
    if len(lengths) != 1:
        raise DataError(
            f"x and y have different numbers of samples ({', '.join(str(len(a)) for a in checked)} "
            f"vs {', '.join(str(len(t)) for t in y_arrays)}). Pass one target per sample."
        )
    _check_targets(model, y_arrays)
    y_out = y_arrays[0] if len(y_arrays) == 1 else y_arrays
    return Data(checked, y_out, source)


def _check_targets(model, targets) -> None:
    outputs = getattr(model, "outputs", None) or []
    if len(outputs) != len(targets) and outputs:
        raise DataError(
            f"The model has {len(outputs)} output(s) but the data gives {len(targets)} target "
            "array(s). Pass one target per output."
        )
    loss = resolve_loss(model, targets[0])
    kind = loss.kind
    if not outputs:
        return
    units = outputs[0].shape[-1]
    y = targets[0]
    expected = tuple(outputs[0].shape[1:])
    if kind == "sparse":
        if not (y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1)):
            raise DataError(
                f"The labels y have shape {y.shape}, but {loss.name} expects one integer label per "
                "sample, shape (n,). Pass class ids, or use categorical_crossentropy for one-hot rows."
            )
        if units is not None and (np.any(y < 0) or np.any(y >= units) or np.any(np.mod(y, 1) != 0)):
            raise DataError(
                f"The labels y must be integers from 0 to {units - 1} for "
                f"{loss.name} with {units} output units, but range from {y.min()} to {y.max()}. "
                "Encode the classes as 0..n-1."
            )
    elif kind == "categorical":
        if units is not None and (y.ndim < 2 or y.shape[-1] != units):
            raise DataError(
                f"The targets y have shape {y.shape}, but {loss.name} with {units} output units "
                f"expects one-hot rows of width {units}. One-hot encode y, or use a sparse loss."
            )
    elif y.shape[1:] != expected and not (y.ndim == 1 and expected in ((1,), ())) and \
            None not in expected:
        raise DataError(
            f"The targets y have shape {y.shape}, but the model's output has shape "
            f"{_shape_text((None,) + expected)}. Pass one target of shape {_shape_text(expected)} per sample."
        )
    if kind == "binary":
        if np.any(y < 0) or np.any(y > 1):
            raise DataError(
                f"The targets y must lie in [0, 1] for {loss.name}, but range from {y.min()} "
                f"to {y.max()}. Encode the classes as 0 and 1."
            )


def _shape_text(shape) -> str:
    return "(" + ", ".join("None" if s is None else str(s) for s in shape) + (",)" if len(shape) == 1 else ")")
