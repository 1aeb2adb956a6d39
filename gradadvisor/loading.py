"""Models and data in: safe loading, validation, and synthetic data.

Everything a user hands over passes through here, and every problem with it
becomes a :class:`~gradadvisor.errors.GradAdvisorError` whose message names
what was given, what was expected and how to fix it.  Checks that need no
TensorFlow (missing file, wrong extension, not a zip) run before TensorFlow is
imported, so bad input is answered at once.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ._tf import import_keras
from .errors import DataError, ModelLoadError, UsageError

#: Activations whose output is confined to a band with flat asymptotes.
SATURATING_ACTIVATIONS = ("sigmoid", "hard_sigmoid", "tanh", "hard_tanh", "softsign")
#: Activations that output exactly zero for negative inputs.
RELU_FAMILY = ("relu", "relu6")


# --------------------------------------------------------------------------
# Models

def check_model_path(path) -> Path:
    """Check a model path without importing TensorFlow.

    Raises:
        ModelLoadError: missing file, a folder, a wrong extension or a file that
            is not a ``.keras`` archive.
    """
    path = Path(path)
    if path.is_dir():
        if (path / "saved_model.pb").exists():
            raise ModelLoadError(
                f"'{path}' is a TensorFlow SavedModel folder, which Keras 3 cannot train. "
                "Re-save the model from Python with model.save('model.keras')."
            )
        raise ModelLoadError(f"'{path}' is a folder, not a model file. Pass a .keras file.")
    if not path.exists():
        raise ModelLoadError(f"The model file '{path}' does not exist. Check the path.")
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        return path
    if suffix != ".keras":
        raise ModelLoadError(
            f"The model file '{path}' has the extension '{suffix or '(none)'}', but a Keras "
            "model file ends in '.keras' (or the legacy '.h5'). Save it with "
            "model.save('model.keras')."
        )
    if not zipfile.is_zipfile(path):
        raise ModelLoadError(
            f"The model file '{path}' is not a valid .keras archive (it is not a zip file); "
            "it may be truncated or corrupt. Save the model again with model.save()."
        )
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ModelLoadError(
            f"The model file '{path}' is corrupt ({exc}). Save the model again with model.save()."
        ) from None
    if bad is not None or "config.json" not in names:
        raise ModelLoadError(
            f"The model file '{path}' is corrupt or incomplete (no readable config.json). "
            "Save the model again with model.save()."
        )
    return path


def import_custom_objects(module_name: str | None) -> dict:
    """Import a user module and collect its Keras classes and functions by name.

    Raises:
        UsageError: when the module cannot be imported.
    """
    if not module_name:
        return {}
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import failure is the user's module
        raise UsageError(
            f"Cannot import the custom-objects module '{module_name}': {exc}. "
            "Make sure it is on PYTHONPATH."
        ) from None
    return {
        name: value for name, value in vars(module).items()
        if not name.startswith("_") and (isinstance(value, type) or callable(value))
    }


def load_model(path, *, unsafe: bool = False, custom_objects: dict | None = None):
    """Load a ``.keras`` (or legacy ``.h5``) file read-only, in Keras' safe mode.

    Args:
        path: The model file. It is only ever opened for reading.
        unsafe: Allow deserialising Python code (``Lambda`` layers). Only for
            files you trust: a model file can then run any code.
        custom_objects: Classes and functions the model's config refers to.

    Raises:
        ModelLoadError: with the reason and the fix.
    """
    path = check_model_path(path)
    _, keras = import_keras()
    try:
        with warnings.catch_warnings():
            # A model saved before training has an unbuilt optimizer; Keras warns
            # that it skips its (empty) state, which says nothing to the user.
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            if path.suffix.lower() == ".keras":
                model = keras.saving.load_model(
                    path, custom_objects=custom_objects, compile=True, safe_mode=not unsafe)
            else:
                model = keras.saving.load_model(path, custom_objects=custom_objects, compile=True)
    except Exception as exc:
        text = str(exc)
        if "safe_mode" in text or "unsafe" in text.lower() or "Lambda" in text:
            raise ModelLoadError(
                f"The model file '{path}' contains Python code (for example a Lambda layer), "
                "which could run anything on this machine, so it was not loaded. If you trust "
                "the file, pass --unsafe-load (Python: unsafe=True)."
            ) from None
        if "Unknown" in text or "Could not locate" in text or "custom" in text.lower():
            first = text.strip().splitlines()[0][:200] if text.strip() else type(exc).__name__
            raise ModelLoadError(
                f"The model file '{path}' uses a custom class or function Keras does not know "
                f"({first}). Pass --custom-objects MODULE naming the module that defines it."
            ) from None
        first = text.strip().splitlines()[0][:200] if text.strip() else type(exc).__name__
        raise ModelLoadError(
            f"The model file '{path}' could not be loaded ({first}). Check that it was "
            "saved by Keras 3 with model.save()."
        ) from None
    if not isinstance(model, keras.Model):
        raise ModelLoadError(f"'{path}' does not hold a Keras model.")
    return model


def resolve_model(model, *, unsafe: bool = False, custom_objects: dict | None = None):
    """Accept a ``keras.Model`` or a path and return a model with trainable weights."""
    _, keras = import_keras()
    if isinstance(model, (str, Path)):
        model = load_model(model, unsafe=unsafe, custom_objects=custom_objects)
    elif not isinstance(model, keras.Model):
        raise UsageError(
            "The 'model' parameter must be a keras.Model or a path to a .keras file. "
            f"Got {type(model).__name__} instead."
        )
    if not model.built:
        raise UsageError(
            f"The model '{model.name}' is not built, so its weights do not exist yet. "
            "Call it once on data (or give it an Input) before diagnosing it."
        )
    if not model.trainable_weights:
        raise UsageError(
            f"The model '{model.name}' has no trainable weights, so there are no gradients "
            "to diagnose. Check that its layers are trainable."
        )
    return model


# --------------------------------------------------------------------------
# Model introspection

def input_specs(model) -> list[tuple[str, tuple, str]]:
    """Return ``(name, shape_without_batch, dtype)`` for each model input."""
    inputs = getattr(model, "inputs", None)
    if not inputs:
        shape = getattr(model, "_build_shapes_dict", None) or {}
        raise DataError(
            f"The model '{model.name}' does not declare its inputs (subclassed models do not). "
            "Pass data explicitly with --data (Python: x=..., y=...)."
            if not shape else "The model does not declare its inputs. Pass data explicitly."
        )
    specs = []
    for tensor in inputs:
        name = getattr(tensor, "name", "input") or "input"
        specs.append((name.split(":")[0], tuple(tensor.shape[1:]), str(tensor.dtype)))
    return specs


def output_layers(model) -> list:
    """The layers that produce the model's outputs (following nested models)."""
    _, keras = import_keras()
    layers = []
    outputs = getattr(model, "outputs", None) or []
    for tensor in outputs:
        history = getattr(tensor, "_keras_history", None)
        layer = history[0] if history else None
        while layer is not None and isinstance(layer, keras.Model) and getattr(layer, "outputs", None):
            inner = layer.outputs[0]._keras_history
            layer = inner[0] if inner else None
        if layer is not None:
            layers.append(layer)
    if not layers and model.layers:
        layers.append(model.layers[-1])
    return layers


