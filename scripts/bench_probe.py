"""Benchmark: probe time and peak memory against plain ``model.fit``.

For each model, ``model.fit`` and ``run_probe`` train the same number of steps
at the same batch size, every run on a freshly built model, so tracing counts
for both.  Two time figures come out of one run:

* the **whole-call ratio** at the probe's default 30 steps (tracing included),
  probe seconds / fit seconds;
* the **per-step ratio** in steady state: the slope between a short and a long
  run (30 and 130 steps by default), ``(t_long - t_short) / (long - short)``,
  for fit and for the probe, so that tracing and set-up cancel out.

Runs are interleaved in this one process (fit, probe, fit, probe, the order
alternating each round) so that load from other processes hits both; each
figure is the median over the rounds, with the one-minute load average read
from ``/proc/loadavg`` next to it.  Peak memory is measured in a fresh child
process per (model, method) at the short step count: the child's resident-set
high-water mark (``VmHWM``) after training minus its resident size after
TensorFlow was imported and the model built, so only training counts.

``--paired`` instead calls Keras' train function and the probe's compiled
step in alternating blocks of 10 calls (medians of 15 blocks): less swing on
a busy machine, but only the compiled steps.  ``--breakdown`` does the same
with the probe's step also traced without each group of statistics (layer
outputs; gradient statistics; weight and update norms; all three), which says
where the step's extra time goes.  ``--graph-ops`` instead counts the
operations (constants left out) of one traced step of each, a figure the
machine's load cannot move.  ``--memory`` measures only the peak memory,
which needs no quiet machine.

Usage: python scripts/bench_probe.py [--rounds 2] [--short 30] [--long 130]
       [--models mlp20,cnn,lstm,resnet50,mobilenetv2] [--batch-size N] [--json out.json]
       [--paired | --breakdown | --graph-ops | --memory]
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
import sys
import time

import numpy as np

from gradadvisor._tf import import_keras

#: Model name -> batch size.  The MLP is the one of issue 17 (20 x Dense(256),
#: batch 128); the keras.applications models run at 32x32, as in the probe's
#: real-model tests.
MODELS = {"mlp20": 128, "cnn": 32, "lstm": 32, "resnet50": 16, "mobilenetv2": 16}


def build(name: str, samples: int, seed: int = 0):
    """A fresh compiled model and ``samples`` rows of data for ``name``."""
    _, keras = import_keras()
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    layers = keras.layers
    loss = "sparse_categorical_crossentropy"
    if name == "mlp20":
        model = keras.Sequential([keras.Input((256,))] + [
            layers.Dense(256, activation="relu", kernel_initializer="he_normal") for _ in range(20)
        ] + [layers.Dense(10, activation="softmax")])
        x = rng.normal(size=(samples, 256)).astype("float32")
        y = rng.integers(0, 10, samples).astype("int32")
    elif name == "cnn":
        model = keras.Sequential([
            keras.Input((28, 28, 1)),
            layers.Conv2D(16, 3, activation="relu"), layers.MaxPooling2D(),
            layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(),
            layers.Flatten(), layers.Dense(64, activation="relu"),
            layers.Dense(10, activation="softmax")])
        x = rng.normal(size=(samples, 28, 28, 1)).astype("float32")
        y = rng.integers(0, 10, samples).astype("int32")
    elif name == "lstm":
        model = keras.Sequential([keras.Input((50, 8)), layers.LSTM(32),
                                  layers.Dense(1, activation="sigmoid")])
        x = rng.normal(size=(samples, 50, 8)).astype("float32")
        y = (x[:, 0, 0] > 0).astype("float32")
        loss = "binary_crossentropy"
    elif name in ("resnet50", "mobilenetv2"):
        application = (keras.applications.ResNet50 if name == "resnet50"
                       else keras.applications.MobileNetV2)
        model = application(weights=None, input_shape=(32, 32, 3), classes=10)
        x = rng.normal(size=(samples, 32, 32, 3)).astype("float32")
        y = rng.integers(0, 10, samples).astype("int32")
    else:
        raise SystemExit(f"unknown model {name!r}; use {', '.join(MODELS)}")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
    return model, x, y


def run_fit(name, steps):
    batch_size = MODELS[name]
    model, x, y = build(name, steps * batch_size)
    started = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, shuffle=True)
    return time.perf_counter() - started


def run_probe_once(name, steps):
    from gradadvisor.loading import validate_data
    from gradadvisor.probe import run_probe

    batch_size = MODELS[name]
    model, x, y = build(name, steps * batch_size)
    data = validate_data(model, x, y, "benchmark")
    started = time.perf_counter()
    run_probe(model, data, steps=steps, batch_size=batch_size)
    return time.perf_counter() - started


def graph_operations(name) -> tuple:
    """``(fit, probe)``: operations (constants left out) in one traced training step of each.

    A figure the machine's load cannot move: Keras' own ``train_step`` and the
    probe's step, traced on the same model and batch.
    """
    import tensorflow as tf

    from gradadvisor.probe.step import ProbeStep
    from gradadvisor.probe.working_copy import make_loss_function

    _, keras = import_keras()
    batch_size = MODELS[name]
    model, x, y = build(name, batch_size)
    x, y = tf.constant(x), tf.constant(y)
    model.optimizer.build(model.trainable_weights)
    fit_graph = tf.function(lambda a, b: model.train_step((a, b))).get_concrete_function(x, y).graph
    work, _, _ = build(name, 1)
    probe = ProbeStep(work, tf, keras, True, make_loss_function(model.loss, keras), keras.optimizers.Adam(1e-3))
    probe_graph = probe._step_function().get_concrete_function([x], y).graph

    def count(graph):
        return sum(1 for op in graph.get_operations() if op.type != "Const")

    return count(fit_graph), count(probe_graph)


def fit_block_seconds(model, batches, block) -> float:
    """Seconds per call of Keras' train function over ``block`` calls, the last result read."""
    started = time.perf_counter()
    for _ in range(block):
        logs = model.train_function(batches)
    float(logs["loss"])
    return (time.perf_counter() - started) / block


