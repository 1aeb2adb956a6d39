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


class Spelling:
    """How a message names a setting: as a command-line flag or as a Python parameter.

    One check serves the command line and the Python API with one sentence,
    and each reader sees the names they typed: ``--oracle-address`` and
    ``--distributed chief`` on the command line, ``the 'oracle_address'
    parameter`` and ``distributed='chief'`` in Python.
    """

    def __init__(self, command_line: bool):
        self.command_line = command_line

    def __call__(self, name: str, value=None) -> str:
        """``name`` alone, or set to ``value`` (a string in capitals is a placeholder such as ``DIR``)."""
        if self.command_line:
            flag = "--" + name.replace("_", "-")
            if value is None:
                return flag
            if isinstance(value, bool):
                return flag if value else "--no-" + name.replace("_", "-")
            return f"{flag} {value}"
        if value is None:
            return f"the '{name}' parameter"
        shown = value if isinstance(value, str) and value.isupper() else repr(value)
        return f"{name}={shown}"

    def sentence(self, text: str) -> str:
        """``text`` with its first letter capitalised, for a name that opens a sentence."""
        return text[:1].upper() + text[1:]


COMMAND_LINE = Spelling(command_line=True)
PYTHON = Spelling(command_line=False)


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
