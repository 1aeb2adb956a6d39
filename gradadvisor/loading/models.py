"""Model files in: checked without TensorFlow, then loaded read-only in safe mode."""

from __future__ import annotations

import contextlib
import importlib
import re
import warnings
import zipfile
from pathlib import Path

from .._tf import import_keras
from ..errors import ModelLoadError, UsageError, quote


@contextlib.contextmanager
def unbuilt_optimizer_state_ignored():
    """Silence Keras' warning that a loaded model's optimizer state is skipped.

    A model saved before training (the user's, or the fixed model the search
    writes) has an unbuilt optimizer; Keras warns that it skips that (empty)
    state when the loaded optimizer builds, which says nothing to the user.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        yield


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
        with unbuilt_optimizer_state_ignored():
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
        unknown = _unknown_classes(path, custom_objects or {}, keras) if path.suffix.lower() == ".keras" else []
        if unknown:
            raise ModelLoadError(
                f"The model file '{path}' uses the custom class {quote(', '.join(unknown), 120)}, which Keras does "
                "not know. Pass --custom-objects MODULE naming the module that defines it."
            ) from None
        if "Unknown" in text or "Could not locate" in text or "custom" in text.lower():
            first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
            raise ModelLoadError(
                f"The model file '{path}' uses a custom class or function Keras does not know "
                f"({quote(first, 200)}). Pass --custom-objects MODULE naming the module that defines it."
            ) from None
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        raise ModelLoadError(
            f"The model file '{path}' could not be loaded ({quote(first, 200)}). Check that it was "
            "saved by Keras 3 with model.save()."
        ) from None
    if not isinstance(model, keras.Model):
        raise ModelLoadError(f"'{path}' does not hold a Keras model.")
    _make_names_traceable(model, keras, path)
    return model


_UNSAFE_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9_.-]")


def _make_names_traceable(model, keras, path) -> None:
    """Rename the loaded model's layers whose names TensorFlow cannot use as scope names.

    TensorFlow refuses to trace a layer named, say, ``<b>x</b>`` (names
    become graph scopes), so such a model could not train at all.  The copy
    loaded here is ours, so its names are made traceable (``_b_x_b_``), and
    a warning lists what was renamed; the file itself is not touched.
    """
    layers = [model] + [layer for layer in model._flatten_layers(include_self=False)]  # noqa: SLF001
    taken = {layer.name for layer in layers}
    renamed = []
    for layer in layers:
        name = layer.name
        safe = _UNSAFE_NAME_CHARACTERS.sub("_", name)
        if layer is model and not re.match(r"[A-Za-z0-9.]", safe[:1]):
            safe = "model" + safe
        if safe == name:
            continue
        candidate, number = safe, 1
        while candidate in taken:
            candidate, number = f"{safe}_{number}", number + 1
        taken.add(candidate)
        layer.name = candidate
        renamed.append(f"{quote(repr(name), 40)} as {candidate!r}")
    if renamed:
        warnings.warn(
            f"The model file '{path}' names layers with characters TensorFlow cannot trace, so they are "
            f"called differently here: {quote('; '.join(renamed), 200)}. The file itself is unchanged.",
            stacklevel=3)


def _unknown_classes(path, custom_objects: dict, keras) -> list:
    """Names of the classes in a ``.keras`` file's config that come from outside Keras and are not known here."""
    import json

    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except Exception:  # the caller reports the loading error itself
        return []
    unknown: list = []
    pending = [config]
    while pending:  # not recursive: a hostile config may nest deeply
        node = pending.pop()
        if isinstance(node, dict):
            module, name = node.get("module"), node.get("class_name")
            registered = node.get("registered_name")
            if name == "function" and isinstance(node.get("config"), str):  # a plain function, by its own name
                name = node["config"]
            if isinstance(name, str) and not name.startswith("__") and not (isinstance(module, str) and module.split(".")[0] == "keras"):
                known = (name in custom_objects or (isinstance(registered, str) and (
                    registered in custom_objects or keras.saving.get_registered_object(registered) is not None)))
                if not known and name not in unknown:
                    unknown.append(name)
            pending.extend(reversed(list(node.values())))
        elif isinstance(node, list):
            pending.extend(reversed(node))
    return unknown


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
