"""How much GradientMonitor slows model.fit down.

Trains the same fresh model on the same data for the same epochs, with and
without the monitor, in one process; every round builds its models anew, so
the tracing of the train functions is paid (and counted) every time. The
models of a round train in lock-step, one epoch each in turn (a
``fit(epochs=1)`` call per epoch, the order rotating): a shared machine's load
changes from one minute to the next, and epochs run side by side see about
the same load where whole runs minutes apart do not.

Usage (from a checkout)::

    python scripts/bench_callback.py                 # all four models, 3 rounds
    python scripts/bench_callback.py --rounds 5 --models mlp,lstm --epochs 20
    python scripts/bench_callback.py --models mobilenetv2,resnet50 --skip-every-step

The models: a 20-layer MLP and an LSTM (small, 10 epochs of 128 and 64
steps), and two ``keras.applications`` models at 32x32 (weights=None):
MobileNetV2 (1,024 images, 4 epochs of 32 steps) and ResNet50 (512 images,
3 epochs of 16 steps), whose data are small so that rounds take minutes.

Prints, per model, each configuration's total wall time (the sum of its
epochs; median over rounds) and its ratio to plain fit(), as a ratio of
medians and as the median of the ratios within a round (paired); the same for
the CPU time the process used; the first epoch, which holds the tracing (the
monitor's train function carries the statistics, but is traced once where
Keras traces its own twice); and the median ratio of each later epoch to the
plain epoch run next to it, the steady-state cost, where the monitor's gap
between measurements is tuned to ``max_overhead``.

Then, per model, the cost of a step by itself (``--step-pairs``): Keras' own
train function and the monitor's, called in turns on one model, so the two
medians saw the same load. An unmeasured step's ratio is what a long training
pays per step once the saving in tracing is spent; a measured step's ratio is
what each measurement costs in the graph (the rules run in Python on top).
"""

from __future__ import annotations

import argparse
import math
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


def build_application(keras, name):
    """A ``keras.applications`` model (weights=None, 32x32x3 inputs, 10 classes), Adam."""
    builder = {"mobilenetv2": keras.applications.MobileNetV2, "resnet50": keras.applications.ResNet50}[name]
    model = builder(weights=None, input_shape=(32, 32, 3), classes=10)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def data_for(name):
    rng = np.random.default_rng(0)
    if name == "mlp":
        x = rng.normal(size=(4096, 64)).astype("float32")
        y = rng.integers(0, 10, size=4096).astype("int32")
    elif name == "lstm":
        x = rng.normal(size=(2048, 50, 8)).astype("float32")
        y = (x[:, 0, 0] > 0).astype("float32")
    else:
        # Images whose class is the brightest of ten patches: learnable, and
        # small enough that several epochs of a realistic model fit in minutes.
        x = rng.normal(size=(SAMPLES[name], 32, 32, 3)).astype("float32")
        y = rng.integers(0, 10, size=len(x)).astype("int32")
        for image, label in zip(x, y):
            image[3 * label:3 * label + 3, :, :] += 1.0
    return x, y


BUILDERS = {"mlp": build_mlp, "lstm": build_lstm,
            "mobilenetv2": lambda keras: build_application(keras, "mobilenetv2"),
            "resnet50": lambda keras: build_application(keras, "resnet50")}
#: Training set sizes of the realistic models (the small ones' are in data_for).
SAMPLES = {"mobilenetv2": 1024, "resnet50": 512}
#: Epochs and per-step pairs where the command line leaves them to the model.
DEFAULT_EPOCHS = {"mlp": 10, "lstm": 10, "mobilenetv2": 4, "resnet50": 3}
DEFAULT_STEP_PAIRS = {"mlp": 600, "lstm": 600, "mobilenetv2": 60, "resnet50": 30}


