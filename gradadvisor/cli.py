"""The ``gradadvisor`` command line.

Every command is a thin layer over the Python API.  TensorFlow is imported only
inside commands that train, so ``--help`` and input errors answer at once.
Errors are one line on stderr with exit code 2 (``--debug`` shows the
traceback); findings at or above ``--fail-on`` give exit code 1.
"""

from __future__ import annotations

import signal
import sys
import dataclasses
import threading
import warnings

import click

from ._version import __version__
from .errors import COMMAND_LINE, GradAdvisorError, UsageError, quote

EXIT_FINDINGS = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130
MAX_DIAGNOSIS_BYTES = 256 * 2**20
MAX_MESSAGE = 600


_STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))
_received: list = []


class _Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where Ctrl-C would be, so every cleanup runs the same way."""


def _on_stop_signal(signum, frame):
    _received.append(signum)
    # A second signal during the cleanup must not cut it short and leave files behind.
    for number in _STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)
    raise _Stopped(signum)


def _interrupted_code() -> int:
    """130 after Ctrl-C, 128 + the signal's number after SIGTERM or SIGHUP (as a shell reports them)."""
    return 128 + _received[-1] if _received else EXIT_INTERRUPTED


def _set_debug(ctx, param, value):
    if value:
        from ._tf import set_quiet

        set_quiet(False)
        root = ctx.find_root()
        root.obj = dict(root.obj or {}, debug=True)
    return value


_debug_option = click.option(
    "--debug", is_flag=True, expose_value=False, is_eager=True, callback=_set_debug,
    help="Show full tracebacks and TensorFlow's log output.")


def _split_ids(value):
    if not value:
        return None
    return tuple(part.strip() for part in value.split(",") if part.strip())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="gradadvisor")
@click.option("--debug", is_flag=True, help="Show full tracebacks and TensorFlow's log output.")
@click.pass_context
def main_group(ctx, debug):
    """Find vanishing and exploding gradients in a Keras model, and the setup that fixes them.

    Start with 'gradadvisor diagnose model.keras', or try a built-in example:
    'gradadvisor diagnose --example deep-sigmoid --report report.html'.
    """
    ctx.obj = {"debug": debug}
    if debug:
        from ._tf import set_quiet

        set_quiet(False)


