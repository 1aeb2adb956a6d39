"""Benchmark gradadvisor's diagnosis against a labelled, verified zoo and its peers.

For every zoo entry (``scripts/zoo.py``): build the model, train a copy for a
few hundred steps with a plain ``tf.GradientTape`` loop and derive a label from
those measurements alone; an entry whose measured label differs from the one it
was built to have is rejected (reported, then excluded).  On the verified
entries, run ``gradadvisor.api.diagnose`` (30 probe steps by default), time it
against ``model.fit`` for the same model, steps and batch size, and run the
baselines of ``scripts/baselines.py`` (AUTOTRAINER, DeepDiagnosis, a naive
first/last gradient ratio) over the same measurements.

Prints a markdown table and writes ``results.json`` and ``results.md``.

Usage:
    python scripts/benchmark.py                 # the whole zoo (about 8 minutes on 2 cores)
    python scripts/benchmark.py --quick         # 8 representative entries (about a minute)
    python scripts/benchmark.py --only a,b      # named entries
    python scripts/benchmark.py --repair        # also search for fixes and count repairs
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import baselines  # noqa: E402
import zoo  # noqa: E402
from gradadvisor._tf import import_keras  # noqa: E402

CATEGORIES = ("vanishing", "exploding", "dead_units", "saturation")
#: gradadvisor's categories in the benchmark's words (nonfinite counts as exploding).
OUR_CATEGORY = {
    "vanishing_gradients": "vanishing", "exploding_gradients": "exploding", "nonfinite": "exploding",
    "dead_units": "dead_units", "saturated_units": "saturation",
    "slow_updates": "other", "large_updates": "other", None: None,
}
DETECTORS = ("gradadvisor", "AUTOTRAINER", "DeepDiagnosis", "naive ratio")
GOALS = {"recall": 0.95, "precision": 0.95, "healthy_false_positive_rate": 0.05}
REPO = Path(__file__).resolve().parent.parent


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# One entry

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


def run_entry(entry, args, workdir) -> dict:
    """Build, verify, diagnose, time and compare one zoo entry."""
    from gradadvisor.api import diagnose

    _, keras = import_keras()
    keras.backend.clear_session()
    model, data = entry.build(args.seed)
    row = {"name": entry.name, "family": entry.family, "intended": entry.label,
           "description": entry.description, "tags": entry.tags, "data": data.name,
           "num_layers": len(model.layers), "num_params": int(model.count_params())}
    trace = zoo.measure(model, data, steps=entry.steps, batch_size=entry.batch_size, seed=args.seed)
    verdict = zoo.verify(trace)
    row["verification"] = {
        "label": verdict["label"], "reasons": verdict["reasons"], "steps": len(trace.loss),
        "seconds": round(trace.seconds, 2), "evidence": _plain(verdict["evidence"]),
    }
    row["accepted"] = verdict["label"] == entry.label
    if not row["accepted"]:
        return row
    if entry.first_bad_layer:
        row["truth_layer"], row["truth_layer_source"] = entry.first_bad_layer, "construction"
    elif verdict["first_bad_layer"] and entry.label != "healthy":
        row["truth_layer"], row["truth_layer_source"] = verdict["first_bad_layer"], "measurement"
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
    if args.repair and entry.label != "healthy":
        try:
            row["repair"] = repair(model, data, entry, options, args.max_trials, args.trial_steps, workdir)
        except Exception as error:  # one failed search must not lose the whole benchmark
            row["repair"] = {"error": f"{type(error).__name__}: {error}", "repaired": False}
    return row


def _layer_order(model) -> dict:
    """Position of each layer for "within one layer": weightless layers
    (activations, normalization) share the position of the layer before them."""
    order, position = {}, -1
    for layer in model.layers:
        if zoo._kernel_variables(layer) and type(layer).__name__ not in zoo.NORMALIZATION:
            position += 1
        order[layer.name] = max(position, 0)
    return order


def _plain(value):
    """JSON-safe copy: NaN and infinities as strings, numpy scalars as floats."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else str(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


# --------------------------------------------------------------------------
# Metrics

def _ratio(numerator, denominator):
    return None if denominator == 0 else numerator / denominator