def activation_name(layer) -> str | None:
    """The name of the nonlinearity that shapes ``layer``'s output, or None."""
    class_name = type(layer).__name__
    if class_name == "ReLU":
        slope = float(getattr(layer, "negative_slope", 0.0) or 0.0)
        return "relu" if slope == 0.0 else "leaky_relu"
    fixed = {"LeakyReLU": "leaky_relu", "PReLU": "prelu", "ELU": "elu", "Softmax": "softmax"}
    if class_name in fixed:
        return fixed[class_name]
    cell = getattr(layer, "cell", None)
    if cell is not None and hasattr(cell, "activation"):
        return _function_name(cell.activation)
    forward = getattr(layer, "forward_layer", None)
    if forward is not None:
        return activation_name(forward)
    if hasattr(layer, "activation"):
        return _function_name(layer.activation)
    return None


def _function_name(function) -> str | None:
    if function is None:
        return None
    name = getattr(function, "__name__", None) or type(function).__name__
    return None if name == "linear" else name.lower()


# --------------------------------------------------------------------------
# Loss

@dataclasses.dataclass
class LossChoice:
    """The loss the probe trains with, and where it came from."""

    loss: Any
    name: str
    inferred: bool

    @property
    def kind(self) -> str:
        """``sparse``, ``categorical``, ``binary`` or ``regression``: what targets it takes."""
        words = self.name.lower().replace("_", "")
        if "sparse" in words:
            return "sparse"
        if "categorical" in words:
            return "categorical"
        if "binary" in words or "hinge" in words:
            return "binary"
        return "regression"


