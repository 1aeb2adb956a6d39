"""The self-contained HTML report: one file, readable offline, on paper and on a phone.

:func:`render_html` turns a :class:`~gradadvisor.Diagnosis` (or one
rebuilt from its JSON) into HTML text.  Everything the page needs is inside it:
the CSS is inline, the charts are inline SVG from :mod:`.plots`, and there are
no scripts, fonts, images or links to anything outside the file.  A
Content-Security-Policy ``<meta>`` makes the browser enforce that too, so even
a name that slipped past escaping could neither run nor load anything.

The templates (``templates/*.html``, shipped as package data) autoescape every
value; this module only prepares plain values for them: numbers formatted,
non-finite values spelled out, the recommendation's optional parts filled in.
Nothing here imports TensorFlow, so a saved JSON diagnosis renders anywhere.
"""

from __future__ import annotations

import functools
import math

import markupsafe

from . import plots

#: A finding names at most this many layers and counts the rest, so a finding
#: on a 200-layer model stays a paragraph.
_MAX_NAMED_LAYERS = 8
_SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}
_STATUS_LABEL = {"healthy": "Healthy", "warning": "Warning", "error": "Error"}
_FIX_LABELS = {
    "initializer": "a variance-preserving initializer",
    "activation": "a non-saturating activation",
    "normalization": "normalization layers",
    "clipping": "gradient clipping",
    "learning_rate": "a lower learning rate",
    "recurrence": "an IRNN recurrence (ReLU units, identity recurrent matrix)",
}
#: The packages whose versions decide the result: listed even when unknown.
_ALWAYS_VERSIONED = ("gradadvisor", "tensorflow", "keras", "keras-tuner")
#: Versions named in the footer, in this order, with the names people know them by.
_VERSION_NAMES = (("gradadvisor", "gradadvisor"), ("tensorflow", "TensorFlow"),
                  ("keras", "Keras"), ("keras-tuner", "Keras Tuner"), ("python", "Python"),
                  ("numpy", "NumPy"), ("scikit-learn", "scikit-learn"))
_SETUP_FIELDS = (("initializer", "Initializer"), ("activation", "Activation"),
                 ("normalization", "Normalization"), ("clipping", "Clipping"),
                 ("clip_threshold", "Clip threshold"),
                 ("learning_rate_scale", "Learning-rate scale"))


def render_html(diagnosis, training: dict | None = None) -> str:
    """Render a diagnosis as one self-contained HTML page.

    The page opens with the verdict and the sentence a manager needs, then
    explains each finding with its evidence and likely causes, shows the
    gradient flow, the gradient through time for recurrent layers, the loss,
    dead or saturated units, a per-layer table, the recommendation with its
    before/after confirmation, and how to reproduce the run.

    Args:
        diagnosis: A :class:`~gradadvisor.Diagnosis`, for example
            from :func:`gradadvisor.diagnose` or ``Diagnosis.from_json``.
        training: What a recovering :class:`~gradadvisor.GradientMonitor`
            recorded (``loss_steps``, ``loss``, ``recoveries``,
            ``snapshot_bytes``, ``stop_reason``): adds the "Recoveries"
            section. None (the default) leaves it out.

    Returns:
        The HTML text. The same diagnosis always gives the same text, also
        after a round trip through ``to_json``/``from_json``.

    Example:
        >>> from gradadvisor import Diagnosis
        >>> diagnosis = Diagnosis.from_json(open("diagnosis.json").read())
        >>> html = render_html(diagnosis)
        >>> html.startswith("<!doctype html>")
        True
    """
    from .recovery import recovery_context

    template = _environment().get_template("report.html")
    return template.render(**_context(diagnosis), recovery=recovery_context(training, format_number))


#: Height of the report's frame in a notebook; the page scrolls inside it.
NOTEBOOK_FRAME_HEIGHT = 720


def render_notebook_html(diagnosis) -> str:
    """The HTML report framed for a notebook cell (Jupyter's ``_repr_html_``).

    The page goes into a sandboxed ``<iframe srcdoc>``: its styles cannot
    restyle the notebook, and the sandbox (no ``allow-scripts``) keeps the
    report's promise that nothing in it runs.
    """
    page = markupsafe.escape(render_html(diagnosis))
    return (f'<iframe srcdoc="{page}" sandbox title="gradadvisor report" '
            f'style="width: 100%; height: {NOTEBOOK_FRAME_HEIGHT}px; border: 1px solid #d1d5db; '
            'border-radius: 8px;"></iframe>')


