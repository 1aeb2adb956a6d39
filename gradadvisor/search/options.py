"""The settings of a diagnosis, grouped, and the one place they are checked.

The command line and the Python API take the same settings under different
names.  Both put them into three frozen groups, :class:`ProbeOptions`,
:class:`SearchOptions` and :class:`OutputOptions`, and hand them to
:func:`check_options`, which checks everything that can be checked before
TensorFlow loads (rule selection, distributed settings, output paths, the
tuner directory) and returns a :class:`Plan`: the groups plus what checking
them produced (the rules, the cluster, the output paths).  The code below the
API runs a plan and checks none of these again.

The module sits in the search stage because the search's settings need the
most checking (distributed roles, the tuner directory) and the search is the
last stage that needs them; the command line and the API sit above it.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
from pathlib import Path

from ..errors import PYTHON, OutputError, Spelling, UsageError

TUNERS = ("bayesian", "random", "hyperband")
#: ``(group, setting, least value)`` of the whole-number settings (None allowed where a default is sized).
WHOLE_NUMBERS = (("probe", "steps", 1), ("probe", "batch_size", 1), ("probe", "seed", 0),
                 ("search", "max_trials", 1), ("search", "trial_steps", 2), ("search", "confirm_steps", 2))


@dataclasses.dataclass(frozen=True)
class ProbeOptions:
    """How to probe: steps, batch, seed, and which rules judge the result.

    Attributes:
        steps: Training steps to probe.
        batch_size: Samples per step.
        seed: Seeds the copy's weights, the batch order, synthetic data and the search.
        rules_dirs: Extra folders of rule files (they add or replace rules by id).
        select, ignore: Rule ids to keep or to drop (None: no filter).
        unsafe_load: Allow model files with Python code (Lambda layers).
        custom_objects: A module to import for the model's custom objects.
    """

    steps: int = 30
    batch_size: int = 32
    seed: int = 0
    rules_dirs: tuple = ()
    select: tuple | None = None
    ignore: tuple | None = None
    unsafe_load: bool = False
    custom_objects: str | None = None


@dataclasses.dataclass(frozen=True)
class SearchOptions:
    """Whether and how to search for a fix (see :func:`gradadvisor.recommend`).

    Attributes:
        enabled: Search when a warning or error is found.
        max_trials, trial_steps, confirm_steps, time_budget: The budget
            (None: sized from the model).
        tuner: ``bayesian``, ``random`` or ``hyperband``.
        tuner_dir: Keep Keras Tuner's files here (None: a temporary folder).
        distributed, oracle_address, tuner_id, oracle_timeout: A search
            across processes (see :mod:`gradadvisor.search.distributed`).
    """

    enabled: bool = True
    max_trials: int = 10
    trial_steps: int | None = None
    confirm_steps: int | None = None
    time_budget: float | None = None
    tuner: str = "bayesian"
    tuner_dir: str | os.PathLike | None = None
    distributed: str | None = None
    oracle_address: str | None = None
    tuner_id: str | None = None
    oracle_timeout: float = 600.0


@dataclasses.dataclass(frozen=True)
class OutputOptions:
    """What to write, and where.

    Attributes:
        format: ``text`` or ``json`` on stdout (command line only).
        report: Also write the HTML report here.
        fail_on: ``error``, ``warning`` or ``never``: the severity that makes
            the command exit with code 1.
        save_fixed: Write the recommended model here (``.keras``).
        force: Replace outputs that exist.
        quiet: No progress on stderr.
    """

    format: str = "text"
    report: str | os.PathLike | None = None
    fail_on: str = "error"
    save_fixed: str | os.PathLike | None = None
    force: bool = False
    quiet: bool = False


@dataclasses.dataclass(frozen=True)
class Plan:
    """Checked settings, and what checking them produced.

    Attributes:
        probe, search, output: The settings as given.
        rules: The rules to run, loaded and selected (None when not asked for).
        cluster: This process's part in a distributed search, or None.
        report, save_fixed: The output paths to write (None for a worker,
            which writes nothing).
    """

    probe: ProbeOptions
    search: SearchOptions
    output: OutputOptions
    rules: dict | None
    cluster: object
    report: Path | None
    save_fixed: Path | None

    @property
    def worker(self) -> bool:
        return self.cluster is not None and self.cluster.role == "worker"


def search_options(values: dict | None, enabled: bool = True) -> tuple:
    """``(SearchOptions, save_fixed, force)`` from the Python API's ``search_options`` dict.

    Raises:
        UsageError: a key that is no search option.
    """
    values = dict(values or {})
    save_fixed, force = values.pop("save_fixed", None), values.pop("force", False)
    known = {field.name for field in dataclasses.fields(SearchOptions)} - {"enabled"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UsageError(f"The 'search_options' parameter has the unknown key {unknown[0]!r}. Known keys: "
                         f"{', '.join(sorted(known | {'save_fixed', 'force'}))}.")
    return SearchOptions(enabled=enabled, **values), save_fixed, force


def check_options(probe: ProbeOptions | None, search: SearchOptions, output: OutputOptions, *,
                  inputs=(), rules: dict | None = None, spelling: Spelling = PYTHON) -> Plan:
    """Check every setting that can be checked before TensorFlow loads.

    Args:
        probe: The probe's settings; None when the rules are given instead.
        search, output: The search's and the outputs' settings.
        inputs: The files read (model, data), which no output may replace.
        rules: Rules already loaded, used as they are.
        spelling: How messages name the settings (command-line flags or
            Python parameters).

    Returns:
        A :class:`Plan`.

    Raises:
        UsageError: a count or budget out of range, an unknown rule id or
            tuner, or distributed settings that do not fit together.
        OutputError: an output that cannot be written, or a tuner directory
            the search may not wipe.
        RuleError: a rule folder that cannot be read.
    """
    from ..files import check_output_path
    from .distributed import check_distributed

    _check_numbers(probe, search, spelling)
    if search.tuner not in TUNERS:
        raise UsageError(f"{spelling.sentence(spelling('tuner'))} must be bayesian, random or hyperband. Got "
                         f"{search.tuner!r} instead.")
    cluster = check_distributed(search.distributed, search.oracle_address, search.tuner_id, search.oracle_timeout,
                                search=search.enabled, tuner_dir=search.tuner_dir, spelling=spelling)
    worker = cluster is not None and cluster.role == "worker"
    inputs = [path for path in inputs if isinstance(path, (str, os.PathLike)) and os.path.exists(path)]
    report = save_fixed = None
    if output.report and not worker:
        report = check_output_path(output.report, force=output.force, suffix=".html", inputs=inputs)
    if output.save_fixed and not worker:
        save_fixed = check_output_path(output.save_fixed, force=output.force, suffix=".keras", inputs=inputs)
    if search.tuner_dir:
        _check_tuner_dir(Path(search.tuner_dir), searching=search.enabled and not worker, spelling=spelling)
    if rules is None and probe is not None:
        from ..analysis.engine import load_rules, select_rules

        rules = select_rules(load_rules(probe.rules_dirs), probe.select, probe.ignore, spelling)
    return Plan(probe=probe, search=search, output=output, rules=rules, cluster=cluster, report=report,
                save_fixed=save_fixed)


def _check_numbers(probe: ProbeOptions | None, search: SearchOptions, spelling: Spelling) -> None:
    """Counts and seconds in range; the command line's option types already hold its values to these."""
    for group, name, least in WHOLE_NUMBERS:
        options = probe if group == "probe" else search
        value = getattr(options, name, None) if options is not None else None
        if value is None and (options is None or name in ("trial_steps", "confirm_steps")):
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
            raise UsageError(f"{spelling.sentence(spelling(name))} must be a whole number of at least {least}. "
                             f"Got {value!r} instead.")
    seconds = search.time_budget
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, numbers.Real)
                                or not seconds > 0):
        raise UsageError(f"{spelling.sentence(spelling('time_budget'))} must be a number of seconds above 0. Got "
                         f"{seconds!r} instead.")


def _check_tuner_dir(folder: Path, *, searching: bool, spelling: Spelling) -> None:
    from ..files import check_tuner_project
    from .tuner import PROJECT_NAME

    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{spelling.sentence(spelling('tuner_dir'))} '{folder}' is a file. Name a folder.")
    if searching:
        # Keras Tuner wipes its project folder when a search starts afresh.
        check_tuner_project(folder / PROJECT_NAME)
