"""Benchmark gradadvisor's diagnosis on outcome-labelled models, on a held-out split.

Entries come from providers: the zoo (``scripts/zoo.py``: MLP, CNN and RNN
families), third-party models (``scripts/third_party.py``: keras.applications
and the Keras docs' text classifiers, healthy and sabotaged) and real buggy
programs (every module of ``scripts/real_bugs/`` that defines ``entries()``;
see :func:`real_bug_entries`).

1. **Labels** come from what happens in training (``scripts/outcome_labels.py``: a
   plain GradientTape loop with controls at a 10x smaller learning rate and a
   reference fix), never from gradadvisor's signals.  They are cached in
   ``benchmarks/labels.json`` with the recipe's fingerprint.
2. **Split**: each entry's name is hashed to a stable calibration (~40%) or
   test (~60%) side, every stratum (family group x label) keeps at least one of
   each, and every entry named in ``benchmarks/calibration.md`` is forced into
   calibration.  Every figure is reported on the test split; the calibration
   split has its own, separately labelled table.
3. **Detection**: on every labelled entry, ``gradadvisor.api.diagnose`` (30
   probe steps), the peers of ``scripts/baselines.py`` over a plain training
   trace (``zoo.measure``) and, as a second opinion on the label, the old
   gradient-threshold verification (``zoo.verify``).  Rows are cached in
   ``benchmarks/cache/detection.json`` under a fingerprint of ``rules/`` and
   ``gradadvisor/``: changing a rule re-runs the diagnoses, not the labels.
4. **Healthy false alarms** (``--false-alarms``, long): every third-party
   model built healthy, diagnosed at default settings for batch sizes 16 and
   32 and seeds 0-4, each run cached in ``benchmarks/cache/false_alarms.json``
   so an interrupted run resumes (its probe is kept beside it, in
   ``false_alarm_probes/`` or ``--probe-dir``, not committed).  When only the
   rules or their evaluation changed since a run (the code a probe runs, see
   :func:`probe_fingerprint`, did not), the current rules are applied again to
   its saved probe instead of probing again.  Every model is run at a seed
   before any at the next (:func:`sweep_plan`); ``--false-alarms-report`` writes
   ``benchmarks/false_alarms.md`` with every cached run and its code version.

Writes ``benchmarks/results.md`` and ``benchmarks/results.json``; the JSON is not committed (it repeats
the caches' rows), ``--report-only`` writes it again from the committed caches in under a second.

Usage:
    python scripts/benchmark.py                          # everything but the false-alarm sweep
    python scripts/benchmark.py --family all --false-alarms   # everything
    python scripts/benchmark.py --family mlp --quick     # a few entries
    python scripts/benchmark.py --labels-only            # (re)compute the outcome labels
    python scripts/benchmark.py --report-only            # re-render from the caches
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import importlib
import json
import math
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS))

import baselines  # noqa: E402
import outcome_labels as outcome  # noqa: E402
import zoo  # noqa: E402
from gradadvisor._tf import import_keras  # noqa: E402
from gradadvisor.jsonsafe import jsonable  # noqa: E402

CATEGORIES = ("vanishing", "exploding", "dead_units", "saturation")
#: gradadvisor's categories in the benchmark's words (nonfinite counts as exploding).
OUR_CATEGORY = {
    "vanishing_gradients": "vanishing", "exploding_gradients": "exploding", "nonfinite": "exploding",
    "dead_units": "dead_units", "saturated_units": "saturation",
    "slow_updates": "other", "large_updates": "other", None: None,
}
DETECTORS = ("gradadvisor", "AUTOTRAINER", "DeepDiagnosis", "naive ratio")
REPO = SCRIPTS.parent
BENCHMARKS = REPO / "benchmarks"
LABELS_PATH = BENCHMARKS / "labels.json"
CALIBRATION_PATH = BENCHMARKS / "calibration.md"
LABEL_COMMAND = "python scripts/benchmark.py --labels-only --family all"
#: Benchmark families: the zoo's families grouped, then the other providers.
GROUPS = ("MLP", "CNN", "RNN", "third-party", "real-bugs")
GROUP_OF_FAMILY = {"mlp": "MLP", "residual": "MLP", "branched": "MLP", "cnn": "CNN",
                   "rnn": "RNN", "embedding-rnn": "RNN"}
FAMILY_CHOICES = ("mlp", "cnn", "rnn", "zoo", "third-party", "real-bugs", "all")
CALIBRATION_SHARE = 0.4
FALSE_ALARM_BATCHES = (16, 32)
FALSE_ALARM_SEEDS = (0, 1, 2, 3, 4)
#: Runs (entry|batch|seed) with a false alarm before GA203, GA401 and GA501 were fixed.
KNOWN_FALSE_ALARMS = ("docs-bilstm|32|1", "docs-bilstm|32|3", "docs-transformer|16|1",
                      "docs-transformer|16|2", "docs-transformer|16|3", "docs-transformer|32|0",
                      "docs-transformer|32|1", "convnext-tiny|16|0", "convnext-tiny|32|0")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Gradadvisor's verdict, timing and repair of one model

def our_verdict(diagnosis) -> dict:
    """gradadvisor's verdict in the benchmark's words, with the first bad layer."""
    primary = diagnosis.primary_category
    layer = None
    if primary is not None:
        main = [f for f in diagnosis.findings if f.category == primary
                and f.severity in ("error", "warning")]
        layer = next((f.first_layer for f in main if f.first_layer), None)
    return {"category": OUR_CATEGORY.get(primary, "other"), "status": diagnosis.status,
            "primary_category": primary, "layer": layer,
            "findings": [{"rule": f.rule, "category": f.category, "severity": f.severity,
                          "first_layer": f.first_layer, "layers": f.layers,
                          "evidence": {k: v for k, v in f.evidence.items() if k != "per_layer"}}
                         for f in diagnosis.findings]}


def key_signals(diagnosis) -> dict:
    """The signal values a miscalibration report needs, from gradadvisor's probe."""
    from gradadvisor.analysis.signals import REGISTRY, evaluate_signals

    probe = diagnosis.probe
    model_names = [n for n, s in REGISTRY.items() if s.scope == "model"]
    values = {k: v for k, v in evaluate_signals(probe, model_names).items() if v is not None}
    per_layer = {}
    for info in probe.layers:
        layer_values = evaluate_signals(
            probe, ["grad_rms_ratio_to_output", "dead_fraction", "saturated_fraction", "update_ratio"],
            info)
        if info.recurrent:
            layer_values.update(evaluate_signals(probe, ["temporal_ratio", "num_timesteps"], info))
        layer_values = {k: v for k, v in layer_values.items() if v is not None}
        if layer_values:
            per_layer[info.name] = layer_values

    def extreme(name, pick):
        found = [v[name] for v in per_layer.values() if name in v and math.isfinite(v[name])]
        return pick(found) if found else None

    values.update({
        "min_grad_rms_ratio_to_output": extreme("grad_rms_ratio_to_output", min),
        "max_grad_rms_ratio_to_output": extreme("grad_rms_ratio_to_output", max),
        "max_dead_fraction": extreme("dead_fraction", max),
        "max_saturated_fraction": extreme("saturated_fraction", max),
        "min_temporal_ratio": extreme("temporal_ratio", min),
        "max_update_ratio": extreme("update_ratio", max),
    })
    return {"model": {k: v for k, v in values.items() if v is not None}, "per_layer": per_layer}


def time_fit(model, data, steps: int, batch_size: int, seed: int) -> float:
    """Seconds ``model.fit`` takes for ``steps`` steps on a fresh copy (tracing included)."""
    _, keras = import_keras()
    keras.utils.set_random_seed(seed)
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    copy.compile(optimizer=model.optimizer.__class__.from_config(model.optimizer.get_config()),
                 loss=model.loss)
    index = np.resize(np.random.default_rng(seed).permutation(len(data.x_train)), steps * batch_size)
    x, y = data.x_train[index], data.y_train[index]
    started = time.perf_counter()
    copy.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
    return time.perf_counter() - started