@main_group.command()
@_debug_option
@click.argument("model", required=False, type=click.Path(dir_okay=True))
@click.option("--example", metavar="NAME", help="Diagnose a built-in example instead of a file (see 'gradadvisor examples').")
@click.option("--data", metavar="PATH", help="Training data: a .npz (x, y) or .csv file, or module:function. Default: the example's data, or synthetic data shaped from the model.")
@click.option("--target", metavar="COLUMN", help="The label column of a CSV data file.")
@click.option("--steps", type=click.IntRange(min=1, max=100000), default=30, show_default=True, help="Training steps to probe.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Samples per training step.")
@click.option("--seed", type=click.IntRange(min=0, max=2**32 - 1), default=0, show_default=True, help="Seed for batch order, synthetic data and the search.")
@click.option("--format", "format", type=click.Choice(["text", "json"]), default="text", show_default=True, help="Output on stdout.")
@click.option("--report", "report", metavar="PATH", help="Also write the self-contained HTML report here.")
@click.option("--fail-on", type=click.Choice(["error", "warning", "never"]), default="error", show_default=True, help="Exit with code 1 when findings reach this severity.")
@click.option("--search/--no-search", "enabled", default=True, show_default=True, help="Search for a fix when a warning or error is found; --no-search is lint mode.")
@click.option("--save-fixed", metavar="PATH", help="Write the recommended, freshly initialised model here (.keras).")
@click.option("--max-trials", type=click.IntRange(min=1, max=500), default=10, show_default=True, help="Search budget: candidate setups to try.")
@click.option("--trial-steps", type=click.IntRange(min=2, max=100000), default=None, help="Search budget: training steps per candidate.  [default: 60, more for long sequences, fewer for slow models]")
@click.option("--time-budget", type=click.FloatRange(min=1.0), default=None, help="Search budget: stop starting new trials after this many seconds (wall time).  [default: 30 to 130 CPU seconds, from the measured CPU time of a step]")
@click.option("--tuner", type=click.Choice(["bayesian", "random", "hyperband"]), default="bayesian", show_default=True, help="Keras Tuner search algorithm.")
@click.option("--tuner-dir", metavar="DIR", help="Keep Keras Tuner's files here (default: a temporary folder, removed afterwards). Required with --distributed: a folder shared by the chief and every worker.")
@click.option("--distributed", type=click.Choice(["chief", "worker"]), default=None, help="Run the search across processes with Keras Tuner's chief/worker mode: the chief serves the oracle, then ranks, confirms and reports; workers run trials. Run the same command everywhere, changing only this option.")
@click.option("--oracle-address", metavar="HOST:PORT", help="With --distributed: where the chief listens and workers connect (sets KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT; default: those variables).")
@click.option("--tuner-id", metavar="ID", help="With --distributed: this process's Keras Tuner id (default: KERASTUNER_TUNER_ID, else 'chief' or 'worker-HOST-PID'). Reuse a dead worker's id to rerun its trial.")
@click.option("--oracle-timeout", type=click.FloatRange(min=1.0), default=600.0, show_default=True, help="With --distributed: seconds a worker waits for the chief's oracle (and each of its answers), and the chief for a first worker.")
@click.option("--rules", "rules_dirs", metavar="DIR", multiple=True, help="Folder of extra rule files; they add or replace built-in rules by id. Repeatable.")
@click.option("--select", metavar="IDS", help="Only run these rule ids (comma-separated).")
@click.option("--ignore", metavar="IDS", help="Skip these rule ids (comma-separated).")
@click.option("--unsafe-load", is_flag=True, help="Allow model files with Python code (Lambda layers). Only for files you trust.")
@click.option("--custom-objects", metavar="MODULE", help="Import this module for the model's custom layers and functions.")
@click.option("--force", is_flag=True, help="Replace output files that already exist.")
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr.")
@click.pass_context
def diagnose(ctx, model, example, data, target, **settings):
    """Probe MODEL (a .keras file) with real training steps and diagnose its gradients.

    Prints a verdict and findings (or JSON with --format json), optionally writes
    an HTML report, and, when something is wrong, searches initializers,
    activations, normalization and clipping for a setup that trains better.

    Exit codes: 0 nothing at or above --fail-on, 1 findings at or above it,
    2 bad usage or bad input, 130 interrupted by Ctrl-C, 143 or 129 stopped by
    SIGTERM or SIGHUP (a search stopped either way still prints the best trial
    so far and writes the report).

    Distributed search: start 'gradadvisor diagnose ... --distributed chief
    --oracle-address HOST:PORT --tuner-dir SHARED' once, and the same command
    with '--distributed worker' on each machine.  Workers exit 0 once the
    search is over, saying on stderr which trials they ran; only the chief
    prints the result and writes --report and --save-fixed.
    """
    from .search.options import check_options

    probe, search, output = _option_groups(settings)
    _check_inputs(model, example, data)
    plan = check_options(probe, search, output, inputs=[model, data], spelling=COMMAND_LINE)
    if data and example:
        raise UsageError("--data cannot be combined with --example: the example brings its own data.")

    from .api import run_diagnosis
    from .report.progress import Progress

    x = y = None
    target_model = model
    if example is not None:
        from .examples import build_example
        from .loading import validate_data

        target_model, x, y = build_example(example, seed=probe.seed)
        x = validate_data(target_model, x, y, source=f"the data of the built-in example {example}")
        y = None
    command = "gradadvisor " + " ".join(sys.argv[1:]) if sys.argv else None
    with Progress(enabled=not output.quiet) as progress:
        diagnosis = run_diagnosis(target_model, x, y, plan, data=data, target=target, progress=progress,
                                  command=command)
    if example is not None:
        diagnosis.model_path = f"example:{example}"
    if plan.worker:
        ctx.exit(_worker_done(plan.cluster, diagnosis.recommendation))
    _write_outputs(diagnosis, plan)
    if diagnosis.recommendation and diagnosis.recommendation.get("interrupted"):
        click.echo("gradadvisor: search interrupted; the best trial so far is shown above.", err=True)
        ctx.exit(_interrupted_code())
    if output.fail_on != "never" and diagnosis.at_least(output.fail_on):
        ctx.exit(EXIT_FINDINGS)


