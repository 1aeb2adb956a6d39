"""Analysis: from the probe's measurements to findings.

:mod:`.signals` derives named, documented numbers from a
:class:`~gradadvisor.probe.ProbeResult`; :mod:`.engine` loads the YAML rules of
the top-level ``rules/`` folder and evaluates their conditions over those
signals; :mod:`.causes` names the likely causes of a finding from the model's
own layers; :mod:`.diagnosis` holds the result as plain data with its JSON form.
"""

from __future__ import annotations

from .diagnosis import SCHEMA, Diagnosis, Finding, versions
from .engine import Rule, builtin_rules_dir, evaluate, load_rule_file, load_rules, select_rules
from .signals import REGISTRY, evaluate_signals

__all__ = ["Diagnosis", "Finding", "SCHEMA", "versions", "Rule", "load_rules", "load_rule_file",
           "builtin_rules_dir", "select_rules", "evaluate", "REGISTRY", "evaluate_signals"]

# Public classes show the path users import them from.
Diagnosis.__module__ = "gradadvisor"
Finding.__module__ = "gradadvisor"