def run_round(keras, model_name, configs, epochs, batch_size, shift):
    """One round: a fresh model per configuration, trained in lock-step.

    Each configuration's model runs one epoch (one ``fit(epochs=1)`` call),
    then the next configuration's does, and so on for ``epochs`` epochs, in an
    order that rotates every epoch: epochs next to each other saw about the
    same load, so their ratio is far steadier than that of whole runs minutes
    apart. The monitor and Keras keep their train functions across the calls,
    so each model is traced once, in its first epoch, as in a single fit().

    Returns ``{config: (epoch wall seconds, epoch CPU seconds)}`` and
    ``{config: (measurements, the monitor's own estimate of its overhead)}``.
    """
    from gradadvisor.callback import GradientMonitor

    x, y = data_for(model_name)
    models, monitors = {}, {}
    for config in configs:
        keras.utils.set_random_seed(0)
        models[config] = BUILDERS[model_name](keras)
        if config == "default":
            monitors[config] = GradientMonitor()
        elif config == "every-step":
            monitors[config] = GradientMonitor(every_n_steps=1)
    times = {config: ([], []) for config in configs}
    for epoch in range(epochs):
        turn = (shift + epoch) % len(configs)
        for config in configs[turn:] + configs[:turn]:
            callbacks = [monitors[config]] if config in monitors else []
            started, cpu_started = time.perf_counter(), time.process_time()
            models[config].fit(x, y, batch_size=batch_size, epochs=1, verbose=0, callbacks=callbacks)
            times[config][0].append(time.perf_counter() - started)
            times[config][1].append(time.process_time() - cpu_started)
    checks = {}
    for config, monitor in monitors.items():
        assert monitor.mode == "train_step", monitor.mode
        checks[config] = (len(monitor.history),
                          monitor._seconds_measuring / max(monitor._seconds_training, 1e-9))
    return times, checks