def repair(model, data, entry, diagnosis_options: dict, max_trials: int, trial_steps: int,
           workdir: str) -> dict:
    """Search for a fix and check it: recommended, better held-out loss, healthy again."""
    from gradadvisor.api import diagnose

    path = os.path.join(workdir, f"{entry.name}-fixed.keras")
    started = time.perf_counter()
    diagnosis = diagnose(model, data.x_train, data.y_train, search=True,
                         search_options={"max_trials": max_trials, "trial_steps": trial_steps,
                                         "save_fixed": path, "force": True},
                         **diagnosis_options)
    seconds = time.perf_counter() - started
    recommendation = diagnosis.recommendation or {}
    confirmation = recommendation.get("confirmation") or {}
    result = {
        "searched": diagnosis.recommendation is not None,
        "recommended": bool(recommendation.get("recommended")),
        "improved": bool(confirmation.get("improved")),
        "original_val_loss": (confirmation.get("original") or {}).get("val_loss"),
        "recommended_val_loss": (confirmation.get("recommended") or {}).get("val_loss"),
        "fixed_model_path": recommendation.get("fixed_model_path"),
        "reported_fixed_status": recommendation.get("fixed_status"),
        "rediagnosis_status": None, "seconds": round(seconds, 2),
    }
    fixed_path = recommendation.get("fixed_model_path")
    if result["recommended"] and fixed_path and os.path.exists(fixed_path):
        again = diagnose(fixed_path, data.x_train, data.y_train, **diagnosis_options)
        result["rediagnosis_status"] = again.status
        result["rediagnosis_category"] = OUR_CATEGORY.get(again.primary_category, "other")
    result["repaired"] = bool(result["recommended"] and result["improved"]
                              and result["rediagnosis_status"] == "healthy")
    # The contract counts a repair as above; whether the fixed model also beats
    # always predicting the class priors is recorded so the rate can be read
    # with that in mind.
    chance = zoo._chance_loss(data.y_train)
    fixed_loss = result["recommended_val_loss"]
    result["chance_loss"] = chance
    result["beats_chance"] = bool(fixed_loss is not None and fixed_loss < 0.9 * chance)
    return result


def _layer_order(model) -> dict:
    """Position of each layer for "within one layer": weightless layers
    (activations, normalization) share the position of the layer before them."""
    order, position = {}, -1
    for layer in model.layers:
        if zoo._kernel_variables(layer) and type(layer).__name__ not in zoo.NORMALIZATION:
            position += 1
        order[layer.name] = max(position, 0)
    return order


def render_false_alarm_runs(runs: dict, models: list, labels: dict, fingerprint: str,
                            forced: set, command: str) -> str:
    """Every cached false-alarm run, those at the current code apart from those at earlier versions.

    Unlike the results' section (current code only), this shows what the sweep has measured
    so far at any code version, so a sweep stopped and resumed across code changes loses nothing.
    """
    current = [r for r in runs.values() if r.get("fingerprint") == fingerprint and r["entry"] in models]
    earlier = [r for r in runs.values() if r.get("fingerprint") != fingerprint and r["entry"] in models]
    planned = len(models) * len(FALSE_ALARM_BATCHES) * len(FALSE_ALARM_SEEDS)

    def count(selected):
        return f"{sum(bool(r['alarms']) for r in selected)}/{len(selected)}"

    def faulty(name):
        label = (labels.get(name) or {}).get("label")
        return label not in (None, "healthy", "ambiguous", "error")

    def on_faulty(selected):
        hits = [r for r in selected if r["alarms"] and faulty(r["entry"])]
        if not hits:
            return ""
        named = ", ".join(f"{name}: {labels[name]['label']}" for name in sorted({r["entry"] for r in hits}))
        return (f" {len(hits)} of these are on models whose outcome label is a fault, not healthy "
                f"({named}), so they are not false alarms.")

    lines = ["# Healthy false alarms on third-party models", "",
             f"Written by `{command}` from `benchmarks/cache/false_alarms.json`. Each healthy third-party "
             "model (`scripts/third_party.py`: keras.applications with `weights=None` at its smallest input "
             "on enlarged digits, and the Keras docs' text classifiers; Adam 1e-3 as published) is diagnosed "
             "by `gradadvisor.api.diagnose` at the default settings (30 probe steps) for batch sizes "
             f"{' and '.join(map(str, FALSE_ALARM_BATCHES))} and seeds {FALSE_ALARM_SEEDS[0]}-"
             f"{FALSE_ALARM_SEEDS[-1]}: {len(models)} models, {planned} planned runs. An alarm is any finding "
             "of warning or error severity. Runs are on a shared 2-core machine under `nice -n 19`; the "
             "seconds are wall-clock and only say what a run cost there.", "",
             f"## At the current code (fingerprint `{fingerprint}`)", "",
             f"{len(current)} of {planned} runs done, {count(current).split('/')[0]} with an alarm."
             + on_faulty(current) + _reapplied_note(current), "",
             "| seed | " + " | ".join(f"batch {b}" for b in FALSE_ALARM_BATCHES) + " |",
             "|---|" + "---|" * len(FALSE_ALARM_BATCHES)]
    for seed in FALSE_ALARM_SEEDS:
        cells = []
        for batch in FALSE_ALARM_BATCHES:
            chosen = [r for r in current if r["seed"] == seed and r["batch_size"] == batch]
            cells.append(f"{count(chosen)} with an alarm" if chosen else "not run")
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    versions = sorted({r["fingerprint"] for r in earlier})
    lines += ["", "## At earlier code versions", ""]
    if earlier:
        lines += [f"{len(earlier)} runs made before the code last changed (fingerprints "
                  f"{', '.join(f'`{v}`' for v in versions)}); not counted above. "
                  f"{count(earlier).split('/')[0]} of them had an alarm." + on_faulty(earlier), ""]
    else:
        lines += ["None.", ""]
    lines += ["## Per model", "",
              "| model | calibration | outcome label | current code: runs (batch/seed) | alarms | earlier code: runs | alarms | median s |",
              "|---|---|---|---|---|---|---|---|"]
    for name in models:
        now = sorted((r for r in current if r["entry"] == name), key=lambda r: (r["seed"], r["batch_size"]))
        before = [r for r in earlier if r["entry"] == name]
        seconds = [r["seconds"] for r in now + before]
        which = ", ".join(f"{r['batch_size']}/{r['seed']}" for r in now) or "–"
        lines.append(f"| {name} | {'yes' if name in forced else 'no'} | "
                     f"{(labels.get(name) or {}).get('label') or 'not labelled'} | {len(now)}: {which} | "
                     f"{sum(bool(r['alarms']) for r in now)} | {len(before)} | {sum(bool(r['alarms']) for r in before)} | "
                     f"{round(statistics.median(seconds)) if seconds else '–'} |")
    never = [n for n in models if not any(r["entry"] == n for r in current + earlier)]
    lines += ["", f"Never run at any code version: {', '.join(never) or 'none'}.", "", "## Every alarm", ""]
    alarmed = sorted((r for r in current + earlier if r["alarms"]),
                     key=lambda r: (r["entry"], r["seed"], r["batch_size"]))
    for r in alarmed:
        version = "current code" if r["fingerprint"] == fingerprint else f"code `{r['fingerprint']}`"
        for a in r["alarms"]:
            lines.append(f"- {r['entry']} batch {r['batch_size']} seed {r['seed']} ({version}): {a['rule']} "
                         f"({a['severity']}) at {a['first_layer'] or 'the model'}: {a['summary']}")
    if not alarmed:
        lines.append("None.")
    return "\n".join(lines) + "\n"


