"""Write the real-bug results: ``benchmarks/real_bugs.json`` and ``benchmarks/real_bugs.md``.

Both files are rendered from one results dict (the JSON is the record; the
markdown is a view of it) and written atomically.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

from gradadvisor.jsonsafe import jsonable

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
JSON_PATH = BENCHMARKS / "real_bugs.json"
MARKDOWN_PATH = BENCHMARKS / "real_bugs.md"
SCHEMA = "gradadvisor.real_bugs/1"
#: DeepDiagnosis (ICSE 2022, Table 6) reports identifying 46 of its 53 programs.
DEEPDIAGNOSIS_PUBLISHED = (46, 53)


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one step, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def load() -> dict | None:
    """The recorded results, or None when the labeller has not run yet."""
    if not JSON_PATH.exists():
        return None
    results = json.loads(JSON_PATH.read_text(encoding="utf-8"))
    return results if results.get("schema") == SCHEMA else None


def save(results: dict) -> None:
    """Write the JSON record and its markdown view."""
    write_atomic(JSON_PATH, json.dumps(jsonable(results), indent=2, sort_keys=False) + "\n")
    write_atomic(MARKDOWN_PATH, render_markdown(results))


def _number(value) -> str:
    if value is None:
        return "-"
    value = float(value)
    if not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-3):
        return f"{value:.2e}"
    return f"{value:.3f}"


def _run_cell(run: dict | None, task: str) -> str:
    if run is None:
        return "no fix in source"
    metric = "R^2" if task == "regression" else "acc"
    return (f"{_number(run['loss_before'])} -> {_number(run['loss_after'])} "
            f"({run['outcome']}, {metric} {_number(run['score'])})")


def _detection_cell(detection: dict | None) -> str:
    if detection is None:
        return "not run"
    mark = "**yes**" if detection["identified"] else "no"
    flagged = [f"{f['rule']} {f['category']} ({f['severity']})" for f in detection["findings"]
               if f["severity"] in ("warning", "error")]
    return f"{mark}: {', '.join(flagged) if flagged else 'healthy'}"


def _published(entry: dict) -> str:
    value = entry.get("deepdiagnosis_identified")
    return "not in table" if value is None else ("yes" if value else "no")


def counts(results: dict, key: str = "detection") -> tuple[int, int]:
    """(identified, reproducing programs) for one detection setting."""
    reproducing = [e for e in results["entries"] if e.get("reproduces")]
    found = sum(1 for e in reproducing if (e.get(key) or {}).get("identified"))
    return found, len(reproducing)


def exact_count(results: dict) -> int:
    """Reproducing programs with a warning or error of the expected category itself."""
    return sum(
        1 for e in results["entries"] if e.get("reproduces") and any(
            f["category"] == e["category"] and f["severity"] in ("warning", "error")
            for f in (e.get("detection") or {}).get("findings", [])))


def false_alarm_count(results: dict) -> tuple[int, int]:
    """(fixes with a warning or error, fixes diagnosed)."""
    diagnosed = [e["fixed_detection"] for e in results["entries"] if e.get("fixed_detection")]
    return sum(1 for d in diagnosed if d["status"] != "healthy"), len(diagnosed)


def render_markdown(results: dict) -> str:
    """The markdown page: how to re-run, one row per program, the totals."""
    entries = results["entries"]
    lines = [
        "# Real buggy programs from published benchmarks",
        "",
        "Training programs with a known fault, re-typed in Keras 3 from DeepLocalize's Stack",
        "Overflow benchmark (the benchmark DeepDiagnosis, ICSE 2022, also evaluates) and from",
        "AUTOTRAINER's (ICSE 2021) artifact; each module under `scripts/real_bugs/` cites its",
        "source and says what changed in the port (data stand-ins for unpublished or",
        "downloaded data sets, fewer epochs, Keras 2.2 loss formulas where Keras 3 differs).",
        "",
        "**Labels come from training, not from gradadvisor.** `scripts/real_bugs/label.py` trains",
        "every program and its fix with plain `model.fit` (the source's optimizer, loss and batch",
        "size) and measures the task metric on the training data: accuracy over the",
        "majority-class rate, or R^2.  A program *reproduces* when it fails the way the source",
        "says (loss NaN or ten times higher; or within 10% of the way from chance to perfect)",
        "while the source's fix learns (at least 25% of that way).  Programs that do not",
        "reproduce under Keras 3 are kept and shown with what happened instead.",
        "",
        "**Expected categories** come from the fault as the source shows it: DeepLocalize's",
        "benchmark has a buggy and a correct version of each program (the category follows",
        "what the correct version changes), AUTOTRAINER names the problem of each case.",
        "",
        "**Detection.** `scripts/real_bugs/run.py` runs `gradadvisor.diagnose(model, x, y,",
        "search=False)` on every reproducing program, at the default settings (30 steps,",
        "batch 32, seed 0) and at the program's own batch size.  A program is *identified*",
        "when a finding of one of its accepted categories has severity warning or error.",
        "The fix of each program is diagnosed too: a warning or error there is a false alarm.",
        "The detection columns reflect the rules shipped in this version; re-run",
        "`run.py` after the rules change.",
        "",
        "Re-run everything (labels, then detection):",
        "",
        "    python scripts/real_bugs/run.py --relabel",
        "",
        "or only the detection, on the recorded labels: `python scripts/real_bugs/run.py`.",
        "",
    ]
    if results.get("label_seconds") is not None:
        run_seconds = results.get("run_seconds")
        lines.append(f"Labelling every program took {results['label_seconds']:.0f} s and detection "
                     f"{'-' if run_seconds is None else round(run_seconds)} s "
                     "on a shared 2-core CPU machine "
                     "(other jobs running; the times are indicative only).  "
                     f"Versions: {results.get('versions', {})}.")
        lines.append("")
    lines += [
        "| program | category (source) | reproduces | faulty: loss before -> after | "
        "fix: loss before -> after | identified (defaults) | identified (program's batch) | "
        "fix flagged | DeepDiagnosis (Table 6) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in entries:
        reproduces = "yes" if entry.get("reproduces") else "no"
        own_batch = (_detection_cell(entry.get("detection_program_batch"))
                     if entry.get("reproduces") else "-")
        fix_detection = entry.get("fixed_detection")
        fix_flag = "-" if fix_detection is None else (
            "yes" if fix_detection["status"] != "healthy" else "no")
        lines.append(
            f"| `{entry['name']}` | {entry['category']} | {reproduces} | "
            f"{_run_cell(entry.get('buggy'), entry['task'])} | "
            f"{_run_cell(entry.get('fixed'), entry['task'])} | "
            f"{_detection_cell(entry.get('detection')) if entry.get('reproduces') else '-'} | "
            f"{own_batch} | "
            f"{fix_flag} | {_published(entry)} |")
    found, total = counts(results)
    found_own, _ = counts(results, "detection_program_batch")
    published_found, published_total = DEEPDIAGNOSIS_PUBLISHED
    alarms, fixes = false_alarm_count(results)
    overlap = [e for e in entries if e.get("reproduces")
               and e.get("deepdiagnosis_identified") is not None]
    published_overlap = (sum(1 for e in overlap if e["deepdiagnosis_identified"]), len(overlap))
    lines += [
        "",
        f"**Identified {found}/{total}** reproducing programs at the default settings "
        f"({found_own}/{total} at each program's own batch size; {exact_count(results)}/{total} "
        "with a finding of the expected category itself, the rest through another accepted "
        f"category).  The fixes drew a warning or error in {alarms}/{fixes} cases (false "
        "alarms: each fix learns).  DeepDiagnosis reports "
        f"identifying {published_found}/{published_total} on its own benchmark (Table 6 of "
        "the ICSE 2022 paper): the sets differ (ours is a subset of its Stack Overflow",
        "programs plus two AUTOTRAINER cases, ported to Keras 3 and kept only when the failure",
        "reproduces), and its \"identified\" is its own criterion, so the two numbers are not",
        "a head-to-head comparison.  On the reproducing programs that are also in its table,",
        f"DeepDiagnosis's artifact reports {published_overlap[0]}/{published_overlap[1]} "
        "identified (on the Keras 2.2 originals).",
        "",
        "## Sources and what each program is",
        "",
    ]
    for entry in entries:
        lines.append(f"- `{entry['name']}` ({entry['category']}; accepted: "
                     f"{', '.join(entry['accepted'])}): {entry['fault']}.  Observed: "
                     f"{entry.get('observed', 'not labelled')}.  Source: {entry['source']}")
    lines += [
        "",
        "## Not covered",
        "",
        "- Programs of DeepLocalize's Stack Overflow benchmark left out: faults in the data or",
        "  labels (59325381 divides the labels by 255; 50306988 draws one class with low and",
        "  high swapped; 39217567's fix changes the target), fixes that are not about a training",
        "  failure (31627380, 50481178: a two-unit softmax swapped for a sigmoid or back;",
        "  47724077: Adam swapped for SGD; 48594888: batch 500 vs 1000; 44164749), data that",
        "  cannot be stood in for with any confidence (39525358, 48251943, 58609115, 34673164:",
        "  unpublished CSV files whose scale is the fault), 50079585 (a three-class image set",
        "  read as binary labels: in scope, not ported for lack of time) and 41372874 (no",
        "  correct version).  Its GitHub programs and AUTOTRAINER's generated models are not",
        "  ported; DeepFD's other subject (59282996) is a label fault.",
        "- Each label is one seed (0) and a shortened training run (see each module); a program",
        "  that fails only on some seeds (AUTOTRAINER reports dying ReLU in about half its runs)",
        "  may be labelled either way.",
        "",
    ]
    return "\n".join(lines)
