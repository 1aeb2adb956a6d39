"""Writing outputs without ever losing what the user already has.

Every output is written to a temporary file in the destination folder and
renamed into place, so a crash or Ctrl-C leaves either the old file or the new
one, never half of either: the temporary file and its folder are flushed to
disk (``fsync``) before and after the rename.  Existing files are only replaced
with ``force``, and never when the output is one of the inputs (compared by
resolved path and by device and inode, so symbolic and hard links are caught).
Folders a search may wipe carry a marker file, and only such folders (or
empty ones) are ever removed.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from .errors import OutputError


def check_output_path(path, force: bool = False, suffix: str | None = None, inputs=()) -> Path:
    """Check that ``path`` can be written, before any expensive work starts.

    Args:
        path: Where the output will go.
        force: Allow replacing an existing file.
        suffix: The extension the file must have (e.g. ``".html"``), if any.
        inputs: Paths of the input files; the output may be none of them,
            ``force`` or not.

    Returns:
        The path as a :class:`~pathlib.Path`.

    Raises:
        OutputError: the folder is missing or read-only, the path is a folder,
            the file exists without ``force``, the extension is wrong, or the
            output is one of ``inputs``.
    """
    path = Path(path)
    check_not_input(path, inputs)
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


def same_file(first, second) -> bool:
    """Whether two paths name the same file: by resolved path, or by device and inode."""
    first, second = Path(first), Path(second)
    try:
        if first.resolve() == second.resolve():
            return True
    except (OSError, RuntimeError):  # a symbolic-link loop names no file we can compare
        pass
    try:
        one, other = os.stat(first), os.stat(second)
    except OSError:
        return False
    return (one.st_dev, one.st_ino) == (other.st_dev, other.st_ino)


def check_not_input(path, inputs) -> None:
    """Refuse an output path that names one of the input files.

    Raises:
        OutputError: ``path`` is (a link to) one of ``inputs``.
    """
    for source in inputs:
        if source is not None and same_file(path, source):
            raise OutputError(
                f"The output '{path}' is the input file '{source}'; gradadvisor never writes over its "
                "inputs, even with --force. Choose another output name.")


TUNER_MARKER = ".gradadvisor-tuner"
"""The file that marks a folder as a search's own, so a later search may replace it."""


def check_tuner_project(folder) -> Path:
    """Check that the search may wipe ``folder``: it is missing, empty or marked as ours.

    Keras Tuner deletes its project folder when it starts afresh; a folder of
    the user's must never be that folder.

    Raises:
        OutputError: ``folder`` is a file, or a non-empty folder without the marker.
    """
    folder = Path(folder)
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise OutputError(
            f"The search would replace '{folder}', which is not a folder it created. Choose another "
            "--tuner-dir, or remove it yourself.")
    if folder.is_dir() and not (folder / TUNER_MARKER).is_file():
        try:
            empty = next(folder.iterdir(), None) is None
        except OSError:
            empty = False
        if not empty:
            raise OutputError(
                f"The search would replace the folder '{folder}', which holds files it did not write. "
                "Choose an empty --tuner-dir, or remove that folder yourself.")
    return folder


def mark_tuner_project(folder) -> None:
    """Mark ``folder`` as a search's own (see :func:`check_tuner_project`)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / TUNER_MARKER).write_text(
        "Written by gradadvisor: a later search with this --tuner-dir replaces this folder.\n",
        encoding="utf-8")


def _fsync(path, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        handle = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:  # some file systems cannot fsync a folder; the rename is still atomic
        if not directory:
            raise
    finally:
        os.close(handle)


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
        # Flushed before the rename, so the name never points at unwritten
        # blocks; the folder after it, so the rename itself survives a crash.
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent if str(path.parent) else ".", directory=True)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise OutputError(
                f"Cannot write '{path}': {exc.strerror or type(exc).__name__} while writing; nothing was "
                "replaced. Free some space or choose another folder.") from None
        raise


def write_text_atomic(path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_output(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
