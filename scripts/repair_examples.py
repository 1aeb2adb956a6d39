"""Check the search on every faulty built-in example, with the default budget.

For each example whose expected verdict is not healthy: diagnose it with the
search on (default budget), save the fixed model, load it back from the file,
diagnose the loaded model again, and report the time, the confirmation's
held-out losses and the fixed model's verdict, as a markdown table.

Usage: python scripts/repair_examples.py [--examples a,b] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", help="comma-separated example names (default: every faulty one)")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()

    from gradadvisor._tf import import_keras
    from gradadvisor.api import diagnose
    from gradadvisor.examples import EXAMPLES, build_example

    import_keras()
    names = args.examples.split(",") if args.examples else [n for n, e in EXAMPLES.items() if e.expected]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            model, x, y = build_example(name)
            path = Path(folder) / f"{name}-fixed.keras"
            started = time.perf_counter()
            diagnosis = diagnose(model, x, y, search=True, search_options={"save_fixed": path})
            seconds = time.perf_counter() - started
            recommendation = diagnosis.recommendation or {}
            confirmation = recommendation.get("confirmation") or {}
            fixed_verdict = None
            if path.exists():
                fixed = diagnose(str(path), x, y)
                fixed_verdict = fixed.status
            rows.append({
                "example": name, "found": diagnosis.primary_category, "seconds": round(seconds, 1),
                "recommended": recommendation.get("recommended"),
                "setup": recommendation.get("reason", "").split(";")[0].replace("Recommended: ", ""),
                "original_val_loss": (confirmation.get("original") or {}).get("val_loss"),
                "fixed_val_loss": (confirmation.get("recommended") or {}).get("val_loss"),
                "fixed_model_verdict": fixed_verdict,
            })
            print(json.dumps(rows[-1]), flush=True)
    print("\n| example | found | search s | recommended | setup | held-out loss before | after | saved model re-diagnosed |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        def loss(value):
            return "diverged" if value in (None, "nan", "inf") else f"{float(value):.3f}"
        print(f"| {row['example']} | {row['found']} | {row['seconds']} | {row['recommended']} | {row['setup']} | "
              f"{loss(row['original_val_loss'])} | {loss(row['fixed_val_loss'])} | {row['fixed_model_verdict']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
