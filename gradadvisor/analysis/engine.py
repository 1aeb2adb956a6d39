"""The rule engine: rules are data, evaluated over named signals.

Rules live as YAML files, one per rule, in the top-level ``rules/`` folder
(installed as ``gradadvisor.rules``).  They are read with ``yaml.safe_load``
semantics, validated against a small schema, and evaluated without ``eval``:
a condition is a tree of ``all``/``any``/``not`` over comparisons
``{signal, op, value}``.  Any problem in a rule file is a
:class:`~gradadvisor.errors.RuleError` naming the file, the line and the rule id.

A user folder (``--rules DIR``) adds rules or replaces built-in ones by id.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import re
import string
from pathlib import Path
from typing import Any

import yaml

from ..errors import RuleError, quote
from ..jsonsafe import jsonable

CATEGORIES = ("vanishing_gradients", "exploding_gradients", "nonfinite", "dead_units",
              "saturated_units", "slow_updates", "large_updates", "no_learning_signal", "output_config")
SEVERITIES = ("error", "warning", "info")
SCOPES = ("model", "layer", "timestep")
FIXES = ("initializer", "activation", "normalization", "clipping", "learning_rate", "recurrence",
         "output")
LOCATE = ("input_side", "output_side", "largest", "smallest", "nonfinite_origin")
OPERATORS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
             "==": operator.eq, "!=": operator.ne}
_REQUIRED = ("id", "name", "category", "severity", "scope", "summary", "rationale", "when",
             "message", "fixes", "examples")
_OPTIONAL = ("causes", "locate", "explain")
_ID = re.compile(r"^[A-Z]{2,5}[0-9]{3}$")
_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


@dataclasses.dataclass
class Rule:
    """One validated rule; see ``rules/README.md`` for the file format."""

    id: str
    name: str
    category: str
    severity: str
    scope: str
    summary: str
    rationale: str
    when: dict
    message: str
    fixes: list
    examples: list
    causes: list = dataclasses.field(default_factory=list)
    locate: str = "output_side"
    explain: str = ""
    source: str = ""

    def signals(self) -> list:
        """The signal names the condition uses, in order of appearance."""
        names: list = []
        _collect(self.when, names)
        return names

    def message_signals(self) -> list:
        """Registered signals the message names beyond those of the condition."""
        from .signals import REGISTRY

        fields = [f[1] for f in string.Formatter().parse(self.message) if f[1]]
        return [f for f in dict.fromkeys(fields) if f in REGISTRY and f not in self.signals()]

    def matches(self, values: dict) -> bool:
        """Whether the condition holds for these signal values."""
        return _holds(self.when, values)

    def condition_text(self) -> str:
        """The condition in words, for ``gradadvisor rules explain``."""
        return _describe(self.when)


def _collect(node, names):
    if "signal" in node:
        if node["signal"] not in names:
            names.append(node["signal"])
        return
    for key in ("all", "any"):
        for child in node.get(key, []):
            _collect(child, names)
    if "not" in node:
        _collect(node["not"], names)


def _holds(node, values) -> bool:
    if "all" in node:
        return all(_holds(child, values) for child in node["all"])
    if "any" in node:
        return any(_holds(child, values) for child in node["any"])
    if "not" in node:
        inner = node["not"]
        # "not" over an unknown value stays unknown, hence false.
        if "signal" in inner and values.get(inner["signal"]) is None:
            return False
        return not _holds(inner, values)
    value = values.get(node["signal"])
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return OPERATORS[node["op"]](value, _number(node["value"]))


def _number(value):
    if isinstance(value, str):
        return float(value)
    return value


def _is_number_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _describe(node) -> str:
    if "all" in node:
        return "(" + " and ".join(_describe(c) for c in node["all"]) + ")"
    if "any" in node:
        return "(" + " or ".join(_describe(c) for c in node["any"]) + ")"
    if "not" in node:
        return "not " + _describe(node["not"])
    return f"{node['signal']} {node['op']} {node['value']}"


# --------------------------------------------------------------------------
# Loading and validation

def builtin_rules_dir() -> Path:
    """The folder of the built-in rules, installed or in a checkout."""
    try:
        from importlib.resources import files

        folder = Path(str(files("gradadvisor.rules")))
        if any(folder.glob("*.yaml")):
            return folder
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parent.parent / "rules"


def load_rules(extra_dirs=(), *, builtin: bool = True) -> dict:
    """Load the built-in rules, then each folder in ``extra_dirs`` (by id, later wins).

    Returns:
        ``{rule_id: Rule}`` sorted by id.

    Raises:
        RuleError: a folder is missing, or a rule file is malformed.
    """
    folders = ([builtin_rules_dir()] if builtin else []) + [Path(d) for d in extra_dirs]
    rules: dict = {}
    for number, folder in enumerate(folders):
        if not folder.is_dir():
            raise RuleError(f"The rules folder '{folder}' does not exist. Pass a folder of .yaml rule files.")
        files = sorted(list(folder.glob("*.yaml")) + list(folder.glob("*.yml")))
        if number > 0 and builtin and not files or (not builtin and not files):
            raise RuleError(f"The rules folder '{folder}' holds no .yaml rule files.")
        seen_here: dict = {}
        for path in files:
            rule = load_rule_file(path)
            if rule.id in seen_here:
                raise RuleError(
                    f"{path}: rule {rule.id} is defined twice in one folder (also in "
                    f"{seen_here[rule.id]}). Give each rule its own id.")
            seen_here[rule.id] = path.name
            rules[rule.id] = rule
    return dict(sorted(rules.items()))


MAX_RULE_BYTES = 256 * 1024
"""A rule file is a page of text; anything far larger is refused unread."""
MAX_DEPTH = 32
"""Nesting a rule file may use; the built-in rules need 6."""


class _LineLoader(yaml.SafeLoader):
    """A safe loader that remembers the line of every mapping.

    It refuses anchors and aliases, which a rule never needs and which let a
    file of a few hundred bytes expand to gigabytes ("billion laughs"), and
    nesting deeper than :data:`MAX_DEPTH`, before building anything.
    """

    depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise _Refused(event.start_mark.line + 1, "uses a YAML anchor or alias (& or *), which rule files may "
                           "not use. Write each value out in full.")
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Refused(event.start_mark.line + 1, f"nests deeper than {MAX_DEPTH} levels. Flatten the "
                           "condition.")
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node, deep=False):
        mapping = super().construct_mapping(node, deep=deep)
        odd = [key for key in mapping if not isinstance(key, str)]
        if odd:
            raise _Refused(node.start_mark.line + 1, f"has the field name {quote(repr(odd[0]), 40)}, which is not "
                           "text. Name every field with a word (id, name, when, ...).")
        mapping["__line__"] = node.start_mark.line + 1
        mapping["__lines__"] = {
            key.value: key.start_mark.line + 1 for key, _ in node.value if hasattr(key, "value")}
        return mapping


class _Refused(Exception):
    def __init__(self, line, text):
        super().__init__(text)
        self.line, self.text = line, text


def load_rule_file(path) -> Rule:
    """Read and validate one rule file."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_RULE_BYTES:
            raise RuleError(f"{path}: the rule file is {size} bytes; a rule file holds at most "
                            f"{MAX_RULE_BYTES} bytes. Split it into one file per rule.")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleError(f"{path}: cannot read the rule file ({quote(str(exc))}). Save it as UTF-8 text.") from None
    try:
        data = yaml.load(text, Loader=_LineLoader)  # a SafeLoader subclass: no objects, no code
    except _Refused as exc:
        raise RuleError(f"{path}:{exc.line}: the rule file {exc.text}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RuleError(f"{path}{line}: not valid YAML ({quote(problem, 160)}). Fix the syntax.") from None
    if not isinstance(data, dict):
        raise RuleError(f"{path}:1: a rule file must hold a mapping of fields (id, name, when, ...).")
    return _validate(data, path)


def _fail(path, line, rule_id, text):
    where = f"{path}:{line}" if line else str(path)
    who = f" rule {rule_id}:" if rule_id else ""
    raise RuleError(f"{where}:{who} {text}")


def _validate(data: dict, path: Path) -> Rule:
    line = data.get("__line__", 1)
    lines = data.pop("__lines__", {})
    rule_id = data.get("id") if isinstance(data.get("id"), str) else None
    keys = [k for k in data if k != "__line__"]
    unknown = [k for k in keys if k not in _REQUIRED + _OPTIONAL]
    if unknown:
        _fail(path, lines.get(unknown[0], line), rule_id, f"unknown field '{quote(unknown[0], 40)}'. Allowed fields: "
              f"{', '.join(_REQUIRED + _OPTIONAL)}.")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        _fail(path, line, rule_id, f"missing field '{missing[0]}'.")
    if not rule_id or not _ID.match(rule_id):
        _fail(path, lines.get("id", line), rule_id, f"the id {quote(repr(data.get('id')), 40)} must be 2-5 capital letters and "
              "three digits, like GA101.")
    checks = [
        ("name", lambda v: isinstance(v, str) and _NAME.match(v), "a kebab-case name like vanishing-gradients"),
        ("category", lambda v: v in CATEGORIES, "one of " + ", ".join(CATEGORIES)),
        ("severity", lambda v: v in SEVERITIES, "one of " + ", ".join(SEVERITIES)),
        ("scope", lambda v: v in SCOPES, "one of " + ", ".join(SCOPES)),
        ("summary", lambda v: isinstance(v, str) and v.strip(), "a one-line text"),
        ("rationale", lambda v: isinstance(v, str) and v.strip(), "a text saying why this is bad"),
        ("message", lambda v: isinstance(v, str) and v.strip(), "a message template"),
        ("fixes", lambda v: isinstance(v, list) and all(f in FIXES for f in v),
         "a list drawn from " + ", ".join(FIXES)),
        ("causes", lambda v: isinstance(v, list) and all(isinstance(c, str) for c in v), "a list of cause names"),
        ("locate", lambda v: v in LOCATE, "one of " + ", ".join(LOCATE)),
        ("explain", lambda v: isinstance(v, str), "a text"),
    ]
    for key, ok, expected in checks:
        if key in data and not ok(data[key]):
            _fail(path, lines.get(key, line), rule_id, f"the field '{key}' must be {expected}; got {quote(repr(data[key]))}.")
    from .causes import CAUSES

    for name in data.get("causes", []):
        if name not in CAUSES:
            _fail(path, lines.get("causes", line), rule_id, f"unknown cause '{quote(name, 40)}'. Known causes: {', '.join(sorted(CAUSES))}.")
    when = _check_condition(data["when"], path, rule_id, data["scope"], lines.get("when", line))
    examples = _check_examples(data["examples"], path, rule_id, lines.get("examples", line), when)
    rule = Rule(
        id=rule_id, name=data["name"], category=data["category"], severity=data["severity"],
        scope=data["scope"], summary=data["summary"].strip(), rationale=data["rationale"].strip(),
        when=when, message=data["message"].strip(), fixes=list(data["fixes"]), examples=examples,
        causes=list(data.get("causes", [])), locate=data.get("locate", "output_side"),
        explain=str(data.get("explain", "")).strip(), source=str(path))
    _check_template(rule, path, lines.get("message", line))
    return rule


def _check_condition(node, path, rule_id, scope, line):
    from .signals import REGISTRY

    if not isinstance(node, dict):
        _fail(path, line, rule_id, "a condition must be a mapping with all, any, not, or signal/op/value.")
    line = node.get("__line__", line)
    keys = [k for k in node if k not in ("__line__", "__lines__")]
    if keys in (["all"], ["any"]):
        children = node[keys[0]]
        if not isinstance(children, list) or not children:
            _fail(path, line, rule_id, f"'{keys[0]}' must be a non-empty list of conditions.")
        return {keys[0]: [_check_condition(c, path, rule_id, scope, line) for c in children]}
    if keys == ["not"]:
        return {"not": _check_condition(node["not"], path, rule_id, scope, line)}
    if sorted(keys) != ["op", "signal", "value"]:
        _fail(path, line, rule_id, f"a condition must be all/any/not or exactly signal, op and value; "
              f"got fields {quote(', '.join(map(str, keys)) or '(none)')}.")
    name = node["signal"]
    if not isinstance(name, str):
        _fail(path, line, rule_id, f"the signal must be one name; got a {type(name).__name__}. Run 'gradadvisor "
              "rules signals' for the names.")
    if name not in REGISTRY:
        _fail(path, line, rule_id, f"unknown signal '{quote(name, 40)}'. Run 'gradadvisor rules signals' for the list.")
    allowed = {"model": ("model",), "layer": ("model", "layer"),
               "timestep": ("model", "layer", "timestep")}[scope]
    if REGISTRY[name].scope not in allowed:
        _fail(path, line, rule_id, f"the signal '{name}' is measured per {REGISTRY[name].scope}, "
              f"which a {scope}-scope rule cannot see.")
    if not isinstance(node["op"], str):
        _fail(path, line, rule_id, f"the operator must be one of {', '.join(OPERATORS)}; got a "
              f"{type(node['op']).__name__}.")
    if node["op"] not in OPERATORS:
        _fail(path, line, rule_id, f"unknown operator {quote(repr(node['op']), 20)}. Use one of {', '.join(OPERATORS)}.")
    value = node["value"]
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        _fail(path, line, rule_id, f"the value for '{name}' must be a number; got {quote(repr(value))}.")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            _fail(path, line, rule_id, f"the value for '{name}' must be a number; got {quote(repr(value))}.")
    return {"signal": name, "op": node["op"], "value": value}


def _check_examples(examples, path, rule_id, line, when):
    if not isinstance(examples, list) or not examples:
        _fail(path, line, rule_id, "'examples' must be a non-empty list of {signals: {...}, fires: true|false}.")
    checked = []
    fires_seen = set()
    for example in examples:
        if not isinstance(example, dict) or set(k for k in example if not k.startswith("__")) != {"signals", "fires"} \
                or not isinstance(example.get("signals"), dict) or not isinstance(example.get("fires"), bool):
            _fail(path, line, rule_id, "each example must have exactly 'signals' (a mapping) and "
                  "'fires' (true or false).")
        signals = {k: v for k, v in example["signals"].items() if not k.startswith("__")}
        for key, value in signals.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float, str))):
                _fail(path, example.get("__line__", line), rule_id,
                      f"example value for '{key}' must be a number or null; got {quote(repr(value))}.")
        for key, value in signals.items():
            if isinstance(value, str) and not _is_number_text(value):
                _fail(path, example.get("__line__", line), rule_id,
                      f"example value for '{quote(key, 40)}' must be a number or null; got {quote(repr(value))}.")
        signals = {k: (float(v) if isinstance(v, str) else v) for k, v in signals.items()}
        checked.append({"signals": signals, "fires": example["fires"]})
        fires_seen.add(example["fires"])
    if fires_seen != {True, False}:
        _fail(path, line, rule_id, "'examples' must include at least one case that fires and one that does not.")
    return checked


