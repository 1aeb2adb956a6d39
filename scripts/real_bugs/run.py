"""Ask gradadvisor about every real-bug program whose failure reproduces here.

For each program labelled ``reproduces`` in ``benchmarks/real_bugs.json`` (see
``label.py``), run ``gradadvisor.diagnose(model, x, y, search=False)`` on the
faulty program at the default settings (30 steps, batch 32, seed 0) and at the
program's own batch size, and on its fix at the default settings.  A program is
identified when a finding of one of its accepted categories has severity warning
or error; a warning or error on the fix is a false alarm.  Rewrites
``benchmarks/real_bugs.json`` and ``benchmarks/real_bugs.md`` with the detection
columns and the count "identified n/N".

Usage:
    python scripts/real_bugs/run.py              # detection on the recorded labels
    python scripts/real_bugs/run.py --relabel    # train everything again first
    python scripts/real_bugs/run.py --only so_31880720
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPOSITORY = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPOSITORY / "scripts"))
sys.path.insert(0, str(REPOSITORY))

import real_bugs  # noqa: E402
from real_bugs import _report  # noqa: E402

SEVERE = ("warning", "error")


def detect(entry, *, fixed: bool, batch_size: int, seed: int = 0) -> dict:
    """Diagnose the program (or its fix) and say whether the fault was identified."""
    import keras

    import gradadvisor

    keras.utils.set_random_seed(seed)
    model = entry.build_fixed() if fixed else entry.build()
    x, y = (entry.data_fixed if fixed else entry.data)(seed)
    start = time.perf_counter()
    diagnosis = gradadvisor.diagnose(model, x, y, batch_size=min(batch_size, len(x)),
                                     seed=seed, search=False)
    seconds = time.perf_counter() - start
    findings = [{"rule": f.rule, "category": f.category, "severity": f.severity,
                 "layers": list(f.layers)[:3]} for f in diagnosis.findings]
    identified = any(f["category"] in entry.accepted and f["severity"] in SEVERE
                     for f in findings)
    return {"status": diagnosis.status, "identified": identified, "findings": findings,
            "batch_size": min(batch_size, len(x)), "seconds": round(seconds, 2)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--relabel", action="store_true",
                        help="train every program and its fix again before diagnosing")
    parser.add_argument("--only", default="", help="comma-separated names or modules")
    args = parser.parse_args(argv)
    names = [name for name in args.only.split(",") if name]
    selected = real_bugs.entries(names or None)
    if names and not selected:
        print(f"No program matches --only {args.only!r}; names are: "
              f"{', '.join(e.name for e in real_bugs.entries())}.", file=sys.stderr)
        return 2
    results = _report.load()
    if args.relabel or results is None:
        from real_bugs import label

        results = label.label(selected)
        _report.save(results)
    records = {record["name"]: record for record in results["entries"]}
    start = time.perf_counter()
    for entry in selected:
        record = records.get(entry.name)
        if record is None:
            print(f"{entry.name}: not labelled yet; run scripts/real_bugs/label.py first.")
            continue
        for key in ("detection", "detection_program_batch", "fixed_detection"):
            record.pop(key, None)
        if not record.get("reproduces"):
            print(f"{entry.name}: does not reproduce here, not diagnosed")
            continue
        record["detection"] = detect(entry, fixed=False, batch_size=32)
        record["detection_program_batch"] = detect(entry, fixed=False,
                                                   batch_size=entry.batch_size)
        if entry.build_fixed is not None:
            record["fixed_detection"] = detect(entry, fixed=True, batch_size=32)
        rules = [f"{f['rule']}:{f['severity']}" for f in record["detection"]["findings"]]
        print(f"{entry.name}: identified={record['detection']['identified']} "
              f"(own batch: {record['detection_program_batch']['identified']}); "
              f"findings {rules}; fix status {record.get('fixed_detection', {}).get('status')}")
    seconds = round(time.perf_counter() - start, 1)
    # The page quotes the time of a full run; a partial one must not replace it.
    if len(selected) == len(real_bugs.entries()):
        results["run_seconds"] = seconds
    else:
        results["last_partial_run_seconds"] = seconds
    results["run_command"] = "python scripts/real_bugs/run.py" + (
        " --relabel" if args.relabel else "")
    _report.save(results)
    found, total = _report.counts(results)
    print(f"identified {found}/{total} (DeepDiagnosis published "
          f"{_report.DEEPDIAGNOSIS_PUBLISHED[0]}/{_report.DEEPDIAGNOSIS_PUBLISHED[1]} "
          "on a different set)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