def _option_groups(settings: dict) -> tuple:
    """``(ProbeOptions, SearchOptions, OutputOptions)`` from the diagnose command's options."""
    from .search.options import OutputOptions, ProbeOptions, SearchOptions

    settings = dict(settings)
    groups = []
    for group in (ProbeOptions, SearchOptions, OutputOptions):
        names = {field.name for field in dataclasses.fields(group)}
        groups.append(group(**{name: settings.pop(name) for name in list(settings) if name in names}))
    if settings:  # an option added to the command but to no group
        raise TypeError(f"diagnose options in no group: {sorted(settings)}")
    probe, search, output = groups
    return (dataclasses.replace(probe, select=_split_ids(probe.select), ignore=_split_ids(probe.ignore)),
            search, output)


def _check_inputs(model, example, data) -> None:
    """The model file or example, and the data path, checked before TensorFlow loads."""
    from .loading import check_model_path

    if (model is None) == (example is None):
        raise UsageError("Pass either a MODEL file or --example NAME (not both).")
    if example is not None:
        from .examples import get_example

        get_example(example)
    else:
        check_model_path(model)
    if data is not None:
        from .loading.data import check_data_path

        check_data_path(data)


def _write_outputs(diagnosis, plan) -> None:
    """The summary or JSON on stdout, and the report if asked for."""
    output = plan.output
    if output.format == "json":
        click.echo(diagnosis.to_json())
    else:
        click.echo(diagnosis.to_text(color=sys.stdout.isatty()), nl=False)
    if plan.report:
        diagnosis.save_html(plan.report, force=output.force)
        if not output.quiet:
            click.echo(f"report written to {output.report}", err=True)


def _worker_done(cluster, recommendation) -> int:
    """A worker's one line on stderr once the search is over, and its exit code."""
    prefix = f"gradadvisor: worker {cluster.tuner_id}"
    if recommendation is None:
        click.echo(f"{prefix}: the diagnosis found nothing to search, so it ran no trials.", err=True)
        return 0
    ran = (recommendation.get("distributed") or {}).get("trials_by_worker", {}).get(cluster.tuner_id, [])
    trials = f"trial(s) {', '.join(ran)}" if ran else "no trials"
    if recommendation.get("interrupted"):
        click.echo(f"{prefix}: interrupted after {trials} for the oracle at {cluster.address}.", err=True)
        return _interrupted_code()
    if not recommendation.get("dimensions"):
        click.echo(f"{prefix}: {recommendation.get('reason', '')} It ran no trials.", err=True)
        return 0
    click.echo(f"{prefix} ran {trials} for the oracle at {cluster.address}; the chief prints the result.",
               err=True)
    return 0


@main_group.group(invoke_without_command=True)
@_debug_option
@click.pass_context
def examples(ctx):
    """List the built-in examples, or save one with 'examples save NAME DIR'."""
    if ctx.invoked_subcommand is None:
        from .examples import EXAMPLES

        width = max(len(name) for name in EXAMPLES)
        click.echo(f"{'NAME':<{width}}  {'EXPECTED':<20}  DESCRIPTION")
        for example in EXAMPLES.values():
            click.echo(f"{example.name:<{width}}  {example.verdict:<20}  {example.description}")


