"""Does GradientMonitor(on_problem="recover") leave healthy keras.applications models alone?

The recovery benchmark (``bench_recover.py``) builds its own small models. This
one trains keras.applications architectures (``weights=None``, 32x32x3
inputs, a 10-unit linear output read as logits by
``SparseCategoricalCrossentropy(from_logits=True)``) with the monitor on, on
1,024 learnable random images (uniform noise, the rows of the label's band
brightened by 1; 256 more for validation), batch 32, 32 steps an epoch,
seeded. Such models, once converged, have batch losses that swing far above
their median and come back on their own; a recovery there undoes good
updates and lowers the learning rate for nothing.

Each run is named ``ARCHITECTURE:OPTIMIZER[:jump]``:

``ARCHITECTURE``
    ``MobileNetV2`` (alpha 0.35), ``MobileNetV3Small``, ``ResNet50``.
``OPTIMIZER``
    ``sgd`` (SGD 0.01, momentum 0.9) or ``adam`` (Adam 1e-3).
``jump``
    The SGD rate jumps to 3.0 halfway (``PiecewiseConstantDecay``): a real
    divergence, trained three times (no jump and no monitor, jump and no
    monitor, jump with the monitor), as ``bench_recover.py`` does.

Printed per run: the final training loss and validation accuracy, seconds,
and each recovery (step, trigger, restored step, changes).

Usage (from a checkout)::

    python scripts/bench_recover_third_party.py MobileNetV2:sgd:jump
    python scripts/bench_recover_third_party.py MobileNetV3Small:sgd MobileNetV3Small:adam --epochs 8
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402

BATCH = 32
NUM_TRAIN, NUM_VAL = 1024, 256
ARCHITECTURES = ("MobileNetV2", "MobileNetV3Small", "ResNet50")
#: The SGD rate, and the rate it jumps to halfway through a ``jump`` run.
RATE, JUMP_RATE = 0.01, 3.0


def learnable_images(seed: int = 0):
    """Uniform noise whose label picks the three rows brightened: learnable, nothing downloaded."""
    rng = np.random.default_rng(seed)

    def draw(num):
        x = rng.uniform(0, 1, size=(num, 32, 32, 3)).astype("float32")
        labels = rng.integers(0, 10, size=num)
        for i, label in enumerate(labels):
            x[i, 3 * label:3 * label + 3] += 1.0
        return x, labels

    return draw(NUM_TRAIN) + draw(NUM_VAL)


def train(keras, spec: str, epochs: int, jump: bool, monitor, data):
    architecture, optimizer = spec.split(":")[:2]
    keras.utils.set_random_seed(0)
    extra = {"alpha": 0.35} if architecture == "MobileNetV2" else {}
    model = getattr(keras.applications, architecture)(
        input_shape=(32, 32, 3), weights=None, classes=10, classifier_activation=None, **extra)
    if optimizer == "sgd":
        steps = epochs * (NUM_TRAIN // BATCH)
        rate = keras.optimizers.schedules.PiecewiseConstantDecay([steps // 2], [RATE, JUMP_RATE]) if jump else RATE
        chosen = keras.optimizers.SGD(rate, momentum=0.9)
    else:
        chosen = keras.optimizers.Adam(1e-3)
    model.compile(optimizer=chosen, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    x, y, x_val, y_val = data
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        history = model.fit(x, y, batch_size=BATCH, epochs=epochs, validation_data=(x_val, y_val), verbose=0,
                            callbacks=[monitor] if monitor is not None else [])
    entry = {"final_loss": history.history["loss"][-1], "final_val_accuracy": history.history["val_accuracy"][-1],
             "seconds": round(time.perf_counter() - started, 1)}
    if monitor is not None:
        entry["recoveries"] = [{key: record[key] for key in ("step", "trigger", "restored_step", "changes")}
                               for record in monitor.recoveries]
        entry["stop_reason"] = monitor.stop_reason
        entry["snapshot_bytes"] = monitor.snapshot_bytes
    return entry


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="ARCHITECTURE:OPTIMIZER[:jump], e.g. MobileNetV2:sgd:jump")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--json", help="also write the results there")
    args = parser.parse_args(argv)
    for spec in args.runs:
        parts = spec.split(":")
        if not (2 <= len(parts) <= 3 and parts[0] in ARCHITECTURES and parts[1] in ("sgd", "adam")
                and parts[2:] in ([], ["jump"]) and not (parts[2:] and parts[1] != "sgd")):
            parser.error(f"run {spec!r} is not ARCHITECTURE:OPTIMIZER[:jump] with ARCHITECTURE one of "
                         f"{', '.join(ARCHITECTURES)}, OPTIMIZER sgd or adam (jump with sgd only)")

    import keras

    from gradadvisor.callback import GradientMonitor

    data = learnable_images()
    results = {}
    for spec in args.runs:
        jump = spec.endswith(":jump")
        plans = (("clean", False, False), ("fault", True, False), ("recover", True, True)) if jump else \
            (("healthy", False, True),)
        results[spec] = {}
        for label, faulty, monitored in plans:
            monitor = GradientMonitor(on_problem="recover") if monitored else None
            results[spec][label] = entry = train(keras, spec, args.epochs, faulty, monitor, data)
            print(f"{spec} {label}: {json.dumps(entry)}", flush=True)
    if args.json:
        from gradadvisor.files import write_text_atomic

        write_text_atomic(args.json, json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