def step_block_seconds(step, inputs, targets, block) -> float:
    """Seconds per call of a probe step over ``block`` calls, each result read."""
    started = time.perf_counter()
    for _ in range(block):
        vector, _ = step(inputs, targets)
        vector.numpy()
    return (time.perf_counter() - started) / block


def paired_steps(name, blocks=15, block=10) -> dict:
    """Keras' train function and the probe's compiled step, called in turns on one batch.

    Both are traced first; then blocks of ``block`` calls of each alternate
    ``blocks`` times, and the medians of the per-step times are compared.
    Blocks this short see nearly the same load, so on a busy machine this
    ratio swings less than the slope of whole runs.  It leaves out what a
    whole run adds per step around the compiled step (the probe's batch
    conversion and bookkeeping, fit's data pipeline).
    """
    import tensorflow as tf

    from gradadvisor.probe.step import ProbeStep
    from gradadvisor.probe.working_copy import make_loss_function

    _, keras = import_keras()
    batch_size = MODELS[name]
    model, x, y = build(name, batch_size * 4)
    model.fit(x, y, batch_size=batch_size, verbose=0)
    batches = iter(tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size, drop_remainder=True).repeat())
    work, _, _ = build(name, 1)
    probe = ProbeStep(work, tf, keras, True, make_loss_function(model.loss, keras), keras.optimizers.Adam(1e-3))
    step = probe._step_function()
    inputs, targets = [tf.constant(x[:batch_size])], tf.constant(y[:batch_size])

    fit_block = functools.partial(fit_block_seconds, model, batches, block)
    probe_block = functools.partial(step_block_seconds, step, inputs, targets, block)
    fit_block(), probe_block()
    fit_times, probe_times, loads = [], [], []
    for _ in range(blocks):
        loads.append(load_average())
        fit_times.append(fit_block())
        probe_times.append(probe_block())
    fit_step, probe_step = statistics.median(fit_times), statistics.median(probe_times)
    return {"model": name, "fit_step_ms": round(fit_step * 1e3, 2), "probe_step_ms": round(probe_step * 1e3, 2),
            "ratio": round(probe_step / fit_step, 3), "load_average": [min(loads), max(loads)]}


#: ``--breakdown`` variants: what each leaves out of the probe's step.
BREAKDOWN = {
    "probe": (),
    "no layer outputs": ("outputs",),
    "no gradient statistics": ("gradients",),
    "no weight/update norms": ("norms",),
    "none of the three": ("outputs", "gradients", "norms"),
}


