"""Train every ported real-bug program and its fix, and record whether the fault shows.

Plain Keras only (no gradadvisor): see ``_training.py`` for what is measured and
how an outcome is decided.  Writes ``benchmarks/real_bugs.json`` and
``benchmarks/real_bugs.md``, keeping the detection results already recorded for
programs whose label did not change.

Usage:
    python scripts/real_bugs/label.py              # every program (a few minutes on 2 cores)
    python scripts/real_bugs/label.py --only so-31880720-one-unit-softmax,so_48934338
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import real_bugs  # noqa: E402
from real_bugs import _report, _training  # noqa: E402


def versions() -> dict:
    import keras
    import tensorflow as tf

    return {"keras": keras.__version__, "tensorflow": tf.__version__}


def label(selected, seed: int = 0, log=print) -> dict:
    """Train the selected programs and return the results dict (labels only)."""
    previous = _report.load() or {}
    known = {entry["name"]: entry for entry in previous.get("entries", [])}
    records = []
    start = time.perf_counter()
    for entry in real_bugs.entries():
        if entry not in selected:
            if entry.name in known:
                records.append(known[entry.name])
            continue
        buggy = _training.train(entry, fixed=False, seed=seed)
        fixed = (_training.train(entry, fixed=True, seed=seed)
                 if entry.build_fixed is not None else None)
        reproduces, observed = _training.judge(entry, buggy, fixed)
        log(f"{entry.name}: reproduces={reproduces}; {observed}")
        record = {
            "name": entry.name, "family": entry.family, "source": entry.source,
            "category": entry.category, "accepted": list(entry.accepted),
            "fault": entry.fault, "task": entry.task, "symptom": entry.symptom,
            "deepdiagnosis_identified": entry.deepdiagnosis_identified,
            "seed": seed, "buggy": buggy, "fixed": fixed,
            "reproduces": reproduces, "observed": observed,
        }
        old = known.get(entry.name)
        if old and old.get("reproduces") == reproduces:
            for key in ("detection", "detection_program_batch", "fixed_detection"):
                if key in old:
                    record[key] = old[key]
        records.append(record)
    order = {entry.name: index for index, entry in enumerate(real_bugs.entries())}
    records.sort(key=lambda record: order.get(record["name"], len(order)))
    results = dict(previous)
    results.update({"schema": _report.SCHEMA, "entries": records, "versions": versions()})
    seconds = round(time.perf_counter() - start, 1)
    # The page quotes the time of a full run; a partial one must not replace it.
    if len(selected) == len(real_bugs.entries()):
        results["label_seconds"] = seconds
    else:
        results["last_partial_label_seconds"] = seconds
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated names or modules")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    names = [name for name in args.only.split(",") if name]
    selected = real_bugs.entries(names or None)
    if names and not selected:
        print(f"No program matches --only {args.only!r}; names are: "
              f"{', '.join(e.name for e in real_bugs.entries())}.", file=sys.stderr)
        return 2
    results = label(selected, seed=args.seed)
    _report.save(results)
    print(f"wrote {_report.JSON_PATH} and {_report.MARKDOWN_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