def _loss_name(loss) -> str:
    """A snake_case name for a loss given as a string, a Loss object or a function."""
    if isinstance(loss, str):
        return loss
    name = getattr(loss, "name", None) or getattr(loss, "__name__", None)
    if not name or name == "loss":
        name = re.sub(r"(?<!^)(?=[A-Z])", "_", type(loss).__name__).lower()
    return str(name)


def resolve_loss(model, y=None) -> LossChoice:
    """The model's compiled loss, or one inferred from its output layer and labels."""
    compiled = getattr(model, "loss", None)
    if compiled is not None:
        return LossChoice(compiled, _loss_name(compiled), inferred=False)
    layer = output_layers(model)[0]
    activation = activation_name(layer)
    units = int(model.outputs[0].shape[-1]) if getattr(model, "outputs", None) else 1
    if activation == "softmax":
        if y is not None and np.ndim(y) >= 2 and np.shape(y)[-1] == units and units > 1:
            name = "categorical_crossentropy"
        else:
            name = "sparse_categorical_crossentropy"
    elif activation == "sigmoid":
        name = "binary_crossentropy"
    else:
        name = "mean_squared_error"
    return LossChoice(name, name, inferred=True)


# --------------------------------------------------------------------------
# Data

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
    if not path.exists():
        raise DataError(f"The data file '{path}' does not exist. Check the path.")
    raise DataError(
        f"The data file '{path}' has the extension '{path.suffix or '(none)'}', but data must "
        "be a .npz file, a .csv file or a module:function."
    )


def _load_npz(path: Path, model) -> Data:
    if not path.exists():
        raise DataError(f"The data file '{path}' does not exist. Check the path.")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except Exception as exc:
        raise DataError(
            f"The data file '{path}' is not a readable .npz archive ({exc}). "
            "Write it with numpy.savez(path, x=..., y=...)."
        ) from None
    if "y" not in arrays:
        raise DataError(
            f"The data file '{path}' has no array 'y' (it has: {', '.join(arrays) or 'none'}). "
            "Save the targets as y."
        )
    names = [name for name, _, _ in input_specs(model)]
    if "x" in arrays:
        x = arrays["x"]
    elif all(name in arrays for name in names):
        x = [arrays[name] for name in names]
    else:
        raise DataError(
            f"The data file '{path}' has no array 'x' and no arrays named after the model's "
            f"inputs ({', '.join(names)}); it has: {', '.join(arrays)}. Save the inputs as x, "
            "or one array per input name."
        )
    return validate_data(model, x, arrays["y"], source=f"file {path}")


def _load_csv(path: Path, model, target: str | None) -> Data:
    if not path.exists():
        raise DataError(f"The data file '{path}' does not exist. Check the path.")
    if not target:
        raise DataError(
            f"The CSV file '{path}' needs a label column. Pass --target COLUMN."
        )
    import csv

    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if len(rows) < 2:
        raise DataError(f"The CSV file '{path}' has no data rows. Pass a file with a header and rows.")
    header, body = rows[0], rows[1:]
    if target not in header:
        raise DataError(
            f"The CSV file '{path}' has no column '{target}' (columns: {', '.join(header)}). "
            "Pass --target with one of them."
        )
    try:
        table = np.array([[float(cell) for cell in row] for row in body], dtype="float64")
    except ValueError as exc:
        raise DataError(
            f"The CSV file '{path}' has a value that is not a number ({exc}). "
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
            f"Cannot load the data function '{spec}' ({exc}). Pass module:function with the "
            "module on PYTHONPATH."
        ) from None
    try:
        result = function()
    except Exception as exc:
        raise DataError(f"The data function '{spec}' raised {type(exc).__name__}: {exc}") from None
    return from_python(result, None, model, source=f"function {spec}")