def _reapplied_note(current: list) -> str:
    reapplied = sum(bool(r.get("rules_reapplied")) for r in current)
    if not reapplied:
        return ""
    return (f" For {reapplied} of them the probe was made at an earlier code version with the same probe "
            "code (only the rules or code a probe does not run changed since, so probing again would "
            "measure the same statistics) and the current rules were applied to it again; their seconds "
            "are the probe's.")


# --------------------------------------------------------------------------
# Metrics

def _ratio(numerator, denominator):
    return None if denominator == 0 else numerator / denominator




# --------------------------------------------------------------------------
# Entry providers


def real_bug_entries(folder: Path | None = None) -> list:
    """The entries of every real-bug provider module.

    A provider is a module ``scripts/real_bugs/<name>.py`` (names starting with
    ``_`` are skipped) that defines ``entries()`` returning objects with the
    zoo's :class:`zoo.Entry` interface: ``name``, ``family``, ``label`` (what
    it was built to show), ``build(seed) -> (compiled model, zoo.Dataset)``,
    ``steps``, ``batch_size``, ``description``, ``first_bad_layer`` and
    optionally ``reference`` and ``quick``.  Their benchmark family is
    ``real-bugs`` whatever their own ``family`` says.
    """
    folder = folder or SCRIPTS / "real_bugs"
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_"):
            continue
        module = importlib.import_module(f"{folder.name}.{path.stem}")
        provide = getattr(module, "entries", None)
        if callable(provide):
            found.extend(provide())
    return found


def third_party_entries(quick: bool = False) -> list:
    import third_party

    return third_party.entries(quick=quick)


def group_of(entry, provider: str) -> str:
    if provider == "zoo":
        return GROUP_OF_FAMILY.get(entry.family, "MLP")
    return provider


def select(family: str = "all", quick: bool = False, only: str | None = None,
           third_party_quick: bool = False) -> list:
    """``[(entry, group)]`` for a ``--family`` choice, ``--quick`` and ``--only``.

    ``third_party_quick`` keeps the representative third-party models only
    (``--third-party quick``), whatever ``quick`` says of the other families.
    """
    chosen = []
    if family in ("mlp", "cnn", "rnn", "zoo", "all"):
        for entry in zoo.ZOO:
            group = group_of(entry, "zoo")
            if family in ("zoo", "all") or group == family.upper():
                if not quick or entry.quick or only:
                    chosen.append((entry, group))
    if family in ("third-party", "all"):
        chosen += [(entry, "third-party") for entry in
                   third_party_entries(quick=(quick or third_party_quick) and not only)]
    if family in ("real-bugs", "all"):
        chosen += [(entry, "real-bugs") for entry in real_bug_entries()
                   if not quick or getattr(entry, "quick", False) or only]
    if only:
        names = [n.strip() for n in only.split(",") if n.strip()]
        known = {entry.name: (entry, group) for entry, group in chosen}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise SystemExit(f"There is no entry called '{unknown[0]}' in --family {family}. "
                             f"Run with --list to see the names.")
        chosen = [known[n] for n in names]
    return chosen


# --------------------------------------------------------------------------
# Files


def read_json(path: Path, default):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return default


def write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder, then rename: never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(handle, "w") as stream:
        stream.write(text)
    os.replace(temporary, path)


def write_json(path: Path, data) -> None:
    write_atomic(path, json.dumps(jsonable(data), indent=1, sort_keys=True) + "\n")


# --------------------------------------------------------------------------
# Outcome labels

RUN_FIELDS = ("steps", "batch_size", "optimizer", "learning_rate", "initial_loss", "final_loss",
              "chance_loss", "max_step_loss", "nonfinite_step", "nonfinite_weights", "first_layer",
              "last_layer", "movement_ratio", "dead_fraction", "max_saturated_fraction", "recurrent",
              "seconds")


def ensure_labels(chosen: list, *, seed: int = 0, path: Path = LABELS_PATH, refresh: bool = False) -> dict:
    """Outcome labels of the chosen entries, computing and caching the missing ones.

    A cached label is reused while the entry's recipe fingerprint
    (``outcome.fingerprint``) and the seed are unchanged.
    """
    cache = read_json(path, {})
    records = cache.setdefault("entries", {})
    cache["command"] = LABEL_COMMAND
    cache["labeller_version"] = outcome.LABELLER_VERSION
    missing = [(e, g) for e, g in chosen
               if refresh or (records.get(e.name) or {}).get("fingerprint") != outcome.fingerprint(e)
               or records[e.name].get("seed") != seed or records[e.name].get("label") == "error"]
    for number, (entry, group) in enumerate(missing, start=1):
        started = time.perf_counter()
        try:
            verdict = outcome.label(entry, seed=seed)
        except Exception as error:  # one model that cannot train must not lose the others
            verdict = {"label": "error", "reasons": [f"{type(error).__name__}: {error}"[:300]],
                       "runs": {}, "seconds": round(time.perf_counter() - started, 2)}
        records[entry.name] = {
            "fingerprint": outcome.fingerprint(entry), "seed": seed, "group": group,
            "family": entry.family, "built_as": entry.label, "label": verdict["label"],
            "reasons": verdict["reasons"], "seconds": verdict["seconds"],
            "runs": {name: {k: run.get(k) for k in RUN_FIELDS} for name, run in verdict["runs"].items()},
        }
        write_json(path, cache)
        log(f"label [{number}/{len(missing)}] {entry.name}: built {entry.label}, outcome "
            f"{verdict['label']} ({verdict['seconds']:.0f} s): {'; '.join(verdict['reasons'])}")
    if missing:
        write_atomic(path.with_suffix(".md"), render_labels(cache))
    return {e.name: records[e.name] for e, _ in chosen}