class _SafeFormatter(string.Formatter):
    """str.format without attribute or index access, so templates cannot reach objects."""

    def format_field(self, value, format_spec):
        if isinstance(value, float) and not math.isfinite(value):
            return "NaN" if math.isnan(value) else ("∞" if value > 0 else "-∞")
        return super().format_field(value, format_spec)

    def get_field(self, field_name, args, kwargs):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", field_name):
            raise KeyError(field_name)
        return kwargs[field_name], field_name


FORMATTER = _SafeFormatter()
TEMPLATE_FIELDS = ("layer", "layers", "num_layers", "value", "step")


def _check_template(rule: Rule, path, line):
    from .signals import REGISTRY

    visible = {"model": ("model",), "layer": ("model", "layer"),
               "timestep": ("model", "layer", "timestep")}[rule.scope]
    fields = {name: 1.0 for name, entry in REGISTRY.items() if entry.scope in visible}
    fields.update(layer="x", layers="x", num_layers=1, value=1.0, step=1)
    try:
        FORMATTER.format(rule.message, **fields)
    except KeyError as exc:
        _fail(path, line, rule.id, f"the message uses an unknown field {{{exc.args[0]}}}. Use "
              f"{', '.join(TEMPLATE_FIELDS)} or the rule's own signals.")
    except (ValueError, IndexError) as exc:
        _fail(path, line, rule.id, f"the message template is malformed ({exc}).")