def from_python(x, y, model, source: str = "arrays passed in Python") -> Data:
    """Accept ``(x, y)``, a ``tf.data.Dataset`` or ``x, y`` arrays from Python."""
    tf, _ = import_keras()
    if isinstance(x, tf.data.Dataset):
        return Data(None, None, source.replace("arrays", "a tf.data.Dataset"), dataset=x)
    if y is None and isinstance(x, tuple) and len(x) == 2:
        x, y = x
    if y is None:
        raise DataError(
            "Targets are missing: pass y together with x (or a tf.data.Dataset of (x, y) pairs)."
        )
    return validate_data(model, x, y, source=source)


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


def synthetic_data(model, num_samples: int = 256, seed: int = 0) -> Data:
    """Inputs and learnable targets shaped from the model itself.

    Float inputs are standard normal; inputs feeding an ``Embedding`` are
    integer ids below its ``input_dim``.  Targets come from a fixed random
    projection of the inputs, so that the loss can actually go down, and are
    encoded to fit the model's loss and output shape.
    """
    _, keras = import_keras()
    rng = np.random.default_rng(seed)
    specs = input_specs(model)
    vocab = _embedding_vocab_by_input(model)
    arrays = []
    for name, shape, dtype in specs:
        concrete = tuple(16 if s is None else int(s) for s in shape)
        if name in vocab or "int" in dtype:
            high = vocab.get(name, 100)
            arrays.append(rng.integers(0, high, size=(num_samples,) + concrete).astype(
                dtype if "int" in dtype else "int32"))
        else:
            arrays.append(rng.normal(size=(num_samples,) + concrete).astype("float32"))
    signal = np.zeros(num_samples)
    features = np.concatenate([a.reshape(num_samples, -1).astype("float64") for a in arrays], axis=1)
    features = (features - features.mean(0)) / (features.std(0) + 1e-8)
    targets = []
    loss = resolve_loss(model)
    for tensor in model.outputs:
        shape = tuple(16 if s is None else int(s) for s in tensor.shape[1:])
        units = int(np.prod(shape)) if shape else 1
        projection = rng.normal(size=(features.shape[1], max(units, 1))) / np.sqrt(features.shape[1])
        scores = features @ projection + signal[:, None]
        if loss.kind == "sparse":
            targets.append(np.argmax(scores, axis=1).astype("int32"))
        elif loss.kind == "categorical":
            targets.append(np.eye(units, dtype="float32")[np.argmax(scores, axis=1)].reshape(
                (num_samples,) + shape))
        elif loss.kind == "binary":
            targets.append((scores > 0).astype("float32").reshape((num_samples,) + shape))
        else:
            targets.append(scores.astype("float32").reshape((num_samples,) + shape))
    y = targets[0] if len(targets) == 1 else targets
    x = arrays
    return Data(x, y, f"synthetic data shaped from the model ({num_samples} samples, seed {seed})")


def _embedding_vocab_by_input(model) -> dict:
    """Map input names to the ``input_dim`` of the Embedding they feed directly."""
    _, keras = import_keras()
    found = {}
    names = [name for name, _, _ in input_specs(model)]
    for layer in _leaf_layers(model):
        if isinstance(layer, keras.layers.Embedding):
            for node in getattr(layer, "_inbound_nodes", []):
                for tensor in node.input_tensors:
                    history = getattr(tensor, "_keras_history", None)
                    source = history[0] if history else None
                    source_name = getattr(source, "name", None)
                    if source_name in names:
                        found[source_name] = int(layer.input_dim)
            if not found and len(names) == 1:
                found[names[0]] = int(layer.input_dim)
    return found


def _leaf_layers(model):
    _, keras = import_keras()
    for layer in model.layers:
        if isinstance(layer, keras.Model) and type(layer) in (keras.Sequential, keras.Model) or (
                isinstance(layer, keras.Model) and hasattr(layer, "_nodes_by_depth")):
            yield from _leaf_layers(layer)
        else:
            yield layer