def metrics(rows: list, detector: str) -> dict:
    """Per-category precision and recall, healthy false positives, localisation."""
    truth = [r["intended"] for r in rows]
    predicted = [r[detector]["category"] for r in rows]
    result = {"categories": {}}
    for category in CATEGORIES:
        true_positive = sum(t == category and p == category for t, p in zip(truth, predicted))
        result["categories"][category] = {
            "support": sum(t == category for t in truth),
            "predicted": sum(p == category for p in predicted),
            "precision": _ratio(true_positive, sum(p == category for p in predicted)),
            "recall": _ratio(true_positive, sum(t == category for t in truth)),
        }
    healthy = [p for t, p in zip(truth, predicted) if t == "healthy"]
    result["healthy_false_positive_rate"] = _ratio(sum(p is not None for p in healthy), len(healthy))
    result["accuracy"] = _ratio(sum((t == "healthy" and p is None) or t == p
                                    for t, p in zip(truth, predicted)), len(rows))
    localised = [r for r in rows if r["truth_layer"] and r[detector]["category"] == r["intended"]]
    hits = 0
    for r in localised:
        layer = r[detector].get("layer")
        order = r["layer_order"]
        if layer is not None and layer in order and r["truth_layer"] in order:
            hits += abs(order[layer] - order[r["truth_layer"]]) <= 1
    result["localisation"] = {"accuracy": _ratio(hits, len(localised)), "hits": hits,
                              "cases": len(localised)}
    return result


def summarize(rows: list, rejected: list, args, seconds: float) -> dict:
    accepted = rows
    summary = {
        "schema": "gradadvisor.benchmark/1",
        "command": " ".join(["python", "scripts/benchmark.py"] + sys.argv[1:]),
        "probe_steps": args.steps, "seed": args.seed, "seconds": round(seconds, 1),
        "num_candidates": len(rows) + len(rejected), "num_accepted": len(accepted),
        "num_rejected": len(rejected),
        "composition": {
            "by_label": dict(collections.Counter(r["intended"] for r in accepted)),
            "by_family": dict(collections.Counter(r["family"] for r in accepted)),
            "by_label_and_family": {f"{r_label}/{family}": count for (r_label, family), count in sorted(
                collections.Counter((r["intended"], r["family"]) for r in accepted).items())},
        },
        "metrics": {name: metrics(accepted, name) for name in DETECTORS} if accepted else {},
    }
    times = [r["diagnosis_seconds"] for r in accepted]
    if times:
        summary["time_to_diagnosis"] = {"median": round(statistics.median(times), 2),
                                        "max": round(max(times), 2)}
    overheads = [r["overhead"] for r in accepted if "overhead" in r]
    if overheads:
        summary["overhead_vs_fit"] = {"median": round(statistics.median(overheads), 2),
                                      "max": round(max(overheads), 2)}
    repairs = [r["repair"] for r in accepted if "repair" in r]
    if repairs:
        flagged = [r for r in accepted if "repair" in r and r["gradadvisor"]["category"] is not None]
        summary["repair"] = {
            "attempted": len(repairs), "repaired": sum(r["repaired"] for r in repairs),
            "rate_over_faulty": _ratio(sum(r["repaired"] for r in repairs), len(repairs)),
            "rate_over_flagged": _ratio(sum(r["repair"]["repaired"] for r in flagged), len(flagged)),
            "repaired_and_beats_chance": sum(r["repaired"] and r.get("beats_chance", False)
                                             for r in repairs),
        }
    summary["goals"] = goals(summary) if accepted else {}
    return summary