def format_message(rule: Rule, fields: dict) -> str:
    """Fill the rule's message; missing numbers show as 'n/a'."""
    safe = {k: ("n/a" if v is None else v) for k, v in fields.items()}
    try:
        return FORMATTER.format(rule.message, **safe)
    except (KeyError, ValueError, TypeError):
        plain = {k: (f"{v:.3g}" if isinstance(v, float) else v) for k, v in safe.items()}
        return re.sub(r"\{(\w+)(:[^}]*)?\}", lambda m: str(plain.get(m.group(1), "n/a")), rule.message)


# --------------------------------------------------------------------------
# Evaluation

def evaluate(probe, rules: dict) -> list:
    """Run every rule over a probe and return the findings, most severe first."""
    from .diagnosis import Finding
    from .signals import REGISTRY, evaluate_signals
    from .causes import explain_causes

    cache: dict = {}
    # Only the model signals some rule reads, and the step every message may name.
    model_names = {"nonfinite_step"} | {n for rule in rules.values() for n in rule.signals() + rule.message_signals()
                                        if REGISTRY[n].scope == "model"}
    model_values = evaluate_signals(probe, sorted(model_names), cache=cache)
    findings = []
    for rule in rules.values():
        names = [n for n in rule.signals() if REGISTRY[n].scope != "model"]
        if rule.scope == "model":
            candidates = [(None, dict(model_values))]
        else:
            layers = probe.layers if rule.scope == "layer" else [i for i in probe.layers if i.recurrent]
            candidates = [(info, {**model_values, **evaluate_signals(probe, names, info, cache)})
                          for info in layers]
        matched = [(info, values) for info, values in candidates if rule.matches(values)]
        if not matched:
            continue
        first_info, first_values = _locate(rule, matched, probe)
        primary = rule.signals()[0]
        layer_infos = [info for info, _ in matched if info is not None]
        if rule.scope == "model" and first_info is not None:
            layer_infos = [first_info]
        fields = dict(first_values)
        if rule.scope != "model":
            # Signals only the message names, for the one layer it names.
            extra = [n for n in rule.message_signals() if REGISTRY[n].scope != "model"]
            fields.update(evaluate_signals(probe, extra, first_info, cache))
        fields.update(
            layer=first_info.name if first_info else "the model",
            layers=", ".join(i.name for i in layer_infos) or "the model",
            num_layers=len(layer_infos), value=first_values.get(primary),
            step=model_values.get("nonfinite_step"))
        evidence = {name: first_values.get(name) for name in rule.signals()}
        if rule.scope != "model":
            evidence["per_layer"] = {info.name: values.get(primary) for info, values in matched}
        findings.append(Finding(
            rule=rule.id, name=rule.name, category=rule.category, severity=rule.severity,
            layers=[i.name for i in layer_infos],
            first_layer=first_info.name if first_info else None,
            message=format_message(rule, fields), summary=rule.summary,
            explanation=rule.rationale, evidence=jsonable(evidence),
            causes=explain_causes(rule.causes, probe, layer_infos or probe.layers),
            fixes=list(rule.fixes)))
    order = {s: i for i, s in enumerate(SEVERITIES)}
    findings.sort(key=lambda f: (order[f.severity], f.rule))
    return findings