def per_step_costs(keras, tf, model_name, steps, batch_size):
    """Unmeasured and measured step times next to Keras' own, in one model.

    fit() with the monitor differs from plain fit() in two ways that pull in
    opposite directions: its train function is traced once instead of twice
    (a fixed saving) and every step runs it instead of Keras' own (a cost per
    step). This separates the second: one model, Keras' train function and
    the monitor's called in alternation on the same data stream, so both see
    the same load, step for step.
    """
    from gradadvisor.callback import GradientMonitor

    x, y = data_for(model_name)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size, drop_remainder=True).repeat()
    iterator = iter(data)
    keras.utils.set_random_seed(0)
    model = BUILDERS[model_name](keras)
    model.make_train_function()
    keras_function = model.train_function
    monitor = GradientMonitor()
    monitor.set_model(model)
    monitor.on_train_begin()  # puts the monitor's train function on the model
    monitored = model.train_function

    def timed(function, measure=False):
        monitor._measure_trigger = "schedule" if measure else None
        started = time.perf_counter()
        float(function(iterator)["loss"])
        return time.perf_counter() - started

    for _ in range(3):  # traces and first calls
        timed(keras_function), timed(monitored), timed(monitored, measure=True)
    plain, unmeasured, measured = [], [], []
    for index in range(steps):
        pair = [(keras_function, plain), (monitored, unmeasured)]
        for function, times in (pair if index % 2 else pair[::-1]):
            times.append(timed(function))
        if index % max(1, min(20, steps // 5)) == 0:
            measured.append(timed(monitored, measure=True))
    monitor.on_train_end()
    return statistics.median(plain), statistics.median(unmeasured), statistics.median(measured)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,lstm,mobilenetv2,resnet50",
                        help="comma-separated: mlp, lstm, mobilenetv2, resnet50")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs per fit (default: 10 for mlp and lstm, 4 mobilenetv2, 3 resnet50)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--skip-every-step", action="store_true",
                        help="leave out the monitor measuring every step (slow)")
    parser.add_argument("--step-pairs", type=int, default=None,
                        help="steps of each train function in the per-step comparison (0 skips it; "
                        "default: 600 for mlp and lstm, 60 mobilenetv2, 30 resnet50)")
    args = parser.parse_args(argv)

    from gradadvisor._tf import import_keras
    from gradadvisor.callback import GradientWarning

    # The LSTM task (recall the first of 50 timesteps) rightly draws a
    # vanishing-through-time warning; timing is all this script reports.
    warnings.simplefilter("ignore", GradientWarning)
    tf, keras = import_keras()
    configs = ["plain", "default"] + ([] if args.skip_every_step else ["every-step"])
    print(f"keras {keras.__version__}; {args.rounds} rounds, batch size {args.batch_size}; configurations "
          f"in rotating order; load average {os.getloadavg()} on {os.cpu_count()} CPUs", flush=True)
    for model_name in args.models.split(","):
        if model_name not in BUILDERS:
            parser.error(f"unknown model {model_name!r}; choose from {', '.join(BUILDERS)}")
        x, _ = data_for(model_name)
        epochs = args.epochs or DEFAULT_EPOCHS[model_name]
        step_pairs = DEFAULT_STEP_PAIRS[model_name] if args.step_pairs is None else args.step_pairs
        steps = epochs * math.ceil(len(x) / args.batch_size)
        rounds = []
        for round_index in range(args.rounds):
            times, checks = run_round(keras, model_name, configs, epochs, args.batch_size, round_index)
            rounds.append(times)
            print(f"  {model_name} round {round_index + 1}: " + " | ".join(
                f"{c} {sum(times[c][0]):6.2f} s (cpu {sum(times[c][1]):6.2f} s"
                + (f", {checks[c][0]} checks, {checks[c][1]:.1%} by its own timing)" if c in checks else ")")
                for c in configs), flush=True)
        print(f"{model_name}: {len(x)} samples, {epochs} epochs, {steps} training steps, {args.rounds} rounds; "
              f"load average now {os.getloadavg()}")

        def total(times, config, kind):
            return sum(times[config][kind])

        plain_wall = statistics.median(total(r, "plain", 0) for r in rounds)
        plain_cpu = statistics.median(total(r, "plain", 1) for r in rounds)
        plain_first = statistics.median(r["plain"][0][0] for r in rounds)
        for config in configs:
            wall = statistics.median(total(r, config, 0) for r in rounds)
            cpu = statistics.median(total(r, config, 1) for r in rounds)
            paired = statistics.median(total(r, config, 0) / total(r, "plain", 0) for r in rounds)
            paired_cpu = statistics.median(total(r, config, 1) / total(r, "plain", 1) for r in rounds)
            first = statistics.median(r[config][0][0] for r in rounds)
            # Later epochs, each against the plain epoch run next to it.
            later = statistics.median(mine / theirs for r in rounds
                                      for mine, theirs in zip(r[config][0][1:], r["plain"][0][1:]))
            print(f"  {config:10s} total {wall:7.2f} s  ratio {wall / plain_wall:5.3f} (paired {paired:5.3f}) | "
                  f"cpu {cpu:7.2f} s  ratio {cpu / plain_cpu:5.3f} (paired {paired_cpu:5.3f}) | "
                  f"first epoch {first:6.2f} s ({first - plain_first:+5.2f} s) | "
                  f"later epochs, paired ratio {later:5.3f}")
        if step_pairs:
            plain_step, unmeasured, measured = per_step_costs(keras, tf, model_name, step_pairs,
                                                              args.batch_size)
            print(f"  per step (median of {step_pairs}, alternating with Keras' own): Keras "
                  f"{plain_step * 1e3:6.2f} ms | monitor, unmeasured {unmeasured * 1e3:6.2f} ms  ratio "
                  f"{unmeasured / plain_step:5.3f} | monitor, measured {measured * 1e3:6.2f} ms  ratio "
                  f"{measured / plain_step:5.3f} (rules not included)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