def goals(summary: dict) -> dict:
    """Which of the issue's goals are met."""
    ours = summary["metrics"]["gradadvisor"]
    others = [summary["metrics"][name] for name in DETECTORS[1:]]
    checks = {}
    for category in ("vanishing", "exploding"):
        for measure in ("recall", "precision"):
            value = ours["categories"][category][measure]
            checks[f"{category} {measure} >= {GOALS[measure]}"] = (
                None if value is None else value >= GOALS[measure])
    fpr = ours["healthy_false_positive_rate"]
    checks["healthy false-positive rate <= 0.05"] = (
        None if fpr is None else fpr <= GOALS["healthy_false_positive_rate"])
    worse = []
    for category in CATEGORIES:
        for measure in ("precision", "recall"):
            mine = ours["categories"][category][measure]
            best = max((o["categories"][category][measure] or 0.0) for o in others)
            if mine is not None and mine < best:
                worse.append(f"{category} {measure}")
    best_fpr = min((o["healthy_false_positive_rate"] for o in others
                    if o["healthy_false_positive_rate"] is not None), default=None)
    if fpr is not None and best_fpr is not None and fpr > best_fpr:
        worse.append("healthy false-positive rate")
    best_location = max((o["localisation"]["accuracy"] or 0.0) for o in others)
    if (ours["localisation"]["accuracy"] or 0.0) < best_location:
        worse.append("localisation")
    checks["every figure at least as good as the best baseline"] = not worse
    return {"checks": checks, "behind_a_baseline": worse}


# --------------------------------------------------------------------------
# Rendering