def _locate(rule, matched, probe):
    if rule.scope == "model":
        origin = None
        if probe.nonfinite and rule.locate == "nonfinite_origin":
            origin = probe.nonfinite.get("first_layer_from_input") or probe.nonfinite.get("first_layer_from_output")
        info = probe.layer(origin) if origin else None
        return info, matched[0][1]
    primary = rule.signals()[0]
    if rule.locate == "input_side":
        return matched[0]
    if rule.locate in ("largest", "smallest"):
        scored = [m for m in matched if m[1].get(primary) is not None]
        pick = max if rule.locate == "largest" else min
        return pick(scored, key=lambda m: m[1][primary]) if scored else matched[0]
    return matched[-1]


def run_examples(rule: Rule) -> list:
    """``[(example, fired)]`` for each of the rule's examples (used by the tests)."""
    return [(example, rule.matches(example["signals"])) for example in rule.examples]


def select_rules(rules: dict, select=None, ignore=None, spelling=None) -> dict:
    """Keep the ids in ``select`` (all when empty) and drop those in ``ignore``.

    ``spelling`` (:data:`~gradadvisor.errors.PYTHON` by default) says whether
    an error names ``--select`` or the ``'select'`` parameter.

    Raises:
        UsageError: an id that no loaded rule has.
    """
    from ..errors import PYTHON, UsageError

    spelling = spelling or PYTHON
    for option, ids in (("select", select), ("ignore", ignore)):
        unknown = [i for i in (ids or []) if i not in rules]
        if unknown:
            raise UsageError(f"{spelling.sentence(spelling(option))} names the unknown rule id "
                             f"'{unknown[0]}'. Known ids: {', '.join(rules)}.")
    kept = {k: v for k, v in rules.items() if not select or k in select}
    return {k: v for k, v in kept.items() if k not in (ignore or [])}
