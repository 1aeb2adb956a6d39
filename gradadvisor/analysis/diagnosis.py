"""The result of a diagnosis, as plain data with one renderer per format.

A :class:`Diagnosis` holds the probe's measurements, the findings the rules
produced and, when a search ran, the recommendation.  It serialises to the
fixed JSON schema ``gradadvisor.diagnosis/1`` and back, so the report can be
re-rendered from a saved JSON file without TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np

from ..probe import LayerInfo, ProbeResult

SCHEMA = "gradadvisor.diagnosis/1"
_RANK = {"error": 0, "warning": 1, "info": 2}
#: When several categories are found, the one reported as the main problem.
CATEGORY_PRIORITY = ("no_learning_signal", "output_config", "exploding_gradients", "nonfinite",
                     "vanishing_gradients", "dead_units", "saturated_units", "large_updates",
                     "slow_updates")


@dataclasses.dataclass
class Finding:
    """One rule that fired: what is wrong, where, how sure, and why.

    Attributes:
        rule: The rule id, e.g. ``GA101``.
        name: The rule's kebab-case name.
        category: One of the fixed categories (``vanishing_gradients``, ...).
        severity: ``error``, ``warning`` or ``info``.
        layers: Every layer the condition held for, input to output.
        first_layer: The layer where the problem starts, or None if model-wide.
        message: The filled-in one-line message.
        summary: The rule's one-line summary.
        explanation: Why this is bad, in plain language.
        evidence: The signal values that triggered it (``per_layer`` too).
        causes: ``[{"cause", "reason"}]`` that hold for this model.
        fixes: The kinds of fix the search should try.
    """

    rule: str
    name: str
    category: str
    severity: str
    layers: list
    first_layer: str | None
    message: str
    summary: str = ""
    explanation: str = ""
    evidence: dict = dataclasses.field(default_factory=dict)
    causes: list = dataclasses.field(default_factory=list)
    fixes: list = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Diagnosis:
    """Findings over one probe, plus an optional recommendation.

    Use :attr:`status` for the verdict, :attr:`findings` for details,
    :meth:`to_json` for machines and :meth:`save_html` for people.

    Example:
        >>> diagnosis = gradadvisor.diagnose("model.keras")
        >>> diagnosis.status
        'error'
        >>> diagnosis.save_html("report.html")
    """

    probe: ProbeResult
    findings: list
    recommendation: dict | None = None
    model_path: str | None = None
    command: str | None = None
    versions: dict = dataclasses.field(default_factory=dict)
    rules_used: list = dataclasses.field(default_factory=list)

    @property
    def status(self) -> str:
        """``error``, ``warning`` or ``healthy`` (info findings do not count)."""
        severities = {f.severity for f in self.findings}
        if "error" in severities:
            return "error"
        if "warning" in severities:
            return "warning"
        return "healthy"

    @property
    def categories(self) -> list:
        """Categories of the warning and error findings, main problem first."""
        found = {f.category for f in self.findings if f.severity in ("error", "warning")}
        return [c for c in CATEGORY_PRIORITY if c in found]

    @property
    def primary_category(self) -> str | None:
        """The main problem's category (``None`` when healthy)."""
        categories = self.categories
        return categories[0] if categories else None

    def at_least(self, severity: str) -> list:
        """Findings at or above ``severity``."""
        limit = _RANK[severity]
        return [f for f in self.findings if _RANK[f.severity] <= limit]

    def headline(self) -> str:
        """The one sentence a manager needs."""
        if self.status == "healthy":
            return (f"Gradients flow normally through {self.probe.model_name}: no problem found in "
                    f"{self.probe.steps_run} training steps.")
        main = next(f for f in self.findings if f.category == self.primary_category)
        where = f" starting at layer {main.first_layer}" if main.first_layer else ""
        text = _CATEGORY_TEXT[main.category]
        fix = " A tested fix is recommended below." if self.recommendation and \
            self.recommendation.get("recommended") else ""
        return f"{self.probe.model_name} {text}{where}: it will train poorly or not at all.{fix}"

    def layer_table(self) -> list:
        """One summary row per layer, input to output."""
        from .signals import evaluate_signals

        rows = []
        for info in self.probe.layers:
            names = ["grad_rms", "grad_rms_ratio_to_output", "update_ratio", "dead_fraction",
                     "saturated_fraction"]
            values = evaluate_signals(self.probe, names, info)
            flagged = sorted({f.rule for f in self.findings if info.name in f.layers})
            rows.append({
                "name": info.name, "class_name": info.class_name, "index": info.index,
                "activation": info.activation, "num_params": info.num_params,
                "recurrent": info.recurrent, **values, "rules": flagged,
            })
        return rows

    def to_dict(self) -> dict:
        """The fixed JSON schema ``gradadvisor.diagnosis/1`` as a dict."""
        from ..jsonsafe import jsonable

        probe = self.probe
        return jsonable({
            "schema": SCHEMA,
            "status": self.status,
            "headline": self.headline(),
            "model": {
                "name": probe.model_name, "class": probe.model_class, "path": self.model_path,
                "num_params": probe.num_params, "num_layers": len(probe.layers),
            },
            "probe": probe.to_dict(),
            "findings": [f.to_dict() for f in self.findings],
            "layers": self.layer_table(),
            "recommendation": self.recommendation,
            "command": self.command,
            "versions": self.versions,
            "rules_used": self.rules_used,
        })

    def to_json(self, indent: int | None = 2) -> str:
        """The JSON text of :meth:`to_dict` (NaN and infinities as strings)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict, validate: bool = True) -> "Diagnosis":
        """Rebuild a diagnosis from :meth:`to_dict` output (no TensorFlow needed).

        The document is checked against ``diagnosis.schema.json`` first (unless
        ``validate`` is False because the caller just did), so a malformed one
        is refused with the place and the problem.

        Raises:
            UsageError: ``data`` is not a diagnosis, or breaks the schema.
        """
        from ..errors import UsageError

        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise UsageError(
                f"This is not a gradadvisor diagnosis (expected schema '{SCHEMA}'). Pass the "
                "JSON written by 'gradadvisor diagnose --format json'.")
        problem = schema_problem(data) if validate else None
        if problem:
            raise UsageError(
                f"This diagnosis does not follow the schema {SCHEMA}: {problem}. Pass the JSON written by "
                "'gradadvisor diagnose --format json', unedited.")
        fields = {f.name for f in dataclasses.fields(Finding)}
        findings = [Finding(**{k: v for k, v in f.items() if k in fields}) for f in data["findings"]]
        # Fields a newer version added are skipped, as the schema allows them.
        probe_fields = {f.name for f in dataclasses.fields(ProbeResult)} | {"schema"}
        layer_fields = {f.name for f in dataclasses.fields(LayerInfo)}
        probe = {k: v for k, v in data["probe"].items() if k in probe_fields}
        probe["layers"] = [{k: v for k, v in layer.items() if k in layer_fields} for layer in probe["layers"]]
        return cls(
            probe=ProbeResult.from_dict(probe), findings=findings,
            recommendation=data.get("recommendation"), model_path=data["model"].get("path"),
            command=data.get("command"), versions=data.get("versions") or {},
            rules_used=data.get("rules_used") or [])

    @classmethod
    def from_json(cls, text: str) -> "Diagnosis":
        return cls.from_dict(json.loads(text))

    def to_text(self, color: bool = False) -> str:
        """A short terminal summary: verdict, findings, what to do."""
        from ..report.text import render_text

        return render_text(self, color=color)

    def save_html(self, path, force: bool = True) -> None:
        """Write the self-contained HTML report to ``path`` (atomically)."""
        from ..files import check_output_path, write_text_atomic
        from ..report.html import render_html

        path = check_output_path(path, force=force)
        write_text_atomic(path, render_html(self))

    def _repr_html_(self) -> str:
        """The HTML report, inline in a Jupyter notebook cell."""
        from ..report.html import render_notebook_html

        return render_notebook_html(self)


_CATEGORY_TEXT = {
    "vanishing_gradients": "has vanishing gradients",
    "exploding_gradients": "has exploding gradients",
    "nonfinite": "produces NaN or infinite values in training",
    "dead_units": "has dead ReLU units",
    "saturated_units": "has saturated units",
    "slow_updates": "barely updates some of its weights",
    "large_updates": "makes updates as large as its weights",
    "no_learning_signal": "gets no learning signal (its gradients are all zero or its loss cannot move)",
    "output_config": "has an output layer and a loss that do not fit together",
}


def schema_problem(document) -> str | None:
    """The first way ``document`` breaks ``diagnosis.schema.json``, in words; None if it follows it."""
    from pathlib import Path

    import jsonschema

    from ..errors import quote

    schema = json.loads((Path(__file__).resolve().parent.parent / "diagnosis.schema.json").read_text("utf-8"))
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(document))
    if error is None:
        return None
    where = "/".join(str(part) for part in error.absolute_path) or "the top level"
    return f"at {quote(where, 60)}, {quote(error.message, 160)}"


def versions() -> dict:
    """Versions of gradadvisor and the libraries it ran with."""
    import importlib.metadata as metadata
    import platform

    found = {"python": platform.python_version()}
    for package in ("gradadvisor", "tensorflow", "keras", "keras-tuner", "numpy", "scikit-learn"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found
