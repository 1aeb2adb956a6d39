"""How much GradientMonitor slows model.fit down.

Trains the same fresh model on the same data for the same epochs, with and
without the monitor, in one process; every run builds its model anew, so the
tracing of the train function is paid (and counted) every time. The
configurations run in a rotating order for several rounds, because a shared
machine is noisy: the medians are compared, and so are the ratios within each
round (paired: runs next to each other saw about the same load).

Usage (from a checkout)::

    python scripts/bench_callback.py                 # both models, 3 rounds
    python scripts/bench_callback.py --rounds 5 --epochs 20
    python scripts/bench_callback.py --models mlp --skip-every-step

Prints, per model, the median wall time of each configuration and its ratio to
plain fit(), as a ratio of medians and as the median of paired ratios; the
median first epoch (which holds the tracing: the monitor's train function
carries the statistics, but is traced once where Keras traces its own twice)
and the median later epoch (the steady-state cost, where the monitor's gap
between measurements is tuned to ``max_overhead``). The CPU time the process used is compared too: on a shared
machine it is far less disturbed by other work than the wall time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402


def build_mlp(keras):
    """20 Dense layers of width 64 (ReLU, He init) on 64 features, 10 classes, Adam."""
    layers = [keras.Input(shape=(64,))]
    layers += [keras.layers.Dense(64, activation="relu", kernel_initializer="he_normal",
                                  name=f"dense_{i + 1}") for i in range(20)]
    layers.append(keras.layers.Dense(10, activation="softmax", name="output"))
    model = keras.Sequential(layers, name="mlp20")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def build_lstm(keras):
    """An LSTM of 32 units over 50 timesteps of 8 features, one sigmoid output, Adam."""
    model = keras.Sequential([
        keras.Input(shape=(50, 8)),
        keras.layers.LSTM(32, name="lstm"),
        keras.layers.Dense(1, activation="sigmoid", name="output"),
    ], name="lstm32")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy",
                  metrics=["accuracy"])
    return model


def data_for(name):
    rng = np.random.default_rng(0)
    if name == "mlp":
        x = rng.normal(size=(4096, 64)).astype("float32")
        y = rng.integers(0, 10, size=4096).astype("int32")
    else:
        x = rng.normal(size=(2048, 50, 8)).astype("float32")
        y = (x[:, 0, 0] > 0).astype("float32")
    return x, y


BUILDERS = {"mlp": build_mlp, "lstm": build_lstm}


def run_once(keras, model_name, config, epochs, batch_size):
    """Wall time of one fit(), its first epoch, and the median of its later epochs."""
    from gradadvisor.callback import GradientMonitor

    x, y = data_for(model_name)
    keras.utils.set_random_seed(0)
    model = BUILDERS[model_name](keras)
    callbacks = []
    if config == "default":
        callbacks.append(GradientMonitor())
    elif config == "every-step":
        callbacks.append(GradientMonitor(every_n_steps=1))
    epoch_times = []

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epoch_times.append(time.perf_counter() - self.started)

    started, cpu_started = time.perf_counter(), time.process_time()
    model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0,
              callbacks=callbacks + [EpochTimer()])
    total = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    first = epoch_times[0]
    steady = statistics.median(epoch_times[1:]) if len(epoch_times) > 1 else float("nan")
    if callbacks:
        monitor = callbacks[0]
        assert monitor.mode == "train_step", monitor.mode
        num_checks = len(monitor.history)
        own = monitor._seconds_measuring / max(monitor._seconds_training, 1e-9)
    else:
        num_checks, own = 0, 0.0
    return total, cpu, first, steady, num_checks, own


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,lstm", help="comma-separated: mlp, lstm")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--skip-every-step", action="store_true",
                        help="leave out the monitor measuring every step (slow)")
    args = parser.parse_args(argv)

    from gradadvisor._tf import import_keras
    from gradadvisor.callback import GradientWarning

    # The LSTM task (recall the first of 50 timesteps) rightly draws a
    # vanishing-through-time warning; timing is all this script reports.
    warnings.simplefilter("ignore", GradientWarning)
    _, keras = import_keras()
    configs = ["plain", "default"] + ([] if args.skip_every_step else ["every-step"])
    print(f"keras {keras.__version__}; {args.rounds} rounds, {args.epochs} epochs, batch size "
          f"{args.batch_size}; configurations in rotating order", flush=True)
    for model_name in args.models.split(","):
        x, _ = data_for(model_name)
        steps = args.epochs * (len(x) // args.batch_size)
        totals = {c: [] for c in configs}
        firsts = {c: [] for c in configs}
        cpus = {c: [] for c in configs}
        steadies = {c: [] for c in configs}
        checks = {}
        for round_index in range(args.rounds):
            shift = round_index % len(configs)
            for config in configs[shift:] + configs[:shift]:
                total, cpu, first, steady, num_checks, own = run_once(keras, model_name, config,
                                                                      args.epochs, args.batch_size)
                totals[config].append(total)
                cpus[config].append(cpu)
                firsts[config].append(first)
                steadies[config].append(steady)
                checks[config] = num_checks
                print(f"  {model_name} round {round_index + 1} {config:10s} {total:7.2f} s, cpu {cpu:7.2f} s "
                      f"(first epoch {first:6.2f} s, later epochs {steady * 1000:7.1f} ms, "
                      f"{num_checks} checks, by its own timing {own:.1%})", flush=True)
        # Each round runs every configuration back to back: the ratio within a
        # round pairs runs that saw the same load, which the medians of the
        # totals do not.
        paired = {c: statistics.median(t / p for t, p in zip(totals[c], totals["plain"])) for c in configs}
        paired_cpu = {c: statistics.median(t / p for t, p in zip(cpus[c], cpus["plain"])) for c in configs}
        plain = statistics.median(totals["plain"])
        plain_first = statistics.median(firsts["plain"])
        plain_cpu = statistics.median(cpus["plain"])
        plain_steady = statistics.median(steadies["plain"])
        print(f"{model_name}: {steps} training steps, medians over {args.rounds} rounds")
        for config in configs:
            total = statistics.median(totals[config])
            first = statistics.median(firsts[config])
            steady = statistics.median(steadies[config])
            cpu = statistics.median(cpus[config])
            print(f"  {config:10s} total {total:7.2f} s  ratio {total / plain:5.3f} (paired {paired[config]:5.3f}) | "
                  f"cpu {cpu:7.2f} s  ratio {cpu / plain_cpu:5.3f} (paired {paired_cpu[config]:5.3f}) | first epoch "
                  f"{first:6.2f} s  ({first - plain_first:+5.2f} s) | later epochs {steady * 1000:7.1f} ms  "
                  f"ratio {steady / plain_steady:5.3f} | checks {checks[config]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