@examples.command("save")
@_debug_option
@click.argument("name")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--seed", type=click.IntRange(min=0, max=2**32 - 1), default=0, show_default=True)
@click.option("--force", is_flag=True, help="Replace files that already exist.")
def examples_save(name, directory, seed, force):
    """Write NAME.keras and NAME.npz (arrays x and y) into DIRECTORY."""
    from .examples import get_example, save_example

    get_example(name)
    model_path, data_path = save_example(name, directory, seed=seed, force=force)
    click.echo(f"wrote {model_path} and {data_path}")


@main_group.group()
@_debug_option
def rules():
    """List and explain the rules findings come from."""


_rules_option = click.option("--rules", "rules_dirs", metavar="DIR", multiple=True,
                             help="Folder of extra rule files (adds or replaces by id).")


@rules.command("list")
@_debug_option
@_rules_option
def rules_list(rules_dirs):
    """Table of rule id, name, category and severity."""
    from .analysis.engine import load_rules

    loaded = load_rules(rules_dirs)
    click.echo(f"{'ID':<7}{'NAME':<26}{'CATEGORY':<22}{'SEVERITY':<9}SCOPE")
    for rule in loaded.values():
        click.echo(f"{rule.id:<7}{rule.name:<26}{rule.category:<22}{rule.severity:<9}{rule.scope}")


@rules.command("explain")
@_debug_option
@click.argument("rule_id")
@_rules_option
def rules_explain(rule_id, rules_dirs):
    """Explain one rule: why it matters, its condition in words, and the fixes."""
    from .analysis.engine import load_rules
    from .analysis.signals import REGISTRY

    loaded = load_rules(rules_dirs)
    rule = loaded.get(rule_id.upper())
    if rule is None:
        raise UsageError(f"There is no rule '{rule_id}'. Run 'gradadvisor rules list' for the ids.")
    click.echo(f"{rule.id} {rule.name} ({rule.category}, {rule.severity}, per {rule.scope})")
    click.echo(f"\n{rule.summary}\n\nWhy it is bad\n{rule.rationale}")
    if rule.explain:
        click.echo(f"\nHow it is measured\n{rule.explain}")
    click.echo(f"\nFires when\n  {rule.condition_text()}\nwhere")
    for name in rule.signals():
        entry = REGISTRY[name]
        click.echo(f"  {name} ({entry.unit}): {entry.doc}")
    click.echo(f"\nLikely causes checked: {', '.join(rule.causes) or 'none'}")
    click.echo(f"Fixes the search tries: {', '.join(rule.fixes)}")
    click.echo(f"Defined in {rule.source}")


@rules.command("signals")
@_debug_option
def rules_signals():
    """List the signals rule conditions can use, with unit and scope."""
    from .analysis.signals import REGISTRY

    for entry in REGISTRY.values():
        click.echo(f"{entry.name} [{entry.scope}, {entry.unit}]")
        click.echo(f"    {entry.doc}")


