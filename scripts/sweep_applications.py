"""Apply every surgery dimension to every keras.applications model, and check each result.

For each application model that builds with ``weights=None`` at a small input
(32x32; Xception 71x71; InceptionV3 and InceptionResNetV2 75x75), compiled with
SGD and sparse categorical cross-entropy for 10 classes, and for each surgery
dimension below, the sweep:

1. rewrites the model with ``gradadvisor.surgery.rewrite`` (the rewrite must
   not raise);
2. checks that every layer the rewrite did not re-initialise has exactly the
   weights it had in the original (bit for bit, compared as NumPy arrays);
3. takes one real training step (``train_on_batch``, run eagerly, on a batch of
   2 random images) and checks that the loss is finite;

and at the end checks that the original model's weights did not change.  Each
model runs in a child process (memory is returned after every model) with a
time limit.  Times are wall-clock seconds per dimension on a shared machine:
the rewrite (weights copied) plus the eager training step.

Dimensions: ``initializer`` (he_normal), ``activation-gelu`` (a replacement in
the layer's config), ``activation-prelu`` (an inserted PReLU layer),
``batchnorm-before``, ``batchnorm-after``, ``optimizer`` (clipnorm 1 and
learning rate x0.1: no layer changes).  ``layernorm`` and ``irnn`` only touch
recurrent models, so on these convolutional models the sweep checks, without
building, that they plan no change.

Usage:
    python scripts/sweep_applications.py [--models MobileNetV2,ResNet50]
        [--dimensions initializer,batchnorm-before] [--timeout 900]
        [--output benchmarks/applications.md] [--json results.json] [--update results.json]

Writes the markdown table to ``--output`` after every model (atomically), so
a stopped sweep keeps what it measured; ``--update earlier.json`` reruns some
models and keeps the earlier run's results for the others.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: Every application in keras.applications (Keras 3.15): one of each family
#: first, then the larger variants, so a time-limited sweep covers the most kinds.
MODELS = [
    "MobileNetV3Small", "MobileNetV2", "MobileNet", "EfficientNetB0", "EfficientNetV2B0", "DenseNet121",
    "ResNet50", "ResNet50V2", "VGG16", "Xception", "InceptionV3", "ConvNeXtTiny", "NASNetMobile",
    "MobileNetV3Large", "InceptionResNetV2", "EfficientNetB1", "EfficientNetV2B1", "VGG19",
    "EfficientNetV2B2", "EfficientNetB2", "DenseNet169", "EfficientNetV2B3", "EfficientNetB3",
    "DenseNet201", "ResNet101", "ResNet101V2", "EfficientNetV2S", "EfficientNetB4", "ConvNeXtSmall",
    "ResNet152", "ResNet152V2", "EfficientNetB5", "EfficientNetV2M", "EfficientNetB6", "ConvNeXtBase",
    "EfficientNetB7", "NASNetLarge", "EfficientNetV2L", "ConvNeXtLarge", "ConvNeXtXLarge",
]
SIZES = {"Xception": 71, "InceptionV3": 75, "InceptionResNetV2": 75}
DIMENSIONS = {
    "initializer": {"initializer": "he_normal"},
    "activation-gelu": {"activation": "gelu"},
    "activation-prelu": {"activation": "prelu"},
    "batchnorm-before": {"normalization": "batchnorm_before"},
    "batchnorm-after": {"normalization": "batchnorm_after"},
    "optimizer": {"clipping": "clipnorm", "clip_threshold": 1.0, "learning_rate_scale": 0.1},
}
NO_OP_DIMENSIONS = {"layernorm": {"normalization": "layernorm"}, "irnn": {"recurrence": "irnn"}}


def _one(name: str, dimensions: list) -> dict:
    """Sweep one model in this process; the result as a dict."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import warnings

    import numpy as np

    from gradadvisor._tf import import_keras
    from gradadvisor.probe import leaf_layers
    from gradadvisor.surgery import Setup, describe_changes, rewrite

    warnings.simplefilter("ignore")
    _, keras = import_keras()
    keras.utils.set_random_seed(0)
    size = SIZES.get(name, 32)
    started = time.perf_counter()
    try:
        model = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3), classes=10)
    except Exception as error:
        return {"model": name, "size": size, "build_error": _short(error)}
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
    original = {id(v): np.array(v.numpy(), copy=True) for v in model.weights}
    result = {"model": name, "size": size, "parameters": int(model.count_params()),
              "layers": len(list(leaf_layers(model))), "build_seconds": round(time.perf_counter() - started, 1),
              "rows": []}
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, size, size, 3)).astype("float32")
    y = np.array([1, 7], dtype="int32")
    old_layers = dict(leaf_layers(model))
    for dimension in dimensions:
        row = {"dimension": dimension}
        started = time.perf_counter()
        try:
            if dimension in NO_OP_DIMENSIONS:
                changes = describe_changes(model, Setup(**NO_OP_DIMENSIONS[dimension]))
                row.update(status="ok" if not changes else "failed", changes=len(changes), kept=0,
                           reason="" if not changes else f"planned {len(changes)} changes on a model "
                           "without a recurrent layer")
                row["seconds"] = round(time.perf_counter() - started, 1)
                result["rows"].append(row)
                continue
            rewritten = rewrite(model, Setup(**DIMENSIONS[dimension]))
            new_layers = dict(leaf_layers(rewritten.model))
            reinitialised = {entry["layer"] for entry in rewritten.changes
                             if entry["change"].endswith("initializer")}
            # A replaced activation layer (ReLU -> PReLU) keeps its name but is another layer.
            changed_weights = [
                path for path, layer in old_layers.items()
                if path not in reinitialised and path in new_layers
                and type(new_layers[path]) is type(layer)
                and not _same_weights(layer, new_layers[path], np)]
            missing = [path for path in old_layers if path not in new_layers]
            # One eager step: the same optimizer update as a compiled one, without a
            # tracing cost of tens of seconds per model on a busy machine.
            rewritten.model.run_eagerly = True
            loss = float(np.asarray(rewritten.model.train_on_batch(x, y)))
            layer_changes = [entry for entry in rewritten.changes if entry["layer"] != "(optimizer)"]
            problems = []
            if missing:
                problems.append(f"{len(missing)} layers missing (first: {missing[0]})")
            if changed_weights:
                problems.append(f"{len(changed_weights)} untouched layers changed weights "
                                f"(first: {changed_weights[0]})")
            if not np.isfinite(loss):
                problems.append(f"loss {loss}")
            row.update(status="failed" if problems else "ok", loss=round(loss, 4),
                       changes=len({entry["layer"] for entry in layer_changes}),
                       inserted=sum(entry["change"] == "insert_after" for entry in layer_changes),
                       optimizer_changes=len(rewritten.changes) - len(layer_changes),
                       kept=len(rewritten.skipped), reason="; ".join(problems),
                       kept_reasons=_reason_counts(rewritten.skipped))
            del rewritten
        except Exception as error:
            row.update(status="failed", reason=_short(error))
        row["seconds"] = round(time.perf_counter() - started, 1)
        result["rows"].append(row)
    result["original_unchanged"] = all(np.array_equal(original[id(v)], v.numpy()) for v in model.weights)
    return result


