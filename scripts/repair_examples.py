"""Time to a verified fix on every faulty built-in example, with the default budget.

For each example whose expected verdict is not healthy: diagnose it with the
search on (default budget), save the fixed model, load it back from the file
and diagnose it again.  A fix counts as verified under the repair definition
of ``scripts/bench_repair.py`` (recommended; held-out loss at most 0.9x its
start and 0.9x chance; better than the original trained the same way; the
saved model healthy again).  The time is that of the diagnosis with its
search (probe, trials, confirmation, saving and re-probing the fixed model);
the independent re-diagnosis is not included.

Usage: python scripts/repair_examples.py [--examples a,b] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", help="comma-separated example names (default: every faulty one)")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()

    from bench_repair import check_repair
    from gradadvisor._tf import import_keras
    from gradadvisor.examples import EXAMPLES, build_example

    import_keras()
    names = args.examples.split(",") if args.examples else [n for n, e in EXAMPLES.items() if e.expected]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            model, x, y = build_example(name)
            row = check_repair(name, model, x, y, batch_size=32, workdir=folder)
            rows.append(row)
            print(json.dumps({k: row[k] for k in ("name", "repaired", "seconds", "setup")}), flush=True)
    print("\n| example | found | s | CPU s | load | recommended | trains | beats original | saved model re-diagnosed | "
          "held-out loss start -> end (chance) | setup or reason |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        def loss(value):
            return "—" if value is None else f"{float(value):.3f}"
        text = row["setup"] if row["recommended"] else (row.get("reason") or "")[:140]
        load = row.get("load") or ["—", "—"]
        print(f"| {row['name']} | {row['found']} | {row['seconds']} | {row.get('cpu_seconds', '—')} | "
              f"{load[0]}-{load[1]} | {row['recommended']} | {row['trains']} | "
              f"{row['beats_original']} | {row['rediagnosis'] or '—'} | {loss(row['start_val_loss'])} -> "
              f"{loss(row['val_loss'])} ({loss(row['chance_loss'])}) | {text} |")
    repaired = [row["seconds"] for row in rows if row["repaired"]]
    print(f"\nverified fixes: {len(repaired)}/{len(rows)}; median time to a verified fix "
          f"{statistics.median(repaired) if repaired else float('nan'):.1f} s; median over all faulty "
          f"examples {statistics.median(row['seconds'] for row in rows):.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, default=str))


if __name__ == "__main__":
    main()