@main_group.command()
@_debug_option
@click.argument("diagnosis_json", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, metavar="PATH", help="The HTML file to write.")
@click.option("--force", is_flag=True, help="Replace the output file if it exists.")
def report(diagnosis_json, output, force):
    """Render DIAGNOSIS_JSON (from 'diagnose --format json') as an HTML report.

    Needs no TensorFlow: the report is drawn from the saved measurements.
    """
    import json
    from pathlib import Path

    from .analysis.diagnosis import SCHEMA, Diagnosis, schema_problem
    from .files import check_output_path

    source = Path(diagnosis_json)
    if not source.exists():
        raise UsageError(f"The diagnosis file '{source}' does not exist. Check the path.")
    if source.is_dir():
        raise UsageError(f"The diagnosis file '{source}' is a folder. Pass the JSON file written by "
                         "'gradadvisor diagnose --format json'.")
    check_output_path(output, force=force, suffix=".html", inputs=[source])
    if source.stat().st_size > MAX_DIAGNOSIS_BYTES:
        raise UsageError(f"The diagnosis file '{source}' is {source.stat().st_size} bytes, more than a diagnosis "
                         f"ever is ({MAX_DIAGNOSIS_BYTES // 2**20} MiB). Pass the output of 'gradadvisor diagnose "
                         "--format json'.")
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"The diagnosis file '{source}' is not valid JSON ({quote(str(exc))}). Pass the "
                         "output of 'gradadvisor diagnose --format json'.") from None
    except RecursionError:
        raise UsageError(f"The diagnosis file '{source}' nests too deeply to be a diagnosis. Pass the output of "
                         "'gradadvisor diagnose --format json'.") from None
    except OSError as exc:
        raise UsageError(f"The diagnosis file '{source}' cannot be read ({quote(exc.strerror or str(exc))}). "
                         "Check its permissions.") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise UsageError(f"The diagnosis file '{source}' is not a gradadvisor diagnosis (expected schema "
                         f"'{SCHEMA}'). Pass the JSON written by 'gradadvisor diagnose --format json'.")
    problem = schema_problem(data)
    if problem:
        raise UsageError(f"The diagnosis file '{source}' does not follow the schema {SCHEMA}: {problem}. Pass "
                         "the JSON written by 'gradadvisor diagnose --format json', unedited.")
    diagnosis = Diagnosis.from_dict(data, validate=False)
    diagnosis.save_html(output, force=force)
    click.echo(f"report written to {output}")


def _one_line(message: str) -> str:
    """A message on one line, its middle cut if a quoted value made it longer than a line should be."""
    message = " ".join(message.split())
    # Control characters from a file name must not reach the terminal (colours, cursor moves).
    message = "".join(char if char.isprintable() else repr(char)[1:-1] for char in message)
    if len(message) > MAX_MESSAGE:
        half = MAX_MESSAGE // 2
        message = f"{message[:half]} ... {message[-half:]}"
    return message


def main(argv=None) -> int:
    """Entry point of the console script: one-line errors, documented exit codes.

    SIGTERM and SIGHUP (what ``kill``, ``timeout`` and CI cancellation send)
    are handled like Ctrl-C: temporary files are removed, a search still
    reports its best trial, and the exit code is 128 + the signal's number.
    """
    _received.clear()
    handlers = {}
    show = warnings.showwarning
    warnings.showwarning = _show_warning
    if threading.current_thread() is threading.main_thread():
        for number in _STOP_SIGNALS:
            # An ignored signal stays ignored: 'nohup gradadvisor ...' must survive the terminal closing.
            if signal.getsignal(number) is not signal.SIG_IGN:
                handlers[number] = signal.signal(number, _on_stop_signal)
    try:
        return _main(argv)
    finally:
        warnings.showwarning = show
        for number, handler in handlers.items():
            signal.signal(number, handler)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """A warning as one line on stderr, like errors; --debug keeps Python's own format."""
    click.echo(f"gradadvisor: warning: {_one_line(str(message))}", err=True)


def _main(argv) -> int:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        code = main_group.main(args=argv, prog_name="gradadvisor", standalone_mode=False)
    except click.exceptions.Exit as done:
        return done.exit_code
    except click.exceptions.Abort:
        click.echo("gradadvisor: interrupted.", err=True)
        return _interrupted_code()
    except click.ClickException as exc:
        if debug:
            raise
        click.echo(f"gradadvisor: error: {_one_line(exc.format_message())}", err=True)
        return exc.exit_code if exc.exit_code else EXIT_BAD_INPUT
    except GradAdvisorError as exc:
        if debug:
            raise
        click.echo(f"gradadvisor: error: {_one_line(str(exc))}", err=True)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        click.echo("gradadvisor: interrupted.", err=True)
        return _interrupted_code()
    except Exception as exc:  # a bug: one line, and how to get the details
        if debug:
            raise
        click.echo(f"gradadvisor: internal error: {type(exc).__name__}: {_one_line(str(exc))}. Rerun with --debug "
                   "for the traceback and report it.", err=True)
        return EXIT_INTERNAL
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
