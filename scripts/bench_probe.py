"""Benchmark: probe time and peak memory against plain ``model.fit``.

For each model (a 20-layer MLP, a small CNN, an LSTM), the same number of steps
at the same batch size is run by ``model.fit`` and by ``run_probe``, each time
on a freshly built model so that tracing counts for both.  Times are measured in
this one process, alternating the order and taking the median of several
rounds, because the machine is shared and noisy.  Peak memory is measured in a
fresh child process per (model, method): the child's peak resident set size
after running, minus its size after building the model.

Usage: python scripts/bench_probe.py [--steps 50] [--rounds 3] [--models mlp20,cnn,lstm]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np

from gradadvisor._tf import import_keras


def build(name: str, seed: int = 0):
    """A fresh compiled model and data for ``name``."""
    _, keras = import_keras()
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    layers = keras.layers
    if name == "mlp20":
        model = keras.Sequential([keras.Input((64,))] + [
            layers.Dense(64, activation="relu", kernel_initializer="he_normal") for _ in range(20)
        ] + [layers.Dense(10, activation="softmax")])
        x = rng.normal(size=(4096, 64)).astype("float32")
        y = rng.integers(0, 10, 4096).astype("int32")
    elif name == "cnn":
        model = keras.Sequential([
            keras.Input((28, 28, 1)),
            layers.Conv2D(16, 3, activation="relu"), layers.MaxPooling2D(),
            layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(),
            layers.Flatten(), layers.Dense(64, activation="relu"),
            layers.Dense(10, activation="softmax")])
        x = rng.normal(size=(2048, 28, 28, 1)).astype("float32")
        y = rng.integers(0, 10, 2048).astype("int32")
    elif name == "lstm":
        model = keras.Sequential([keras.Input((50, 8)), layers.LSTM(32),
                                  layers.Dense(1, activation="sigmoid")])
        x = rng.normal(size=(2048, 50, 8)).astype("float32")
        y = (x[:, 0, 0] > 0).astype("float32")
    else:
        raise SystemExit(f"unknown model {name!r}; use mlp20, cnn or lstm")
    loss = "binary_crossentropy" if name == "lstm" else "sparse_categorical_crossentropy"
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
    return model, x, y


def run_fit(name, steps, batch_size):
    model, x, y = build(name)
    started = time.perf_counter()
    model.fit(x[:steps * batch_size], y[:steps * batch_size], batch_size=batch_size, epochs=1,
              verbose=0, shuffle=True)
    return time.perf_counter() - started


def run_probe_once(name, steps, batch_size):
    from gradadvisor.loading import validate_data
    from gradadvisor.probe import run_probe

    model, x, y = build(name)
    data = validate_data(model, x[:steps * batch_size], y[:steps * batch_size], "benchmark")
    started = time.perf_counter()
    run_probe(model, data, steps=steps, batch_size=batch_size)
    return time.perf_counter() - started


def child_memory(name, method, steps, batch_size) -> float:
    """Peak RSS growth in MiB of a fresh process while it runs one method.

    The child samples its own resident set size every 5 ms from
    /proc/self/statm; the baseline is taken after TensorFlow is imported and a
    first model was built, so only the training's own memory counts.
    """
    code = f"""
import os, sys, threading, time
sys.path.insert(0, 'scripts')
import bench_probe as b
b.build({name!r})
page = os.sysconf('SC_PAGE_SIZE')
def rss():
    with open('/proc/self/statm') as handle:
        return int(handle.read().split()[1]) * page
base = rss(); peak = [base]; done = threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], rss()); time.sleep(0.005)
thread = threading.Thread(target=sample, daemon=True); thread.start()
(b.run_fit if {method!r} == 'fit' else b.run_probe_once)({name!r}, {steps}, {batch_size})
done.set(); thread.join()
print((max(peak[0], rss()) - base) / 2**20)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", default="mlp20,cnn,lstm")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    import_keras()
    rows = []
    for name in args.models.split(","):
        fit_times, probe_times = [], []
        for round_number in range(args.rounds):
            order = [("fit", run_fit), ("probe", run_probe_once)]
            if round_number % 2:
                order.reverse()
            for label, function in order:
                seconds = function(name, args.steps, args.batch_size)
                (fit_times if label == "fit" else probe_times).append(seconds)
        fit_memory = child_memory(name, "fit", args.steps, args.batch_size)
        probe_memory = child_memory(name, "probe", args.steps, args.batch_size)
        fit_time, probe_time = statistics.median(fit_times), statistics.median(probe_times)
        rows.append({
            "model": name, "steps": args.steps, "batch_size": args.batch_size,
            "fit_seconds": round(fit_time, 3), "probe_seconds": round(probe_time, 3),
            "time_ratio": round(probe_time / fit_time, 3),
            "fit_peak_mib": round(fit_memory, 1), "probe_peak_mib": round(probe_memory, 1),
            "memory_ratio": round(probe_memory / max(fit_memory, 1e-6), 3),
        })
    print(f"| model | steps | fit s | probe s | time ratio (goal <= 1.2) | fit peak MiB | probe peak MiB | memory ratio (goal <= 1.3) |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['model']} | {row['steps']} | {row['fit_seconds']} | {row['probe_seconds']} | "
              f"{row['time_ratio']} | {row['fit_peak_mib']} | {row['probe_peak_mib']} | {row['memory_ratio']} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    main()