@functools.lru_cache(maxsize=1)
def _environment():
    import jinja2

    # PackageLoader reads the templates from the installed package (package
    # data), so a wheel install renders exactly like a checkout.  StrictUndefined
    # turns a misspelt template variable into an error instead of a blank.
    return jinja2.Environment(
        loader=jinja2.PackageLoader("gradadvisor.report", "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True)


# --------------------------------------------------------------------------
# Formatting

def _to_float(value):
    """A float from a number, a NumPy scalar or the ``"nan"``/``"inf"`` strings of
    the JSON form (recommendations come back from JSON with those); else None."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def format_number(value, digits: int = 3) -> str:
    """A number as people read it: ``3.58e-4``, ``0.23``, ``1,204``, ``NaN``, ``∞``.

    Args:
        value: An int, float, numeric string (``"nan"``, ``"inf"``) or None.
        digits: Significant digits.

    Returns:
        The text: ``—`` for None, ``yes``/``no`` for booleans, and any other
        non-number as it is.
    """
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    number = _to_float(value)
    if number is None:
        return "—" if value is None else str(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "∞" if number > 0 else "−∞"
    if number == 0:
        return "0"
    magnitude = abs(number)
    if magnitude >= 1e5 or magnitude < 1e-3:
        mantissa, exponent = f"{number:.{digits - 1}e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    if number.is_integer():
        return f"{int(number):,}"
    decimals = max(0, digits - 1 - int(math.floor(math.log10(magnitude))))
    text = f"{number:,.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def format_percent(value) -> str:
    """A fraction as a percentage (``0.5625`` → ``56%``); ``—`` for None."""
    number = _to_float(value)
    if number is None:
        return "—"
    if not math.isfinite(number):
        return format_number(number)
    percent = number * 100
    if 0 < percent < 1:
        return "<1%"
    return f"{percent:.0f}%"


def _words(name) -> str:
    """``vanishing_gradients`` or ``vanishing-gradients`` as ``Vanishing gradients``."""
    text = str(name).replace("_", " ").replace("-", " ").strip()
    return text[:1].upper() + text[1:]


def _paragraphs(text: str) -> list:
    """Hard-wrapped text (as in rule files) as a list of paragraphs."""
    blocks = [" ".join(block.split()) for block in str(text or "").split("\n\n")]
    return [block for block in blocks if block]


def _short_list(names, limit: int = _MAX_NAMED_LAYERS) -> dict:
    names = [str(name) for name in names]
    return {"shown": names[:limit], "more": max(0, len(names) - limit)}


# --------------------------------------------------------------------------
# The page's data

def _context(diagnosis) -> dict:
    from .._version import __version__

    probe = diagnosis.probe
    rows = diagnosis.layer_table()
    findings = sorted(diagnosis.findings, key=lambda f: _SEVERITY_ORDER.get(f.severity, 3))
    status = diagnosis.status
    return {
        "generator": __version__,
        "status": status,
        "status_label": _STATUS_LABEL[status],
        "headline": diagnosis.headline(),
        "model": {
            "name": probe.model_name, "class_name": probe.model_class,
            "num_params": format_number(int(probe.num_params)), "num_layers": len(probe.layers),
        },
        "steps_run": probe.steps_run,
        "num_steps": probe.num_steps,
        "findings": [_finding(finding) for finding in findings],
        "num_rules": len(diagnosis.rules_used),
        "charts": _charts(diagnosis, rows),
        "layers": _layer_rows(rows),
        "recommendation": _recommendation(diagnosis),
        "reproduce": _reproduce(diagnosis),
    }


def _signal_info(name: str) -> dict:
    from ..analysis.signals import REGISTRY

    entry = REGISTRY.get(name)
    return {"unit": entry.unit if entry else "", "doc": entry.doc if entry else ""}


def _evidence_value(name: str, value) -> str:
    if _signal_info(name)["unit"].startswith("flag") and _to_float(value) in (0.0, 1.0):
        return "yes" if _to_float(value) == 1.0 else "no"
    return format_number(value)


def _finding(finding) -> dict:
    evidence = dict(finding.evidence or {})
    per_layer = evidence.pop("per_layer", None) or {}
    primary = next(iter(evidence), None)
    return {
        "rule": finding.rule,
        "title": _words(finding.name),
        "severity": finding.severity,
        "category": _words(finding.category),
        "message": finding.message,
        "explanation": _paragraphs(finding.explanation),
        "first_layer": finding.first_layer,
        "layers": _short_list(finding.layers),
        "num_layers": len(finding.layers),
        "evidence": [{"name": name, "value": _evidence_value(name, value), **_signal_info(name)}
                     for name, value in evidence.items()],
        "per_layer": {
            "signal": primary,
            "rows": [{"layer": layer, "value": _evidence_value(primary or "", value),
                      "first": layer == finding.first_layer}
                     for layer, value in per_layer.items()],
        },
        "causes": [{"title": _words(item.get("cause", "")), "reason": item.get("reason", "")}
                   for item in finding.causes or []],
        "fixes": [_FIX_LABELS.get(fix, _words(fix)) for fix in finding.fixes or []],
    }


def _charts(diagnosis, rows) -> dict:
    probe = diagnosis.probe
    problems: dict = {}
    for finding in diagnosis.at_least("warning"):
        if finding.first_layer:
            problems.setdefault(finding.first_layer, []).append(finding.rule)
    through_time = []
    for info in probe.layers:
        if info.recurrent and info.name in probe.timestep_grad_norms:
            chart = plots.gradient_through_time_chart(probe, info.name)
            if chart is not None:
                through_time.append({"layer": info.name, "chart": chart})
    recurrent = [info.name for info in probe.layers if info.recurrent]
    return {
        "flow": plots.gradient_flow_chart(probe, problems),
        "problem_layers": list(problems),
        "through_time": through_time,
        "recurrent_layers": recurrent,
        "loss": plots.loss_chart(probe),
        "units": plots.units_chart(rows),
        "units_measured": any(row.get("dead_fraction") is not None
                              or row.get("saturated_fraction") is not None for row in rows),
        "nonfinite": _nonfinite(probe.nonfinite),
    }


def _nonfinite(nonfinite) -> dict | None:
    if not nonfinite:
        return None
    return {
        "step": nonfinite.get("step"),
        "where": nonfinite.get("where", "values"),
        "gradients": _short_list(nonfinite.get("layers_with_nonfinite_gradients") or []),
        "outputs": _short_list(nonfinite.get("layers_with_nonfinite_outputs") or []),
    }


def _layer_rows(rows) -> list:
    return [{
        "name": row["name"], "class_name": row["class_name"],
        "activation": row.get("activation") or "linear",
        "num_params": format_number(int(row.get("num_params") or 0)),
        "grad_rms": format_number(row.get("grad_rms")),
        "ratio": format_number(row.get("grad_rms_ratio_to_output")),
        "update_ratio": format_number(row.get("update_ratio")),
        "dead": format_percent(row.get("dead_fraction")),
        "saturated": format_percent(row.get("saturated_fraction")),
        "rules": row.get("rules") or [],
    } for row in rows]


def _setup_items(setup: dict) -> list:
    items = []
    for key, label in _SETUP_FIELDS:
        value = (setup or {}).get(key)
        if value is None or (key == "learning_rate_scale" and _to_float(value) == 1.0):
            continue
        if key == "learning_rate_scale":
            value = f"× {format_number(value)}"
        elif not isinstance(value, str):
            value = format_number(value)
        items.append({"label": label, "value": value})
    return items


def _setup_text(setup: dict) -> str:
    items = _setup_items(setup)
    return ", ".join(f"{item['label'].lower()} {item['value']}" for item in items) or "unchanged"


def _run(run: dict, metric_name) -> dict:
    run = run or {}
    losses = [_to_float(v) for v in run.get("loss") or []]
    finite = [v for v in losses if v is not None and math.isfinite(v)]
    last = losses[-1] if losses else None
    return {
        "first_loss": format_number(losses[0] if losses else None),
        "last_loss": format_number(last),
        "best_loss": format_number(min(finite) if finite else None),
        "val_loss": format_number(run.get("val_loss")),
        "val_metric": format_number(run.get("val_metric")) if metric_name else None,
        "status": run.get("status") or "—",
    }


def _recommendation(diagnosis) -> dict:
    recommendation = diagnosis.recommendation
    if not recommendation:
        return {"ran": False, "healthy": diagnosis.status == "healthy"}
    confirmation = recommendation.get("confirmation") or {}
    metric_name = confirmation.get("metric_name")
    budget = recommendation.get("budget") or {}
    trials = sorted(recommendation.get("trials") or [],
                    key=lambda t: (t.get("rank") is None, t.get("rank") or 0))
    return {
        "ran": True,
        "recommended": bool(recommendation.get("recommended")),
        "reason": recommendation.get("reason") or "",
        "setup": _setup_items(recommendation.get("setup") or {}),
        "dimensions": [{"name": _words(d.get("name", "")),
                        "tried": ", ".join("none" if v is None else str(v)
                                            for v in d.get("values") or []),
                        "opened_by": ", ".join(d.get("opened_by") or [])}
                       for d in recommendation.get("dimensions") or []],
        "changes": [{"layer": c.get("layer", ""), "change": c.get("change", ""),
                     "before": c.get("from"), "after": c.get("to", "")}
                    for c in recommendation.get("changes") or []],
        "snippet": recommendation.get("snippet") or "",
        "trials": [{"rank": t.get("rank"), "trial": t.get("trial", ""),
                    "setup": _setup_text(t.get("setup") or {}),
                    "score": format_number(t.get("score")),
                    "status": t.get("status") or "—",
                    "val_loss": format_number(t.get("val_loss")),
                    "findings": ", ".join(t.get("findings") or []) or "none",
                    "seconds": format_number(t.get("seconds"), 2)}
                   for t in trials],
        "confirmation": {
            "present": bool(confirmation),
            "steps": confirmation.get("steps"),
            "seed": confirmation.get("seed"),
            "metric_name": metric_name,
            "improved": bool(confirmation.get("improved")),
            "original": _run(confirmation.get("original"), metric_name),
            "recommended": _run(confirmation.get("recommended"), metric_name),
            "chart": plots.confirmation_chart(confirmation) if confirmation else None,
        },
        "fixed_model_path": recommendation.get("fixed_model_path"),
        "budget": {
            "max_trials": budget.get("max_trials"),
            "trial_steps": budget.get("trial_steps"),
            "tuner": budget.get("tuner"),
            "seconds_used": format_number(budget.get("seconds_used"), 2)
            if budget.get("seconds_used") is not None else None,
            "time_budget": format_number(budget.get("time_budget"))
            if budget.get("time_budget") is not None else None,
            # A budget the search sized itself counts CPU seconds; one the user gave, wall seconds.
            "time_unit": "CPU s" if budget.get("clock") == "cpu" else "s",
        } if budget else None,
    }


def _reproduce(diagnosis) -> dict:
    probe = diagnosis.probe
    versions = dict(diagnosis.versions or {})
    listed = [{"name": label, "version": versions.get(key) or "not installed"}
              for key, label in _VERSION_NAMES if key in versions or key in _ALWAYS_VERSIONED]
    known = {key for key, _ in _VERSION_NAMES}
    listed += [{"name": key, "version": value or "not installed"}
               for key, value in sorted(versions.items()) if key not in known]
    optimizer = dict(probe.optimizer or {})
    clipping = ", ".join(f"{key} {format_number(optimizer[key])}"
                         for key in ("clipnorm", "clipvalue", "global_clipnorm")
                         if optimizer.get(key) is not None)
    return {
        "command": diagnosis.command,
        "model_path": diagnosis.model_path,
        "versions": listed,
        "seed": probe.seed,
        "steps_run": probe.steps_run,
        "num_steps": probe.num_steps,
        "batch_size": probe.batch_size,
        "data_source": probe.data_source,
        "loss_name": probe.loss_name,
        "loss_inferred": probe.loss_inferred,
        "optimizer": {
            "name": optimizer.get("name") or "unknown",
            "learning_rate": format_number(optimizer.get("learning_rate")),
            "clipping": clipping,
            "inferred": bool(optimizer.get("inferred")),
        },
        "copy_mode": probe.copy_mode,
        "seconds": format_number(probe.seconds, 2),
        "rules_used": diagnosis.rules_used,
        "notes": list(probe.notes or []),
    }