def probe_step_without(name, parts, loss, batch_size):
    """The probe's compiled step for a fresh ``name``, traced without ``parts`` of its statistics.

    ``parts`` names groups of statistics: ``outputs`` (layer-output statistics;
    the forward pass is then Keras' own call), ``gradients`` (every per-layer
    gradient statistic) and ``norms`` (weight and update norms).  The step is
    traced here, so what is left out is left out of the graph, not skipped.
    """
    import tensorflow as tf

    import gradadvisor.probe.step as step_module
    from gradadvisor.probe.working_copy import make_loss_function

    _, keras = import_keras()
    work, x, y = build(name, batch_size)
    probe = step_module.ProbeStep(work, tf, keras, "outputs" not in parts, make_loss_function(loss, keras),
                                  keras.optimizers.Adam(1e-3))
    layers = sum(1 for _, _, group in probe.groups if group)
    saved = step_module.weight_stats_matrix, step_module.apply_and_measure
    if "gradients" in parts:
        step_module.weight_stats_matrix = lambda tf, gradients, weights, deltas, reductions, sizes: (
            tf.zeros([reductions.count, len(step_module.WEIGHT_STATS)]), tf.zeros([]))
    if "norms" in parts:
        step_module.apply_and_measure = lambda tf, optimizer, gradients, variables, record, square_sums: saved[1](
            tf, optimizer, gradients, variables, record, lambda tensors: tf.zeros([layers]))
    try:
        step = probe._step_function()
        step([tf.constant(x[:batch_size])], tf.constant(y[:batch_size]))
    finally:
        step_module.weight_stats_matrix, step_module.apply_and_measure = saved
    return step


def breakdown(name, batch_size, blocks=15, block=10) -> dict:
    """Keras' train function and every :data:`BREAKDOWN` variant of the probe's step, in turns.

    As :func:`paired_steps`, with the variants' blocks rotating after fit's
    (the order reversed every other round); medians per variant.
    """
    import tensorflow as tf

    model, x, y = build(name, batch_size * 4)
    model.fit(x, y, batch_size=batch_size, verbose=0)
    batches = iter(tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size, drop_remainder=True).repeat())
    steps = {label: probe_step_without(name, parts, model.loss, batch_size) for label, parts in BREAKDOWN.items()}
    inputs, targets = [tf.constant(x[:batch_size])], tf.constant(y[:batch_size])

    runners = {"fit": functools.partial(fit_block_seconds, model, batches, block),
               **{label: functools.partial(step_block_seconds, step, inputs, targets, block)
                  for label, step in steps.items()}}
    for run in runners.values():
        run()
    times, loads = {label: [] for label in runners}, []
    for number in range(blocks):
        loads.append(load_average())
        for label in (list(runners) if number % 2 == 0 else list(runners)[::-1]):
            times[label].append(runners[label]())
    medians = {label: statistics.median(values) for label, values in times.items()}
    return {"model": name, "batch_size": batch_size,
            "step_ms": {label: round(value * 1e3, 2) for label, value in medians.items()},
            "ratio": {label: round(value / medians["fit"], 3) for label, value in medians.items()},
            "load_average": [min(loads), max(loads)]}


def load_average() -> float:
    with open("/proc/loadavg") as handle:
        return float(handle.read().split()[0])


