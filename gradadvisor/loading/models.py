"""Model files in: checked without TensorFlow, then loaded read-only in safe mode."""

from __future__ import annotations

import importlib
import warnings
import zipfile
from pathlib import Path

from .._tf import import_keras
from ..errors import ModelLoadError, UsageError


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
