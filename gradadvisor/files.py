"""Writing outputs without ever losing what the user already has.

Every output is written to a temporary file in the destination folder and
renamed into place, so a crash or Ctrl-C leaves either the old file or the new
one, never half of either.  Existing files are only replaced with ``force``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from .errors import OutputError


def check_output_path(path, force: bool = False, suffix: str | None = None) -> Path:
    """Check that ``path`` can be written, before any expensive work starts.

    Args:
        path: Where the output will go.
        force: Allow replacing an existing file.
        suffix: The extension the file must have (e.g. ``".html"``), if any.

    Returns:
        The path as a :class:`~pathlib.Path`.

    Raises:
        OutputError: the folder is missing or read-only, the path is a folder,
            the file exists without ``force``, or the extension is wrong.
    """
    path = Path(path)
    if suffix and path.suffix.lower() != suffix:
        raise OutputError(
            f"The output file '{path}' must end in '{suffix}'. Name a file like "
            f"'{path.with_suffix(suffix).name}'."
        )
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(
            f"Cannot write '{path}': the folder '{folder}' does not exist. Create it first."
        )
    try:
        # Actually creating a file is the only test that also holds for root and
        # for read-only file systems, where os.access() says yes.
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".gradadvisor-write-test-"):
            pass
    except OSError:
        raise OutputError(
            f"Cannot write '{path}': the folder '{folder}' is not writable. "
            "Choose a writable folder."
        ) from None
    if path.is_dir():
        raise OutputError(f"Cannot write '{path}': it is a folder. Name a file instead.")
    if path.exists() and not force:
        raise OutputError(
            f"The file '{path}' already exists. Pass --force to replace it, or choose "
            "another name."
        )
    return path


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary path next to ``path``; rename it into place on success.

    The temporary file keeps the final extension, because some writers (Keras'
    ``model.save``) decide the format from it.
    """
    path = Path(path)
    handle, tmp = tempfile.mkstemp(
        prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent or ".")
    os.close(handle)
    os.unlink(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text_atomic(path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_output(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