def render_labels(cache: dict) -> str:
    records = cache.get("entries", {})
    lines = ["# Outcome labels", "",
             f"Recompute with `{cache.get('command', LABEL_COMMAND)}` (cached entries whose recipe is "
             "unchanged are kept; add `--refresh-labels` to redo all). Criteria: `scripts/outcome_labels.py`.", "",
             "| entry | group | built as | outcome label | why | s |", "|---|---|---|---|---|---|"]
    for name in sorted(records, key=lambda n: (GROUPS.index(records[n]["group"])
                                               if records[n]["group"] in GROUPS else 9, n)):
        r = records[name]
        lines.append(f"| {name} | {r['group']} | {r['built_as']} | {r['label']} | "
                     f"{'; '.join(r['reasons'])} | {r['seconds']} |")
    counts = collections.Counter(r["label"] for r in records.values())
    lines += ["", "Totals: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + "."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# Calibration / test split


def calibration_names(path: Path = CALIBRATION_PATH) -> set:
    """Entry names written in backticks in ``benchmarks/calibration.md``."""
    try:
        text = Path(path).read_text()
    except OSError:
        return set()
    return set(re.findall(r"`([a-z0-9][a-z0-9._-]*)`", text))


def _unit_hash(name: str) -> float:
    return int(hashlib.sha256(name.encode()).hexdigest()[:12], 16) / float(16 ** 12)


def assign_split(items: list, forced: set) -> dict:
    """``{name: "calibration" | "test"}`` for ``items`` of ``(name, stratum)``.

    An entry is in calibration when forced or when the hash of its name falls
    under :data:`CALIBRATION_SHARE`, so adding entries never moves another one.
    A stratum of three or more entries that the hash leaves without a
    calibration entry gets its lowest-hash one; one left without a test entry
    gives back its highest-hash unforced one.
    """
    split = {name: ("calibration" if name in forced or _unit_hash(name) < CALIBRATION_SHARE else "test")
             for name, _ in items}
    strata = collections.defaultdict(list)
    for name, stratum in items:
        strata[stratum].append(name)
    for names in strata.values():
        if len(names) < 3:
            continue
        names = sorted(names, key=_unit_hash)
        if not any(split[n] == "calibration" for n in names):
            split[names[0]] = "calibration"
        if not any(split[n] == "test" for n in names):
            free = [n for n in names if n not in forced]
            if free:
                split[free[-1]] = "test"
    return split


# --------------------------------------------------------------------------
# Detection


def code_fingerprint() -> str:
    """Changes with any rule file or gradadvisor source file."""
    return _fingerprint(((REPO / "rules", "*.yaml"), (REPO / "gradadvisor", "*.py"),
                         (REPO / "gradadvisor", "*.yaml")))


#: Parts of the package a probe never runs: the rules and their evaluation, the
#: search, the surgery, the reports, the callback and the command line.
NOT_PROBE_CODE = ("gradadvisor/analysis/", "gradadvisor/callback/", "gradadvisor/report/",
                  "gradadvisor/search/", "gradadvisor/surgery/", "gradadvisor/cli.py",
                  "gradadvisor/__main__.py", "gradadvisor/examples.py")


def probe_fingerprint() -> str:
    """Changes with any source file a probe runs (everything but :data:`NOT_PROBE_CODE`).

    A probe made at the same probe fingerprint is what a new run would measure, so a
    change to the rules alone is judged by applying them again to the saved probe.
    """
    return _fingerprint(((REPO / "gradadvisor", "*.py"),),
                        skip=lambda relative: relative.startswith(NOT_PROBE_CODE))


def _fingerprint(sources, skip=lambda relative: False) -> str:
    digest = hashlib.sha256()
    for folder, pattern in sources:
        for path in sorted(folder.rglob(pattern)):
            relative = path.relative_to(REPO).as_posix()
            if not skip(relative):
                digest.update(relative.encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def run_entry(entry, group: str, record: dict, args) -> dict:
    """Trace, second opinion, diagnosis, timing and peers for one labelled entry."""
    from gradadvisor.api import diagnose

    _, keras = import_keras()
    keras.backend.clear_session()
    model, data = entry.build(args.seed)
    row = {"name": entry.name, "group": group, "family": entry.family, "built_as": entry.label,
           "truth": record["label"], "label_reasons": record["reasons"],
           "description": entry.description, "data": data.name,
           "num_layers": len(model.layers), "num_params": int(model.count_params())}
    trace = zoo.measure(model, data, steps=entry.steps, batch_size=entry.batch_size, seed=args.seed)
    opinion = zoo.verify(trace)
    row["gradient_opinion"] = {"label": opinion["label"], "reasons": opinion["reasons"],
                               "first_bad_layer": opinion["first_bad_layer"],
                               "seconds": round(trace.seconds, 2)}
    if getattr(entry, "first_bad_layer", None):
        row["truth_layer"], row["truth_layer_source"] = entry.first_bad_layer, "construction"
    elif opinion["first_bad_layer"] and opinion["label"] == record["label"] != "healthy":
        row["truth_layer"], row["truth_layer_source"] = opinion["first_bad_layer"], "gradient measurement"
    else:
        row["truth_layer"], row["truth_layer_source"] = None, None
    row["layer_order"] = _layer_order(model)
    options = {"steps": args.steps, "batch_size": entry.batch_size, "seed": args.seed}
    started = time.perf_counter()
    diagnosis = diagnose(model, data.x_train, data.y_train, **options)
    row["diagnosis_seconds"] = round(time.perf_counter() - started, 3)
    row["gradadvisor"] = our_verdict(diagnosis)
    row["signals"] = key_signals(diagnosis)
    if not args.no_fit:
        row["fit_seconds"] = round(time_fit(model, data, args.steps, entry.batch_size, args.seed), 3)
        row["overhead"] = round(row["diagnosis_seconds"] / row["fit_seconds"], 3)
    for name, detector in baselines.BASELINES.items():
        row[name] = detector(trace)
    if getattr(args, "repair", False) and record["label"] != "healthy":
        with tempfile.TemporaryDirectory(prefix="gradadvisor-benchmark-") as workdir:
            try:
                row["repair"] = repair(model, data, entry, options, args.max_trials, args.trial_steps, workdir)
            except Exception as error:  # one failed search must not lose the whole benchmark
                row["repair"] = {"error": f"{type(error).__name__}: {error}", "repaired": False}
    return row


def ensure_rows(chosen: list, labels: dict, args) -> dict:
    """Detection rows of the labelled entries, from the cache when the code is unchanged."""
    path = Path(args.out) / "cache" / "detection.json"
    cache = read_json(path, {})
    fingerprint = code_fingerprint()
    key = f"{fingerprint}/steps={args.steps}/seed={args.seed}" + ("/repair" if args.repair else "")
    rows = cache.setdefault("rows", {})
    todo = [(e, g) for e, g in chosen if labels[e.name]["label"] in CATEGORIES + ("healthy",)
            and (args.refresh or (rows.get(e.name) or {}).get("cache_key") != key
                 or rows[e.name].get("label_fingerprint") != labels[e.name]["fingerprint"]
                 or rows[e.name].get("truth") != labels[e.name]["label"])]
    for number, (entry, group) in enumerate(todo, start=1):
        started = time.perf_counter()
        try:
            row = run_entry(entry, group, labels[entry.name], args)
        except Exception as error:  # keep the other entries' results
            log(f"detect [{number}/{len(todo)}] {entry.name}: FAILED {type(error).__name__}: {error}")
            continue
        row["cache_key"] = key
        row["label_fingerprint"] = labels[entry.name]["fingerprint"]
        rows[entry.name] = row
        # Keep the rows another process (another --family) wrote since this one started.
        on_disk = read_json(path, {}).get("rows", {})
        rows.update({name: r for name, r in on_disk.items() if name not in rows
                     or (r.get("cache_key") == key and rows[name].get("cache_key") != key)})
        rows[entry.name] = row
        cache["rows"] = rows
        write_json(path, cache)
        got = row["gradadvisor"]["category"] or "healthy"
        log(f"detect [{number}/{len(todo)}] {entry.name}: {row['truth']} -> gradadvisor {got} "
            f"({time.perf_counter() - started:.0f} s)")
    return {e.name: rows[e.name] for e, _ in chosen if e.name in rows
            and rows[e.name].get("cache_key") == key and rows[e.name].get("truth") == labels[e.name]["label"]}


# --------------------------------------------------------------------------
# Healthy false alarms on third-party models


def ensure_false_alarms(entries: list, args) -> dict:
    """Diagnose every healthy third-party model at batch 16 and 32, seeds 0-4 (cached per run)."""
    from gradadvisor.api import diagnose

    _, keras = import_keras()
    path = Path(args.out) / "cache" / "false_alarms.json"
    probes = rejudge_false_alarms(args)
    cache = read_json(path, {})
    runs = cache.setdefault("runs", {})
    fingerprint = code_fingerprint()
    probe_code = probe_fingerprint()
    plan = sweep_plan(entries, runs)
    shard, shards = getattr(args, "shard", None) or (0, 1)
    plan = [item for position, item in enumerate(plan) if position % shards == shard]
    todo = [(e, b, s) for e, b, s in plan
            if (runs.get(f"{e.name}|{b}|{s}") or {}).get("fingerprint") != fingerprint or args.refresh]
    log(f"false alarms: {len(plan) - len(todo)} of {len(plan)} runs cached, {len(todo)} to run")
    built = {}
    for number, (entry, batch, seed) in enumerate(todo, start=1):
        # Another process of the same sweep (--shard) may have done it meanwhile.
        done = (read_json(path, {}).get("runs", {}).get(f"{entry.name}|{batch}|{seed}") or {})
        if done.get("fingerprint") == fingerprint and not args.refresh:
            runs[f"{entry.name}|{batch}|{seed}"] = done
            continue
        if entry.name not in built:
            built.clear()  # one model at a time: the largest applications need the memory
            keras.backend.clear_session()
            try:
                built[entry.name] = entry.build(0)
            except Exception as error:
                log(f"false alarms [{number}/{len(todo)}] {entry.name}: build FAILED "
                    f"{type(error).__name__}: {error}")
                continue
        model, data = built[entry.name]
        started = time.perf_counter()
        try:
            diagnosis = diagnose(model, data.x_train, data.y_train, batch_size=batch, seed=seed)
        except Exception as error:
            log(f"false alarms [{number}/{len(todo)}] {entry.name} batch {batch} seed {seed}: "
                f"FAILED {type(error).__name__}: {error}")
            continue
        alarms = alarms_of(diagnosis.findings)
        # The probe itself is kept: a run costs minutes, applying the rules to it again milliseconds.
        save_probe(probes / f"{entry.name}-{batch}-{seed}.json.gz", diagnosis.probe, probe_code)
        runs[f"{entry.name}|{batch}|{seed}"] = {
            "entry": entry.name, "batch_size": batch, "seed": seed, "status": diagnosis.status,
            "alarms": alarms, "seconds": round(time.perf_counter() - started, 2),
            "fingerprint": fingerprint, "probe_fingerprint": probe_code}
        # Merge with what other shards wrote since this one started, then write atomically.
        on_disk = read_json(path, {}).get("runs", {})
        on_disk.update({k: v for k, v in runs.items()
                        if v.get("fingerprint") == fingerprint or k not in on_disk})
        runs.update(on_disk)
        cache["runs"] = runs
        write_json(path, cache)
        log(f"false alarms [{number}/{len(todo)}] {entry.name} batch {batch} seed {seed}: "
            f"{', '.join(a['rule'] for a in alarms) or 'no alarm'} ({time.perf_counter() - started:.0f} s)")
    return {key: run for key, run in runs.items() if run.get("fingerprint") == fingerprint
            and run["entry"] in {e.name for e in entries}}


def rejudge_false_alarms(args) -> Path:
    """Apply the current rules again to every cached false-alarm run whose saved probe was made
    at the current probe code (milliseconds a run, nothing is trained); return the probe folder."""
    path = Path(args.out) / "cache" / "false_alarms.json"
    probes = Path(getattr(args, "probe_dir", None) or Path(args.out) / "cache" / "false_alarm_probes")
    reapplied = reapply_rules(read_json(path, {}).get("runs", {}), probes, code_fingerprint(), probe_fingerprint())
    if reapplied:
        on_disk = read_json(path, {})
        write_json(path, {**on_disk, "runs": {**on_disk.get("runs", {}), **reapplied}})
        log(f"false alarms: the current rules applied again to {len(reapplied)} saved probes "
            "made at the current probe code")
    return probes


def sweep_plan(entries: list, runs: dict) -> list:
    """``(entry, batch, seed)`` in the order the false-alarm sweep makes them.

    Seed-major, both batch sizes of a model together: a partial sweep covers every model
    at the first seeds, and builds each model once per seed. Within a seed, runs never made
    at any code version go first, then those made only at an earlier one, the runs that had
    false alarms before first among them (they check the rule fixes).
    """
    plan = [(entry, batch, seed) for seed in FALSE_ALARM_SEEDS for entry in entries
            for batch in FALSE_ALARM_BATCHES]
    plan.sort(key=lambda item: (item[2], f"{item[0].name}|{item[1]}|{item[2]}" in runs,
                                f"{item[0].name}|{item[1]}|{item[2]}" not in KNOWN_FALSE_ALARMS))
    return plan


def alarms_of(findings) -> list:
    """The findings of warning or error severity, as the false-alarm cache keeps them."""
    return [{"rule": f.rule, "severity": f.severity, "first_layer": f.first_layer,
             "summary": getattr(f, "message", None) or getattr(f, "summary", None)}
            for f in findings if f.severity in ("warning", "error")]


def reapply_rules(runs: dict, probes: Path, fingerprint: str, probe_code: str) -> dict:
    """Runs made at earlier rules but the current probe code, judged again by the current rules.

    Their saved probe is what a new run would measure; the rules take milliseconds on it, where
    probing again takes minutes. A run keeps its original seconds and is marked ``rules_reapplied``.
    """
    from gradadvisor.analysis.diagnosis import Diagnosis
    from gradadvisor.analysis.engine import evaluate, load_rules

    rules = None
    updated = {}
    for key, run in runs.items():
        if run.get("fingerprint") == fingerprint or run.get("probe_fingerprint") != probe_code:
            continue
        saved = probes / f"{run['entry']}-{run['batch_size']}-{run['seed']}.json.gz"
        if not saved.exists():
            continue
        made_at, probe = load_probe(saved)
        if made_at != probe_code:
            continue
        rules = rules if rules is not None else load_rules()
        diagnosis = Diagnosis(probe=probe, findings=evaluate(probe, rules))
        updated[key] = {**run, "alarms": alarms_of(diagnosis.findings), "status": diagnosis.status,
                        "fingerprint": fingerprint, "rules_reapplied": True}
    runs.update(updated)
    return updated


def save_probe(path: Path, probe, fingerprint: str) -> None:
    """Write a probe result as gzipped JSON (atomically), with the code fingerprint it was made at."""
    import gzip

    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(handle, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as stream:
        stream.write(json.dumps({"fingerprint": fingerprint, "probe": probe.to_dict()}).encode())
    os.replace(temporary, path)


def load_probe(path: Path):
    """A probe saved by :func:`save_probe`: ``(fingerprint, ProbeResult)``."""
    import gzip

    from gradadvisor.probe.result import ProbeResult

    data = json.loads(gzip.decompress(Path(path).read_bytes()))
    return data["fingerprint"], ProbeResult.from_dict(data["probe"])


def summarize_false_alarms(runs: dict, entries: list, labels: dict) -> dict:
    names = [e.name for e in entries]
    done = list(runs.values())

    def rate(selected):
        return {"runs": len(selected), "alarms": sum(bool(r["alarms"]) for r in selected),
                "rate": _ratio(sum(bool(r["alarms"]) for r in selected), len(selected))}

    forced = calibration_names()
    return {
        "models": names,
        "held_out": rate([r for r in done if r["entry"] not in forced]),
        "outcome_labels": {n: (labels.get(n) or {}).get("label") for n in names},
        "planned_runs": len(names) * len(FALSE_ALARM_BATCHES) * len(FALSE_ALARM_SEEDS),
        "overall": rate(done),
        "by_seed_and_batch": {f"{s}|{b}": rate([r for r in done if r["seed"] == s and r["batch_size"] == b])
                              for s in FALSE_ALARM_SEEDS for b in FALSE_ALARM_BATCHES},
        "by_model": {n: rate([r for r in done if r["entry"] == n]) for n in names},
        "alarms": [{k: r[k] for k in ("entry", "batch_size", "seed", "alarms")} for r in done if r["alarms"]],
        "median_seconds": round(statistics.median([r["seconds"] for r in done]), 1) if done else None,
    }


# --------------------------------------------------------------------------
# Metrics


def metrics(rows: list, detector: str) -> dict:
    """Per-category precision and recall, healthy false positives, localisation.

    A peer's figures for a category it does not cover, and its localisation
    when it reports no layer, are ``"n/a"`` (``baselines.COVERAGE``).
    """
    coverage = baselines.COVERAGE.get(detector, {"categories": CATEGORIES, "localises": True})
    truth = [r["truth"] for r in rows]
    predicted = [r[detector]["category"] for r in rows]
    result = {"categories": {}}
    for category in CATEGORIES:
        support = sum(t == category for t in truth)
        if category not in coverage["categories"]:
            result["categories"][category] = {"support": support, "predicted": None,
                                              "precision": "n/a", "recall": "n/a"}
            continue
        true_positive = sum(t == category and p == category for t, p in zip(truth, predicted))
        result["categories"][category] = {
            "support": support, "predicted": sum(p == category for p in predicted),
            "precision": _ratio(true_positive, sum(p == category for p in predicted)),
            "recall": _ratio(true_positive, support),
        }
    healthy = [p for t, p in zip(truth, predicted) if t == "healthy"]
    result["healthy_false_positive_rate"] = _ratio(sum(p is not None for p in healthy), len(healthy))
    covered = [(t, p) for t, p in zip(truth, predicted) if t == "healthy" or t in coverage["categories"]]
    result["accuracy"] = _ratio(sum((t == "healthy" and p is None) or t == p for t, p in covered), len(covered))
    result["num_scored"] = len(covered)
    if not coverage["localises"]:
        result["localisation"] = {"accuracy": "n/a", "hits": None, "cases": None}
        return result
    localised = [r for r in rows if r.get("truth_layer") and r[detector]["category"] == r["truth"]]
    hits = 0
    for r in localised:
        layer, order = r[detector].get("layer"), r["layer_order"]
        if layer is not None and layer in order and r["truth_layer"] in order:
            hits += abs(order[layer] - order[r["truth_layer"]]) <= 1
    result["localisation"] = {"accuracy": _ratio(hits, len(localised)), "hits": hits, "cases": len(localised)}
    return result


def agreement(labels: dict, rows: dict) -> dict:
    """How often the gradient-threshold opinion gives the outcome label."""
    pairs = [(labels[n]["label"], r["gradient_opinion"]["label"]) for n, r in rows.items()]
    confusion = collections.Counter(f"{a} / {b}" for a, b in pairs if a != b)
    return {"compared": len(pairs), "agree": sum(a == b for a, b in pairs),
            "rate": _ratio(sum(a == b for a, b in pairs), len(pairs)),
            "disagreements": dict(sorted(confusion.items()))}


def summarize(chosen, labels, split, rows, false_alarms, args, seconds) -> dict:
    scored = [r for r in rows.values()]
    for r in scored:
        r["split"] = split[r["name"]]
    test = [r for r in scored if r["split"] == "test"]
    calibration = [r for r in scored if r["split"] == "calibration"]
    label_counts = collections.Counter(labels[e.name]["label"] for e, _ in chosen)
    summary = {
        "schema": "gradadvisor.benchmark/2",
        "command": " ".join(["python", "scripts/benchmark.py"] + (args.argv or [])),
        "probe_steps": args.steps, "seed": args.seed, "seconds": round(seconds, 1),
        "code_fingerprint": code_fingerprint(),
        "num_entries": len(chosen), "outcome_labels": dict(label_counts),
        "num_scored": len(scored), "num_test": len(test), "num_calibration": len(calibration),
        "calibration_forced": sorted(calibration_names()),
        "composition": {f"{g}/{split_name}": dict(collections.Counter(
            r["truth"] for r in scored if r["group"] == g and r["split"] == split_name))
            for g in GROUPS for split_name in ("test", "calibration")},
        "test": {name: metrics(test, name) for name in DETECTORS} if test else {},
        "test_by_group": {g: {name: metrics([r for r in test if r["group"] == g], name) for name in DETECTORS}
                          for g in GROUPS if any(r["group"] == g for r in test)},
        "calibration": {name: metrics(calibration, name) for name in DETECTORS} if calibration else {},
        "label_agreement": agreement(labels, rows),
        "not_scored": sorted(e.name for e, _ in chosen if e.name not in rows),
        "not_labelled": getattr(args, "not_labelled", []),
    }
    times = [r["diagnosis_seconds"] for r in scored]
    if times:
        summary["time_to_diagnosis"] = {"median": round(statistics.median(times), 2), "max": round(max(times), 2)}
    overheads = [r["overhead"] for r in scored if "overhead" in r]
    if overheads:
        summary["overhead_vs_fit"] = {"median": round(statistics.median(overheads), 2),
                                      "max": round(max(overheads), 2)}
    bugs = [r for r in scored if r["group"] == "real-bugs" and r["truth"] != "healthy"]
    if bugs:
        summary["real_bugs"] = {
            "faulty": len(bugs), "flagged": sum(r["gradadvisor"]["category"] is not None for r in bugs),
            "right_category": sum(r["gradadvisor"]["category"] == r["truth"] for r in bugs),
            "published_reference": "DeepDiagnosis (ICSE 2022) reports 46 of its 53 real-world programs"}
    repairs = [r["repair"] for r in test if "repair" in r]
    if repairs:
        summary["repair_test"] = {"attempted": len(repairs), "repaired": sum(r["repaired"] for r in repairs),
                                  "rate": _ratio(sum(r["repaired"] for r in repairs), len(repairs))}
    programs = real_bug_programs(Path(args.out) / "real_bugs.json", set(summary["calibration_forced"]))
    if programs:
        summary["real_bug_programs"] = programs
    if false_alarms is not None:
        summary["false_alarms"] = false_alarms
    return summary


def real_bug_programs(path: Path, calibration: set) -> dict | None:
    """The real-bug programs' detection as ``scripts/real_bugs/run.py`` recorded it.

    Those programs are labelled by training the faulty program and its published
    fix (``scripts/real_bugs/label.py``), not by this script; a program named in
    ``benchmarks/calibration.md`` counts on the calibration side.
    """
    record = read_json(path, None)
    if not record or not record.get("entries"):
        return None
    reproducing = [e for e in record["entries"] if e.get("reproduces") and e.get("detection")]

    def side(entries):
        return {"programs": len(entries),
                "identified": sum(bool(e["detection"].get("identified")) for e in entries),
                "fixed_with_alarm": sum((e.get("fixed_detection") or {}).get("status") in ("warning", "error")
                                        for e in entries),
                "missed": [e["name"] for e in entries if not e["detection"].get("identified")]}

    def forced(entry):
        return any(entry["name"] == n or entry["name"].startswith(n + "-") for n in calibration)

    return {"ported": len(record["entries"]), "reproducing": len(reproducing),
            "all": side(reproducing), "test": side([e for e in reproducing if not forced(e)]),
            "calibration": sorted(e["name"] for e in reproducing if forced(e)),
            "command": record.get("run_command"), "run_seconds": record.get("run_seconds"),
            "published_reference": "DeepDiagnosis (ICSE 2022): 46 of 53 real-world programs "
                                   "(its own set and criterion)"}


# --------------------------------------------------------------------------
# Rendering


def _fmt(value, digits=2):
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _detection_table(by_detector: dict) -> list:
    header = ("| detector | " + " | ".join(f"{c} P | {c} R" for c in CATEGORIES)
              + " | healthy FPR | accuracy | localisation |")
    lines = [header, "|" + "---|" * (2 * len(CATEGORIES) + 4)]
    for name in DETECTORS:
        m = by_detector.get(name)
        if not m:
            continue
        cells = []
        for category in CATEGORIES:
            c = m["categories"][category]
            cells += [_fmt(c["precision"]), _fmt(c["recall"])]
        loc = m["localisation"]
        location = ("n/a" if loc["accuracy"] == "n/a" else
                    f"{_fmt(loc['accuracy'])} ({loc['hits']}/{loc['cases']})" if loc["cases"] else "–")
        lines.append(f"| {name} | " + " | ".join(cells)
                     + f" | {_fmt(m['healthy_false_positive_rate'])} | {_fmt(m['accuracy'])} | {location} |")
    return lines


def render_markdown(summary: dict, rows: dict, labels: dict) -> str:
    s = summary
    lines = ["# gradadvisor benchmark", "",
             f"Command: `{s['command']}`; probe of {s['probe_steps']} steps, seed {s['seed']}; "
             f"rules and code fingerprint `{s['code_fingerprint']}`; this run took {s['seconds']} s "
             "(cached labels and rows not counted).", "",
             f"{s['num_entries']} entries; outcome labels: "
             + ", ".join(f"{k} {v}" for k, v in sorted(s["outcome_labels"].items()))
             + (f"; {len(s['not_labelled'])} more selected but not labelled yet (not run)"
                if s["not_labelled"] else "")
             + f". Scored: {s['num_scored']} ({s['num_test']} test, {s['num_calibration']} calibration); "
             "entries labelled `ambiguous` or `error` by their training outcome are not scored.", ""]
    lines += ["The figures are rendered from caches that these commands fill (each resumes where it "
              "stopped; a change to `rules/` or `gradadvisor/` re-runs the diagnoses, not the labels):", "",
              "- `python scripts/benchmark.py --family zoo --no-fit` (the zoo's MLP, CNN and RNN entries);",
              "- `python scripts/benchmark.py --family third-party --only NAMES --no-fit` (third-party entries "
              "with an outcome label; without `--only`, the unlabelled ones are trained for a label first);",
              "- `python scripts/benchmark.py --family third-party --false-alarms-only [--shard K/N]` (the "
              "healthy third-party sweep);",
              "- `python scripts/real_bugs/run.py` (the real buggy programs);",
              "- `python scripts/benchmark.py --family all --report-only` renders this file.", ""]
    lines += ["## Detection on the test split", "",
              "The rules' thresholds were tuned on the calibration split only (and on the models named "
              "in `benchmarks/calibration.md`, forced into it); these entries were never used to tune them.", ""]
    lines += _detection_table(s["test"]) if s["test"] else ["No test entries were scored in this run."]
    lines += ["", "P = precision, R = recall against the outcome labels; healthy FPR = share of healthy "
              "entries given any warning or error; accuracy over the entries of categories the detector "
              "covers; localisation = first bad layer within one layer of the truth (known by "
              "construction, or from the gradient measurement when it agrees with the outcome) over "
              "correctly detected entries. n/a: the peer does not cover the category or names no layer "
              "(`baselines.COVERAGE`). Peers read the whole plain training run; gradadvisor probes "
              f"{s['probe_steps']} steps.", ""]
    lines += ["### Per family (test split)", ""]
    for group, by_detector in s["test_by_group"].items():
        composition = s["composition"].get(f"{group}/test", {})
        lines += [f"**{group}** — " + ", ".join(f"{k} {v}" for k, v in sorted(composition.items())), ""]
        lines += _detection_table(by_detector) + [""]
    # The real-bug programs have their own runner and table (below).
    missing = [g for g in GROUPS if g not in s["test_by_group"]
               and not (g == "real-bugs" and "real_bug_programs" in s)]
    if missing:
        lines += ["No test entries scored in this run for: " + ", ".join(missing) + ".", ""]
    if "real_bugs" in s:
        b = s["real_bugs"]
        lines += [f"Real buggy programs (both splits): gradadvisor flags {b['flagged']} of the {b['faulty']} whose "
                  f"outcome is a fault, {b['right_category']} with the outcome's category; "
                  f"{b['published_reference']} (a different set and criterion).", ""]
    if "real_bug_programs" in s:
        b = s["real_bug_programs"]
        test, every = b["test"], b["all"]
        lines += ["### Real buggy programs", "",
                  f"From `{b['command']}` (its record `benchmarks/real_bugs.json`, full table "
                  f"`benchmarks/real_bugs.md`): {b['ported']} programs ported, {b['reproducing']} reproduce "
                  "here (the faulty program fails, its published fix learns). A program is identified when "
                  "a finding of an accepted category has warning or error severity.", "",
                  "| programs | identified | fixes with a warning or error | missed |", "|---|---|---|---|",
                  f"| test ({test['programs']}; not {', '.join(b['calibration']) or '–'}) | "
                  f"{test['identified']}/{test['programs']} | {test['fixed_with_alarm']}/{test['programs']} | "
                  f"{', '.join(test['missed']) or '–'} |",
                  f"| all reproducing ({every['programs']}) | {every['identified']}/{every['programs']} | "
                  f"{every['fixed_with_alarm']}/{every['programs']} | {', '.join(every['missed']) or '–'} |",
                  "", f"Published: {b['published_reference']}.", ""]
    if "repair_test" in s:
        r = s["repair_test"]
        lines += [f"Repair (test split): {r['repaired']}/{r['attempted']} faulty entries repaired "
                  f"({_fmt(r['rate'])}): a fix recommended, a better held-out loss than the original trained "
                  "the same way, and the saved fixed model diagnosed healthy again.", ""]
    fa = s.get("false_alarms")
    lines += ["## Healthy false alarms on third-party models", ""]
    if not fa:
        lines += ["Not run here: `python scripts/benchmark.py --family third-party --false-alarms`.", ""]
    else:
        lines += [f"Each healthy third-party model diagnosed at default settings (30 probe steps) at batch "
                  f"sizes {', '.join(map(str, FALSE_ALARM_BATCHES))} and seeds "
                  f"{FALSE_ALARM_SEEDS[0]}-{FALSE_ALARM_SEEDS[-1]}; a false alarm is any finding of "
                  f"warning or error severity. {fa['overall']['runs']} of {fa['planned_runs']} planned runs "
                  f"done (median {fa['median_seconds']} s each).", "",
                  "| seed | " + " | ".join(f"batch {b}" for b in FALSE_ALARM_BATCHES) + " |",
                  "|---|" + "---|" * len(FALSE_ALARM_BATCHES)]
        for seed in FALSE_ALARM_SEEDS:
            cells = []
            for batch in FALSE_ALARM_BATCHES:
                c = fa["by_seed_and_batch"][f"{seed}|{batch}"]
                cells.append(f"{_fmt(c['rate'])} ({c['alarms']}/{c['runs']})" if c["runs"] else "not run")
            lines.append(f"| {seed} | " + " | ".join(cells) + " |")
        held_out = fa.get("held_out") or {}
        lines += ["", f"Overall: {_fmt(fa['overall']['rate'])} ({fa['overall']['alarms']}/{fa['overall']['runs']}); "
                  f"on the models not used for calibration: {_fmt(held_out.get('rate'))} "
                  f"({held_out.get('alarms', 0)}/{held_out.get('runs', 0)}). Models never run: "
                  f"{', '.join(n for n, c in fa['by_model'].items() if not c['runs']) or 'none'}.", "",
                  "| model | calibration | outcome label | runs | with an alarm |", "|---|---|---|---|---|"]
        forced = set(s["calibration_forced"])
        for name, c in fa["by_model"].items():
            lines.append(f"| {name} | {'yes' if name in forced else 'no'} | "
                         f"{fa['outcome_labels'].get(name) or 'not labelled'} | {c['runs']} | {c['alarms']} |")
        if fa["alarms"]:
            lines += ["", "Alarms:", ""]
            for a in fa["alarms"]:
                lines.append(f"- {a['entry']} batch {a['batch_size']} seed {a['seed']}: "
                             + "; ".join(f"{x['rule']} ({x['severity']}) at {x['first_layer'] or 'model'}"
                                         for x in a["alarms"]))
        lines.append("")
    ag = s["label_agreement"]
    lines += ["## Outcome labels vs the gradient-threshold opinion", "",
              f"On the scored entries, the old gradient-threshold verification (`zoo.verify`: RMS ratios, "
              f"growth, dead and saturated fractions, thresholds close to the rules') gives the outcome label "
              f"on {ag['agree']} of {ag['compared']} ({_fmt(ag['rate'])}).", ""]
    if ag["disagreements"]:
        lines += ["| outcome / gradient opinion | entries |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in ag["disagreements"].items()]
        lines.append("")
    lines += ["## Calibration split (not a result: the thresholds may have been tuned on these)", ""]
    lines += _detection_table(s["calibration"]) if s["calibration"] else ["No calibration entries scored."]
    lines += ["", "## Entries", "",
              "| entry | family | split | built as | outcome | gradient opinion | gradadvisor | first layer (truth) "
              "| AUTOTRAINER | DeepDiagnosis | naive | s |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in sorted(rows.items(), key=lambda kv: (GROUPS.index(kv[1]["group"]), kv[1]["split"], kv[0])):
        ours = r["gradadvisor"]
        mark = "" if (ours["category"] or "healthy") == r["truth"] else " ✗"
        lines.append(
            f"| {name} | {r['group']} | {r['split']} | {r['built_as']} | {r['truth']} | "
            f"{r['gradient_opinion']['label']} | {ours['category'] or 'healthy'}{mark} | "
            f"{ours['layer'] or '–'} ({r['truth_layer'] or '–'}) | {r['AUTOTRAINER']['category'] or 'healthy'} | "
            f"{r['DeepDiagnosis']['category'] or 'healthy'} | {r['naive ratio']['category'] or 'healthy'} | "
            f"{r['diagnosis_seconds']:.1f} |")
    if s["not_labelled"]:
        lines += ["", "## Selected but not run (no outcome label yet)", "", ", ".join(s["not_labelled"])]
    unscored = [n for n in s["not_scored"]]
    if unscored:
        lines += ["", "## Not scored", "", "| entry | built as | outcome | why |", "|---|---|---|---|"]
        for name in unscored:
            record = labels.get(name) or {}
            why = "; ".join(record.get("reasons", [])) or "no detection row (not run yet, or failed)"
            lines.append(f"| {name} | {record.get('built_as', '?')} | {record.get('label', 'not labelled')} | {why} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------


def _shard(text: str) -> tuple:
    try:
        shard, shards = (int(part) for part in text.split("/"))
    except ValueError:
        shard = shards = -1
    if not 0 <= shard < shards:
        raise argparse.ArgumentTypeError(f"expected K/N with 0 <= K < N, such as 0/2; got '{text}'")
    return shard, shards


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--family", choices=FAMILY_CHOICES, default="all",
                        help="which entries (default all: zoo, third-party, real bugs)")
    parser.add_argument("--quick", action="store_true", help="only the representative entries of each family")
    parser.add_argument("--only", help="comma-separated entry names")
    parser.add_argument("--third-party", choices=("all", "quick"), default="all",
                        help="every keras.applications model (all) or the representative few (quick)")
    parser.add_argument("--list", action="store_true", help="list the entries and exit")
    parser.add_argument("--labels-only", action="store_true", help="compute the outcome labels and stop")
    parser.add_argument("--false-alarms", action="store_true",
                        help="also diagnose every healthy third-party model at batch 16/32, seeds 0-4 (long)")
    parser.add_argument("--false-alarms-only", action="store_true",
                        help="run only the false-alarm sweep, then render from the caches")
    parser.add_argument("--false-alarms-report", action="store_true",
                        help="write benchmarks/false_alarms.md (every cached false-alarm run, at any code "
                             "version, the current rules applied again to the saved probes) and stop")
    parser.add_argument("--report-only", action="store_true",
                        help="render results from the caches without training anything")
    parser.add_argument("--shard", type=_shard,
                        help="K/N: run only every N-th false-alarm run from the K-th (0-based), so that "
                             "N processes share one sweep and its cache")
    parser.add_argument("--probe-dir", default=None,
                        help="where the false-alarm sweep keeps each run's probe (default: "
                             "OUT/cache/false_alarm_probes); rules changed since a run are applied "
                             "again to its probe while the probe code is unchanged")
    parser.add_argument("--refresh", action="store_true", help="ignore cached detection and false-alarm runs")
    parser.add_argument("--refresh-labels", action="store_true", help="recompute the outcome labels")
    parser.add_argument("--steps", type=int, default=30, help="probe steps (default 30)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-fit", action="store_true", help="skip the model.fit timing")
    parser.add_argument("--repair", action="store_true",
                        help="also search for a fix (gradadvisor.search) on faulty entries and count repairs")
    parser.add_argument("--max-trials", type=int, default=4, help="search trials per entry (--repair)")
    parser.add_argument("--trial-steps", type=int, default=60, help="steps per trial (--repair)")
    parser.add_argument("--out", default=str(BENCHMARKS),
                        help="folder for results.*, labels.* and cache/ (default benchmarks/)")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.steps < 1:
        parser.error(f"--steps must be at least 1; got {args.steps}.")
    chosen = select(args.family, args.quick, args.only, third_party_quick=args.third_party == "quick")
    if args.list:
        for entry, group in chosen:
            print(f"{entry.name:40s} {group:12s} {entry.label:11s} {entry.description}")
        return 0
    started = time.perf_counter()
    everything = chosen
    if args.false_alarms_only or args.false_alarms_report:
        import third_party

        healthy = third_party.cheapest_first([e for e, g in chosen if g == "third-party" and e.label == "healthy"])
        if args.false_alarms_only:
            import_keras()
            ensure_false_alarms(healthy, args)
        else:
            rejudge_false_alarms(args)
        out = Path(args.out)
        write_atomic(out / "false_alarms.md", render_false_alarm_runs(
            read_json(out / "cache" / "false_alarms.json", {}).get("runs", {}), [e.name for e in healthy],
            read_json(out / "labels.json", {}).get("entries", {}), code_fingerprint(), calibration_names(),
            "python scripts/benchmark.py --family third-party --false-alarms-report"))
        if args.false_alarms_report:
            return 0
        args.report_only = True
    if args.report_only:
        cached = read_json(Path(args.out) / "labels.json", {}).get("entries", {})
        everything = chosen
        chosen = [(e, g) for e, g in chosen if e.name in cached]
        args.not_labelled = [e.name for e, _ in everything if e.name not in cached]
        labels = {e.name: cached[e.name] for e, _ in chosen}
    else:
        import_keras()
        labels = ensure_labels(chosen, seed=args.seed, path=Path(args.out) / "labels.json",
                               refresh=args.refresh_labels)
    if args.labels_only:
        return 0
    forced = calibration_names()
    split = assign_split([(e.name, (g, labels[e.name]["label"])) for e, g in chosen], forced)
    if args.report_only:
        key = f"{code_fingerprint()}/steps={args.steps}/seed={args.seed}" + ("/repair" if args.repair else "")
        cached_rows = read_json(Path(args.out) / "cache" / "detection.json", {}).get("rows", {})
        rows = {e.name: cached_rows[e.name] for e, _ in chosen if e.name in cached_rows
                and cached_rows[e.name].get("cache_key") == key
                and cached_rows[e.name].get("truth") == labels[e.name]["label"]}
    else:
        rows = ensure_rows(chosen, labels, args)
    healthy_third_party = [e for e, g in (everything if args.report_only else chosen)
                           if g == "third-party" and e.label == "healthy"]
    false_alarms = None
    if healthy_third_party and (args.false_alarms or args.report_only):
        if args.false_alarms and not args.report_only:
            import third_party

            runs = ensure_false_alarms(third_party.cheapest_first(healthy_third_party), args)
        else:
            rejudge_false_alarms(args)
            fingerprint = code_fingerprint()
            runs = {k: r for k, r in read_json(Path(args.out) / "cache" / "false_alarms.json", {}).get("runs", {}).items()
                    if r.get("fingerprint") == fingerprint
                    and r["entry"] in {e.name for e in healthy_third_party}}
        if runs:
            false_alarms = summarize_false_alarms(runs, healthy_third_party, labels)
    summary = summarize(chosen, labels, split, rows, false_alarms, args, time.perf_counter() - started)
    markdown = render_markdown(summary, rows, labels)
    out = Path(args.out)
    write_json(out / "results.json", {"summary": summary, "entries": rows,
                                      "split": {e.name: split[e.name] for e, _ in chosen}})
    write_atomic(out / "results.md", markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