def _fmt(value, digits=2):
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def render_markdown(summary: dict, rows: list, rejected: list) -> str:
    lines = ["# gradadvisor benchmark", ""]
    lines.append(f"Command: `{summary['command']}`  ")
    lines.append(f"{summary['num_candidates']} candidates, {summary['num_accepted']} verified, "
                 f"{summary['num_rejected']} rejected; probe of {summary['probe_steps']} steps; "
                 f"total {summary['seconds']} s.")
    lines += ["", "## Detection", ""]
    header = "| detector | " + " | ".join(f"{c} P | {c} R" for c in CATEGORIES) + \
        " | healthy FPR | accuracy | localisation |"
    lines += [header, "|" + "---|" * (2 * len(CATEGORIES) + 4)]
    for name in DETECTORS:
        m = summary["metrics"].get(name)
        if not m:
            continue
        cells = []
        for category in CATEGORIES:
            c = m["categories"][category]
            cells += [_fmt(c["precision"]), _fmt(c["recall"])]
        loc = m["localisation"]
        location = (f"{_fmt(loc['accuracy'])} ({loc['hits']}/{loc['cases']})" if loc["cases"] else "–")
        lines.append(f"| {name} | " + " | ".join(cells) +
                     f" | {_fmt(m['healthy_false_positive_rate'])} | {_fmt(m['accuracy'])} | {location} |")
    lines.append("")
    lines.append("P = precision, R = recall over the verified entries; healthy FPR = share of healthy "
                 "entries given any warning; localisation = first bad layer within one layer of the "
                 "truth, over correctly detected entries whose first bad layer is known. Baselines read "
                 "the whole verification run (a few hundred steps); gradadvisor probes "
                 f"{summary['probe_steps']} steps.")
    lines += ["", "## Cost", ""]
    if "time_to_diagnosis" in summary:
        t = summary["time_to_diagnosis"]
        lines.append(f"- time to diagnosis: median {t['median']} s, max {t['max']} s")
    if "overhead_vs_fit" in summary:
        o = summary["overhead_vs_fit"]
        lines.append(f"- diagnosis time / `model.fit` time (same model, steps, batch): median "
                     f"{o['median']}, max {o['max']}")
    if "repair" in summary:
        r = summary["repair"]
        lines.append(f"- repair: {r['repaired']}/{r['attempted']} faulty entries repaired "
                     f"(rate {_fmt(r['rate_over_faulty'])}; over entries gradadvisor flagged "
                     f"{_fmt(r['rate_over_flagged'])}); {r['repaired_and_beats_chance']} of the "
                     "repaired models also reach a held-out loss under 0.9x the chance-level loss. "
                     "A repair: recommended, better held-out loss than the original trained the "
                     "same way, and the saved fixed model diagnosed healthy again.")
    lines += ["", "## Goals", ""]
    for text, met in summary.get("goals", {}).get("checks", {}).items():
        lines.append(f"- [{'x' if met else ' '}] {text}" + (" (no such entries)" if met is None else ""))
    behind = summary.get("goals", {}).get("behind_a_baseline")
    if behind:
        lines.append(f"- behind a baseline on: {', '.join(behind)}")
    lines += ["", "## Zoo", ""]
    comp = summary["composition"]
    lines.append("By label: " + ", ".join(f"{k} {v}" for k, v in sorted(comp["by_label"].items())) + "  ")
    lines.append("By family: " + ", ".join(f"{k} {v}" for k, v in sorted(comp["by_family"].items())))
    lines += ["", "| entry | family | label | gradadvisor | first layer (truth) | AUTOTRAINER | "
              "DeepDiagnosis | naive | s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ours = r["gradadvisor"]
        mark = "" if (ours["category"] or "healthy") == r["intended"] else " ✗"
        layer = f"{ours['layer'] or '–'} ({r['truth_layer'] or '–'})"
        lines.append(f"| {r['name']} | {r['family']} | {r['intended']} | "
                     f"{ours['category'] or 'healthy'}{mark} | {layer} | "
                     f"{r['AUTOTRAINER']['category'] or 'healthy'} | "
                     f"{r['DeepDiagnosis']['category'] or 'healthy'} | "
                     f"{r['naive ratio']['category'] or 'healthy'} | {r['diagnosis_seconds']:.1f} |")
    if rejected:
        lines += ["", "## Rejected by verification", "", "| entry | intended | measured | why |",
                  "|---|---|---|---|"]
        for r in rejected:
            v = r["verification"]
            lines.append(f"| {r['name']} | {r['intended']} | {v['label']} | {'; '.join(v['reasons'])} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------

def select(args) -> list:
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in zoo.BY_NAME]
        if unknown:
            raise SystemExit(f"There is no zoo entry called '{unknown[0]}'. "
                             f"Choose from: {', '.join(zoo.BY_NAME)}.")
        return [zoo.BY_NAME[n] for n in names]
    if args.quick:
        return [entry for entry in zoo.ZOO if entry.quick]
    return list(zoo.ZOO)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--quick", action="store_true", help="only the representative entries")
    parser.add_argument("--only", help="comma-separated entry names")
    parser.add_argument("--list", action="store_true", help="list the zoo and exit")
    parser.add_argument("--steps", type=int, default=30, help="probe steps (default 30)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-fit", action="store_true", help="skip the model.fit timing")
    parser.add_argument("--repair", action="store_true",
                        help="also search for a fix (gradadvisor.search) and count repairs")
    parser.add_argument("--max-trials", type=int, default=4, help="search trials per entry (--repair)")
    parser.add_argument("--trial-steps", type=int, default=60, help="steps per trial (--repair)")
    parser.add_argument("--out", default=str(REPO / "benchmarks"),
                        help="folder for results.json and results.md (default benchmarks/)")
    args = parser.parse_args(argv)
    if args.list:
        for entry in zoo.ZOO:
            print(f"{entry.name:38s} {entry.family:14s} {entry.label:11s} {entry.description}")
        return 0
    if args.steps < 1:
        parser.error(f"--steps must be at least 1; got {args.steps}.")
    if args.repair:
        try:
            import gradadvisor.search  # noqa: F401
        except ImportError as error:
            parser.error(f"--repair needs gradadvisor.search.recommend, which could not be imported "
                         f"({error}). Run without --repair, or install a gradadvisor that has it.")
    entries = select(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import_keras()
    started = time.perf_counter()
    rows, rejected = [], []
    with tempfile.TemporaryDirectory(prefix="gradadvisor-benchmark-") as workdir:
        for number, entry in enumerate(entries, start=1):
            entry_started = time.perf_counter()
            row = run_entry(entry, args, workdir)
            if row["accepted"]:
                rows.append(row)
                got = row["gradadvisor"]["category"] or "healthy"
                log(f"[{number}/{len(entries)}] {entry.name}: {entry.label} -> gradadvisor {got} "
                    f"({time.perf_counter() - entry_started:.1f} s)")
            else:
                rejected.append(row)
                log(f"[{number}/{len(entries)}] {entry.name}: REJECTED, measured "
                    f"{row['verification']['label']}: {'; '.join(row['verification']['reasons'])}")
    seconds = time.perf_counter() - started
    summary = summarize(rows, rejected, args, seconds)
    markdown = render_markdown(summary, rows, rejected)
    results = {"summary": summary, "entries": rows, "rejected": rejected}
    (out / "results.json").write_text(json.dumps(_plain(results), indent=2) + "\n")
    (out / "results.md").write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