def _same_weights(old, new, np) -> bool:
    before, after = old.get_weights(), new.get_weights()
    return len(before) == len(after) and all(
        a.shape == b.shape and np.array_equal(a, b) for a, b in zip(before, after))


def _reason_counts(skipped: list) -> dict:
    counts: dict = {}
    for entry in skipped:
        reason = entry["reason"].split(" (")[0] if "could not be rebuilt" in entry["reason"] else entry["reason"]
        counts[reason] = counts.get(reason, 0) + 1
    return counts


def _short(error: Exception) -> str:
    text = " ".join(str(error).split())
    text = text if len(text) <= 200 else text[:197] + "..."
    return f"{type(error).__name__}: {text}"


def _run_child(name: str, dimensions: list, timeout: float) -> dict:
    command = [sys.executable, __file__, "--one", name, "--dimensions", ",".join(dimensions)]
    environment = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment)
    except subprocess.TimeoutExpired:
        return {"model": name, "size": SIZES.get(name, 32),
                "build_error": f"stopped after the sweep's {timeout:.0f} s limit per model"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = " ".join(done.stderr.strip().splitlines()[-1:]) or f"exit code {done.returncode}"
        return {"model": name, "size": SIZES.get(name, 32), "build_error": f"child process failed: {tail[:200]}"}
    result = json.loads(lines[-1])
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    return result


def _markdown(results: list, dimensions: list, command: str, seconds: float, pending=()) -> str:
    lines = ["# Model surgery on keras.applications", "",
             f"Written by `{command}` ({seconds / 60:.0f} min; 2 CPU cores shared with other jobs, so "
             "times vary run to run).", "",
             "Each model is built with `weights=None` and 10 classes, compiled with SGD(0.01) and sparse "
             "categorical cross-entropy. For each dimension: `gradadvisor.surgery.rewrite` builds the "
             "rewritten model, every layer it did not re-initialise must hold exactly the original's "
             "weights, and one eager `train_on_batch` on 2 random images must give a finite loss. "
             "`layernorm` and `irnn` only act on recurrent models: here the check is that they plan no "
             "change (nothing is built). The original model's weights are checked unchanged at the end. "
             "Not covered: more than one training step, pretrained weights, inputs larger than the "
             "minimum, a GPU.", "",
             "Columns: *changed* is the number of layers rewritten, *inserted* the layers added, *kept* "
             "the layers the setup would change but that stay as they are (reasons below the table), "
             "*s* the wall-clock seconds of the rewrite plus the eager training step.",
             ""]
    lines += _summary(results, dimensions)
    lines += ["", "| model | input | parameters | dimension | result | changed | inserted | kept | loss | s |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    reasons: dict = {}
    for result in results:
        if "build_error" in result:
            lines.append(f"| {result['model']} | {result['size']}x{result['size']} | – | all | "
                         f"not built: {result['build_error']} | – | – | – | – | – |")
            continue
        for row in result["rows"]:
            status = row["status"] if row["status"] == "ok" else f"failed: {row.get('reason', '')}"
            loss = row.get("loss")
            lines.append(
                f"| {result['model']} | {result['size']}x{result['size']} | {result['parameters']:,} | "
                f"{row['dimension']} | {status} | {row.get('changes', '–')} | {row.get('inserted', '–')} | "
                f"{row.get('kept', '–')} | {'–' if loss is None else loss} | {row['seconds']} |")
            for reason, count in (row.get("kept_reasons") or {}).items():
                reasons.setdefault(reason, set()).add(f"{result['model']} ({row['dimension']}, {count})")
        if not result.get("original_unchanged", True):
            lines.append(f"| {result['model']} | | | (original) | failed: the original model's weights "
                         "changed | | | | | |")
    if pending:
        lines += ["", f"Not reached in this run (stopped first): {', '.join(pending)}."]
    if reasons:
        lines += ["", "## Why layers were kept as they are", ""]
        for reason, where in sorted(reasons.items()):
            shown = sorted(where)
            more = f" and {len(shown) - 8} more" if len(shown) > 8 else ""
            lines.append(f"- {reason}: {', '.join(shown[:8])}{more}")
    return "\n".join(lines) + "\n"


def _summary(results: list, dimensions: list) -> list:
    built = [result for result in results if "build_error" not in result]
    lines = [f"**{len(built)} of {len(results)} models built**; per dimension, models where the rewrite "
             "built, kept every untouched weight and trained one step with a finite loss:", "",
             "| dimension | ok | failed | models with layers kept as they are |", "|---|---|---|---|"]
    for dimension in dimensions:
        rows = [row for result in built for row in result["rows"] if row["dimension"] == dimension]
        ok = sum(row["status"] == "ok" for row in rows)
        kept = sum(bool(row.get("kept")) for row in rows)
        lines.append(f"| {dimension} | {ok} | {len(rows) - ok} | {kept} |")
    failed = [f"{result['model']} ({result['build_error']})" for result in results if "build_error" in result]
    if failed:
        lines += ["", "Not built: " + "; ".join(failed) + "."]
    return lines


def _write(path: Path, text: str) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated application names (default: all)")
    parser.add_argument("--dimensions", help="comma-separated dimensions (default: all)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per model (default 900)")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "applications.md"))
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--update", metavar="JSON",
                        help="start from the results of an earlier run (its --json file): the models run "
                             "now replace theirs, and the table shows them all")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    dimensions = args.dimensions.split(",") if args.dimensions else list(DIMENSIONS) + list(NO_OP_DIMENSIONS)
    unknown = [d for d in dimensions if d not in DIMENSIONS and d not in NO_OP_DIMENSIONS]
    if unknown:
        parser.error(f"unknown dimension {unknown[0]!r}; choose from {', '.join(list(DIMENSIONS) + list(NO_OP_DIMENSIONS))}")
    if args.one:
        print(json.dumps(_one(args.one, dimensions)), flush=True)
        return
    models = args.models.split(",") if args.models else MODELS
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"unknown model {unknown[0]!r}; choose from {', '.join(MODELS)}")
    command = "python scripts/sweep_applications.py" + "".join(
        f" {flag} {value}" for flag, value in (("--models", args.models), ("--dimensions", args.dimensions),
                                               ("--timeout", args.timeout if args.timeout != 900.0 else None))
        if value)
    earlier = json.loads(Path(args.update).read_text(encoding="utf-8")) if args.update else []
    if args.update:
        command += f" (updating {len(earlier)} earlier results)"
    results, started = [], time.perf_counter()
    for index, name in enumerate(models):
        result = _run_child(name, dimensions, args.timeout)
        earlier = [old for old in earlier if old["model"] != name]
        results.append(result)
        shown = sorted(earlier + results, key=lambda item: MODELS.index(item["model"]))
        brief = result.get("build_error") or ", ".join(
            f"{row['dimension']} {row['status']} {row['seconds']}s" for row in result["rows"])
        print(f"{name}: {brief}", flush=True)
        _write(Path(args.output), _markdown(shown, dimensions, command, time.perf_counter() - started,
                                            pending=models[index + 1:]))
        if args.json:
            _write(Path(args.json), json.dumps(shown, indent=1))


if __name__ == "__main__":
    main()
