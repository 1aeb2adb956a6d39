"""Exceptions raised by gradadvisor.

Every class also subclasses the builtin it refines, so a caller's own
``except ValueError`` or ``except FileNotFoundError`` keeps working.  Only the
command line turns these into exit codes; the library just raises.
"""


MAX_QUOTED = 80
"""Characters of a user's value quoted in a message; the rest is cut."""


def quote(value, limit: int = MAX_QUOTED) -> str:
    """A user's value for a message: ``repr`` (strings as they are), on one line, cut to ``limit``.

    A message quotes what it was given so the user can find it, but a value
    from a hostile or broken file can be megabytes long.
    """
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


class GradAdvisorError(Exception):
    """Base class of every error gradadvisor raises on purpose."""


class UsageError(GradAdvisorError, ValueError):
    """A parameter has a value it cannot take."""


class ModelLoadError(GradAdvisorError, ValueError):
    """A model file is missing, unreadable, unsafe or not a Keras model."""


class DataError(GradAdvisorError, ValueError):
    """Data does not fit the model: shape, dtype, names, length or values."""


class RuleError(GradAdvisorError, ValueError):
    """A rule file is malformed; the message names the file, line and rule id."""


class SurgeryError(GradAdvisorError, ValueError):
    """A model cannot be rewritten (for example a subclassed model)."""


class OutputError(GradAdvisorError, OSError):
    """An output file cannot be written where it was asked for."""