def child_memory(name, method, steps) -> float:
    """Peak RSS growth in MiB of a fresh process while it runs one method.

    The baseline is the resident size after TensorFlow is imported and a first
    model was built; the peak is the kernel's high-water mark ``VmHWM``.
    """
    code = f"""
import sys
sys.path.insert(0, 'scripts')
import bench_probe as b
b.MODELS[{name!r}] = {MODELS[name]}
b.build({name!r}, 64)
def status(key):
    with open('/proc/self/status') as handle:
        for line in handle:
            if line.startswith(key + ':'):
                return int(line.split()[1]) * 1024
base = status('VmRSS')
(b.run_fit if {method!r} == 'fit' else b.run_probe_once)({name!r}, {steps})
print((status('VmHWM') - base) / 2**20)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def measure(name, rounds, short, long):
    """Times and memory of one model; see the module docstring."""
    times = {(method, steps): [] for method in ("fit", "probe") for steps in (short, long)}
    loads = []
    for round_number in range(rounds):
        order = [("fit", run_fit), ("probe", run_probe_once)]
        if round_number % 2:
            order.reverse()
        for steps in (short, long):
            for method, function in order:
                loads.append(load_average())
                times[method, steps].append(function(name, steps))
    median = {key: statistics.median(values) for key, values in times.items()}
    fit_step = (median["fit", long] - median["fit", short]) / (long - short)
    probe_step = (median["probe", long] - median["probe", short]) / (long - short)
    fit_memory = child_memory(name, "fit", short)
    probe_memory = child_memory(name, "probe", short)
    return {
        "model": name, "batch_size": MODELS[name], "short_steps": short, "long_steps": long,
        "rounds": rounds,
        "fit_seconds": round(median["fit", short], 3), "probe_seconds": round(median["probe", short], 3),
        "call_ratio": round(median["probe", short] / median["fit", short], 3),
        "fit_step_ms": round(fit_step * 1e3, 2), "probe_step_ms": round(probe_step * 1e3, 2),
        "step_ratio": round(probe_step / fit_step, 3),
        "fit_peak_mib": round(fit_memory, 1), "probe_peak_mib": round(probe_memory, 1),
        "memory_ratio": round(probe_memory / max(fit_memory, 1e-6), 3),
        "load_average": [min(loads), max(loads)],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", type=int, default=30, help="steps of the whole-call run (default 30)")
    parser.add_argument("--long", type=int, default=130, help="steps of the long run for the slope")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--graph-ops", action="store_true",
                        help="only count the operations of one traced step of fit and of the probe")
    parser.add_argument("--paired", action="store_true",
                        help="only compare the compiled steps, in alternating blocks of 10 calls")
    parser.add_argument("--memory", action="store_true",
                        help="only measure peak memory, at --short steps")
    parser.add_argument("--breakdown", action="store_true",
                        help="as --paired, with the probe's step also traced without each group of statistics")
    parser.add_argument("--batch-size", type=int,
                        help="one batch size for every model (default: each model's own, see MODELS)")
    args = parser.parse_args()
    if args.batch_size:
        MODELS.update({name: args.batch_size for name in MODELS})
    import_keras()
    rows = []
    if args.breakdown:
        print("| model | batch | fit ms/step | " + " | ".join(f"{label} (x fit)" for label in BREAKDOWN)
              + " | load avg |")
        print("|---|---|---|" + "---|" * len(BREAKDOWN) + "---|")
        for name in args.models.split(","):
            row = breakdown(name, MODELS[name])
            rows.append(row)
            print(f"| {name} | {row['batch_size']} | {row['step_ms']['fit']} | "
                  + " | ".join(f"{row['step_ms'][label]} ({row['ratio'][label]})" for label in BREAKDOWN)
                  + f" | {row['load_average'][0]:.2f}-{row['load_average'][1]:.2f} |", flush=True)
            write_json(args.json, rows)
        return
    if args.paired:
        print("| model | fit ms/step | probe ms/step | ratio | load avg |")
        print("|---|---|---|---|---|")
        for name in args.models.split(","):
            row = paired_steps(name)
            rows.append(row)
            print(f"| {name} | {row['fit_step_ms']} | {row['probe_step_ms']} | {row['ratio']} | "
                  f"{row['load_average'][0]:.2f}-{row['load_average'][1]:.2f} |", flush=True)
            write_json(args.json, rows)
        return
    if args.memory:
        print("| model | batch | steps | fit peak MiB | probe peak MiB | memory ratio (goal <= 1.15) |")
        print("|---|---|---|---|---|---|")
        for name in args.models.split(","):
            fit_memory = child_memory(name, "fit", args.short)
            probe_memory = child_memory(name, "probe", args.short)
            row = {"model": name, "batch_size": MODELS[name], "steps": args.short,
                   "fit_peak_mib": round(fit_memory, 1), "probe_peak_mib": round(probe_memory, 1),
                   "memory_ratio": round(probe_memory / max(fit_memory, 1e-6), 3)}
            rows.append(row)
            print(f"| {name} | {row['batch_size']} | {args.short} | {row['fit_peak_mib']} | "
                  f"{row['probe_peak_mib']} | {row['memory_ratio']} |", flush=True)
            write_json(args.json, rows)
        return
    if args.graph_ops:
        print("| model | fit step operations | probe step operations | ratio |")
        print("|---|---|---|---|")
        for name in args.models.split(","):
            fit_ops, probe_ops = graph_operations(name)
            print(f"| {name} | {fit_ops} | {probe_ops} | {probe_ops / fit_ops:.2f} |", flush=True)
        return
    print("| model | batch | fit s | probe s | call ratio | fit ms/step | probe ms/step | step ratio "
          "(goal <= 1.15) | fit peak MiB | probe peak MiB | memory ratio (goal <= 1.15) | load avg |",
          flush=True)
    print("|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for name in args.models.split(","):
        row = measure(name, args.rounds, args.short, args.long)
        rows.append(row)
        print(f"| {name} | {row['batch_size']} | {row['fit_seconds']} | {row['probe_seconds']} | "
              f"{row['call_ratio']} | {row['fit_step_ms']} | {row['probe_step_ms']} | {row['step_ratio']} | "
              f"{row['fit_peak_mib']} | {row['probe_peak_mib']} | {row['memory_ratio']} | "
              f"{row['load_average'][0]:.2f}-{row['load_average'][1]:.2f} |", flush=True)
        write_json(args.json, rows)


def write_json(path, rows):
    """Write the rows so far to ``path`` (if given), so a run cut short keeps its figures."""
    if path:
        with open(path, "w") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    main()
