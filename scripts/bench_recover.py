"""Does GradientMonitor(on_problem="recover") save runs that diverge, and what does it cost on healthy ones?

Three faults, each on scikit-learn's bundled 8x8 digits (1,437 training
images, 360 for validation; nothing is downloaded), SGD with momentum 0.9,
batch 32 (45 steps an epoch), a linear output layer read by the loss as
logits, seeded. Each is built to diverge without recovery (its loss turning
NaN or infinite, or its weights blowing up) rather than to settle at chance
level; the table's "without recovery" column shows whether it did.

``lr-jump``
    A small CNN (two 3x3 convolutions, 16 and 32 filters, leaky ReLU) whose
    learning-rate schedule jumps 300x (0.01 to 3.0) halfway through training.
``outliers``
    An MLP (two Dense layers of 64, leaky ReLU) fed a ``tf.data.Dataset``
    stream into which one batch of extreme outliers (images times
    ``OUTLIER_SCALE``) is injected in the middle of an epoch halfway through
    training.
``lstm-explode``
    An LSTM of 32 units reading each image as 16 timesteps of 4 pixels, with
    ``activation="relu"`` (unbounded cell state and output), trained for 24
    epochs (1,080 steps) at a learning rate of 0.045 that its
    ``PiecewiseConstantDecay`` schedule steps up 10x, to 0.45, at step 540:
    a step decay typed the wrong way up (``[0.045, 0.45]`` for ``[0.045,
    0.0045]``). By then it has learned (validation accuracy 0.78-0.88 over
    epochs 10-12); its gradients grow over the next dozen steps and its loss
    is NaN from step 553. The fault-free run is the same LSTM with the
    constant rate 0.045. It runs 24 epochs, not 16, because at this rate
    the relu LSTM is still climbing at epoch 16 and its validation accuracy
    swings by up to 5 points from one epoch to the next there (0.889, 0.931,
    0.944, 0.931 over epochs 13-16); over epochs 17-24 it stays within
    0.922-0.956. The same relu LSTM explodes with no step-up at some
    constant rates and seeds (at 0.05 with seed 0, step 122, before it has
    learned): ``--explosion-sweep`` shows when.

Each fault is trained three times: without the fault (plain ``fit``), with the
fault and no monitor, and with the fault and ``GradientMonitor(on_problem=
"recover")``. The table gives the final training loss and validation accuracy
of each, the steps at which the monitor recovered, and the host memory its
snapshot takes.

Then the cost on a healthy run: the fault-free CNN trained with
``GradientMonitor()`` (``on_problem="warn"``) and with
``GradientMonitor(on_problem="recover")``, fresh models each round, in
lock-step (one ``fit(epochs=1)`` each in turn, the order alternating, so epochs
side by side see the same load on a shared machine). The ratio is recover over
warn, per round (paired), median over rounds; the snapshot's copy at each
``fit`` call's start and at each healthy measurement is included.

With ``--explosion-sweep RATES`` it does none of that and instead trains the
LSTM (``--activation``, relu by default) with no monitor at each rate (and
each of ``--timesteps`` and ``--seeds``), constant or stepped up
``--step-up`` times halfway, with SGD at ``--momentum`` (0.9) for
``--epochs`` (16) epochs, printing the step its loss first turns non-finite
and its validation accuracy.

Usage (from a checkout)::

    python scripts/bench_recover.py                      # every fault, 5 cost rounds
    python scripts/bench_recover.py --faults lr-jump --rounds 3 --json out.json
    python scripts/bench_recover.py --explosion-sweep 0.03,0.05 --timesteps 16,32 --seeds 0,1
    python scripts/bench_recover.py --explosion-sweep 0.045 --step-up 10 --epochs 24
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402

BATCH = 32
#: The LSTM reads each 8x8 image as this many timesteps.
LSTM_STEPS = 16
#: The LSTM's learning rate, constant in its fault-free run.
LSTM_LEARNING_RATE = 0.045
#: What the faulty run's schedule multiplies it by halfway through (a step decay typed the wrong way up).
LSTM_STEP_UP = 10.0
#: How much the outlier batch scales its images.
OUTLIER_SCALE = 1e6


def digits():
    """``(x_train, y_train, x_val, y_val)``: 8x8 images scaled to [0, 1], a fixed split."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype("float32")
    y = data.target.astype("int32")
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    return x[:1437], y[:1437], x[1437:], y[1437:]


def _compile(keras, model, learning_rate, momentum=0.9):
    # The loss reads the logits (a linear output layer): nothing bounds it, so
    # a run that diverges shows it as an infinite or NaN loss rather than
    # settling at chance level behind a saturated softmax.
    model.compile(optimizer=keras.optimizers.SGD(learning_rate, momentum=momentum),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def build_cnn(keras, learning_rate):
    """Two 3x3 convolutions (16, 32 filters, leaky ReLU), a linear 10-way output."""
    return _compile(keras, keras.Sequential([
        keras.Input(shape=(8, 8, 1)),
        keras.layers.Conv2D(16, 3, activation="leaky_relu", padding="same", name="conv_1"),
        keras.layers.Conv2D(32, 3, activation="leaky_relu", name="conv_2"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(10, name="output"),
    ], name="digits_cnn"), learning_rate)


def build_mlp(keras, learning_rate):
    """Two Dense layers of 64 (leaky ReLU), a linear 10-way output."""
    return _compile(keras, keras.Sequential([
        keras.Input(shape=(64,)),
        keras.layers.Dense(64, activation="leaky_relu", name="dense_1"),
        keras.layers.Dense(64, activation="leaky_relu", name="dense_2"),
        keras.layers.Dense(10, name="output"),
    ], name="digits_mlp"), learning_rate)


def build_lstm(keras, learning_rate, activation, timesteps=None, momentum=0.9):
    """An LSTM of 32 units over ``timesteps`` (LSTM_STEPS) timesteps, a linear 10-way output.

    ``activation="relu"`` (a common choice in tutorials) leaves the cell
    state and the output unbounded: as the recurrent weights grow with
    training, the recurrence's gain passes 1 and its gradients explode.
    """
    timesteps = timesteps or LSTM_STEPS
    return _compile(keras, keras.Sequential([
        keras.Input(shape=(timesteps, 64 // timesteps)),
        keras.layers.LSTM(32, activation=activation, name="lstm"),
        keras.layers.Dense(10, name="output"),
    ], name="digits_lstm"), learning_rate, momentum)


class Fault:
    """One fault: how to build the model and the data, with and without it."""

    def __init__(self, name, epochs, description):
        self.name, self.epochs, self.description = name, epochs, description

    def steps(self):
        return self.epochs * math.ceil(1437 / BATCH)

    def train(self, keras, tf, faulty: bool, callbacks, seed=0):
        """Build, train and return ``(model, history)``."""
        x, y, x_val, y_val = digits()
        keras.utils.set_random_seed(seed)
        half = self.steps() // 2
        fit = dict(batch_size=BATCH, epochs=self.epochs, verbose=0, validation_data=None, shuffle=True,
                   callbacks=callbacks)
        if self.name == "lr-jump":
            rate = keras.optimizers.schedules.PiecewiseConstantDecay([half], [0.01, 3.0]) if faulty else 0.01
            model = build_cnn(keras, rate)
            history = model.fit(x[..., None], y, **dict(fit, validation_data=(x_val[..., None], y_val)))
        elif self.name == "outliers":
            model = build_mlp(keras, 0.01)
            per_epoch = math.ceil(1437 / BATCH)
            stream = tf.data.Dataset.from_tensor_slices((x.reshape(-1, 64), y)).shuffle(
                1437, seed=0, reshuffle_each_iteration=True).batch(BATCH, drop_remainder=True).repeat()
            if faulty:
                # The outlier batch replaces one batch in the middle of an epoch halfway through.
                position = (self.epochs // 2) * per_epoch + per_epoch // 2
                bad = tf.data.Dataset.from_tensors((x[:BATCH].reshape(-1, 64) * OUTLIER_SCALE, y[:BATCH]))
                stream = stream.take(position).concatenate(bad).concatenate(stream.skip(position + 1))
            history = model.fit(stream, steps_per_epoch=per_epoch, **dict(
                fit, batch_size=None, shuffle=False, validation_data=(x_val.reshape(-1, 64), y_val)))
        else:
            rate = keras.optimizers.schedules.PiecewiseConstantDecay(
                [half], [LSTM_LEARNING_RATE, LSTM_STEP_UP * LSTM_LEARNING_RATE]) if faulty else LSTM_LEARNING_RATE
            model = build_lstm(keras, rate, "relu")
            shape = (-1, LSTM_STEPS, 64 // LSTM_STEPS)
            history = model.fit(x.reshape(shape), y, **dict(fit, validation_data=(x_val.reshape(shape), y_val)))
        return model, history


FAULTS = {
    "lr-jump": Fault("lr-jump", 16, "small CNN, learning rate 0.01 jumps to 3.0 (300x) at mid-training"),
    "outliers": Fault("outliers", 16, f"MLP on a tf.data stream, one batch of inputs x{OUTLIER_SCALE:g} mid-epoch"),
    "lstm-explode": Fault("lstm-explode", 24, f"relu LSTM ({LSTM_STEPS} timesteps), learning rate "
                          f"{LSTM_LEARNING_RATE:g} stepped up {LSTM_STEP_UP:g}x at mid-training (a step decay "
                          "typed the wrong way up)"),
}


def summarize(history):
    losses = history.history["loss"]
    nonfinite = [i for i, v in enumerate(losses) if not math.isfinite(v)]
    return {
        "final_loss": losses[-1],
        "final_val_accuracy": history.history.get("val_accuracy", [math.nan])[-1],
        "first_nonfinite_epoch": nonfinite[0] if nonfinite else None,
        "epochs_run": len(losses),
    }


def run_fault(keras, tf, fault, seed=0):
    from gradadvisor.callback import GradientMonitor

    result = {"description": fault.description, "steps": fault.steps()}
    for label, faulty, recover in (("clean", False, False), ("fault", True, False), ("recover", True, True)):
        monitor = GradientMonitor(on_problem="recover") if recover else None
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, history = fault.train(keras, tf, faulty, [monitor] if monitor else [], seed)
        entry = summarize(history)
        entry["seconds"] = time.perf_counter() - started
        weights = model.get_weights()
        entry["weights_finite"] = bool(all(np.isfinite(w).all() for w in weights))
        entry["max_abs_weight"] = float(max(np.max(np.abs(w)) for w in weights))
        if monitor is not None:
            entry["recoveries"] = [{key: record[key] for key in (
                "step", "trigger", "rules", "restored_step", "global_clipnorm", "learning_rate_scale",
                "learning_rate_ceiling", "changes")}
                for record in monitor.recoveries]
            entry["stop_reason"] = monitor.stop_reason
            entry["final_global_clipnorm"] = getattr(model.optimizer, "global_clipnorm", None)
            entry["snapshot_bytes"] = monitor.snapshot_bytes
            entry["num_params"] = int(model.count_params())
            entry["measurements"] = len(monitor.history)
        result[label] = entry
        print(f"  {fault.name} {label}: {json.dumps(entry, default=str)}", flush=True)
    clean, recovered = result["clean"], result["recover"]
    result["val_accuracy_points_vs_clean"] = 100 * (recovered["final_val_accuracy"] - clean["final_val_accuracy"])
    return result


def healthy_cost(keras, rounds, epochs):
    """Paired wall and CPU ratios, recover over warn, on the fault-free CNN."""
    from gradadvisor.callback import GradientMonitor

    x, y, _, _ = digits()
    x = x[..., None]
    ratios, cpu_ratios, totals, snapshot = [], [], {"warn": [], "recover": []}, None
    hook_shares, begin_shares, snapshots_taken = [], [], []
    for round_number in range(rounds):
        models, monitors, times, cpu = {}, {}, {}, {}
        hooks = {}
        for config in ("warn", "recover"):
            keras.utils.set_random_seed(round_number)
            models[config] = build_cnn(keras, 0.01)
            monitors[config] = GradientMonitor(on_problem=config)
            times[config], cpu[config] = 0.0, 0.0
            hooks[config] = _time_hooks(monitors[config])
        for epoch in range(epochs):
            order = ("warn", "recover") if (round_number + epoch) % 2 == 0 else ("recover", "warn")
            for config in order:
                started, cpu_started = time.perf_counter(), time.process_time()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    models[config].fit(x, y, batch_size=BATCH, epochs=epoch + 1, initial_epoch=epoch,
                                       verbose=0, callbacks=[monitors[config]])
                times[config] += time.perf_counter() - started
                cpu[config] += time.process_time() - cpu_started
        assert not monitors["recover"].recoveries, monitors["recover"].recoveries
        ratios.append(times["recover"] / times["warn"])
        cpu_ratios.append(cpu["recover"] / cpu["warn"])
        # What recovering adds in the monitor's own hooks (snapshots, loss
        # bookkeeping), as a share of the recover run's CPU time: far steadier
        # than whole-run ratios on a loaded machine.
        hook_shares.append((hooks["recover"][0] - hooks["warn"][0]) / cpu["recover"])
        begin_shares.append((hooks["recover"][2] - hooks["warn"][2]) / cpu["recover"])
        snapshots_taken.append(hooks["recover"][1])
        for config in totals:
            totals[config].append(times[config])
        snapshot = monitors["recover"].snapshot_bytes
        print(f"  round {round_number + 1}: warn {times['warn']:.2f} s, recover {times['recover']:.2f} s, "
              f"ratio {ratios[-1]:.3f} (CPU {cpu_ratios[-1]:.3f}), measurements "
              f"{len(monitors['warn'].history)}/{len(monitors['recover'].history)}; hooks' extra CPU "
              f"{hook_shares[-1]:.2%} of the run (+{begin_shares[-1]:.2%} at the {epochs} fit() starts), "
              f"{snapshots_taken[-1]} snapshots", flush=True)
    return {
        "rounds": rounds, "epochs": epochs, "steps": epochs * math.ceil(1437 / BATCH),
        "warn_seconds_median": statistics.median(totals["warn"]),
        "recover_seconds_median": statistics.median(totals["recover"]),
        "paired_wall_ratio_median": statistics.median(ratios),
        "paired_cpu_ratio_median": statistics.median(cpu_ratios),
        "paired_wall_ratios": ratios, "paired_cpu_ratios": cpu_ratios, "snapshot_bytes": snapshot,
        "hook_cpu_share_median": statistics.median(hook_shares), "hook_cpu_shares": hook_shares,
        "fit_start_cpu_share_median": statistics.median(begin_shares), "fit_start_cpu_shares": begin_shares,
        "snapshots_taken": snapshots_taken,
    }


def _time_hooks(monitor):
    """Count the CPU time spent in ``monitor``'s hooks, and its snapshots.

    Returns a list ``[CPU seconds in the hooks but on_train_begin, snapshots
    taken, CPU seconds in on_train_begin]`` that fills in as it trains: the
    snapshot each ``fit`` call takes as it begins is counted apart, since
    this benchmark calls ``fit`` once per epoch where a training calls it once.
    """
    totals = [0.0, 0, 0.0]
    for name in ("on_train_begin", "on_train_batch_end", "on_epoch_begin", "on_epoch_end", "on_train_end"):
        hook = getattr(monitor, name)

        def timed(*args, _hook=hook, _slot=2 if name == "on_train_begin" else 0, **kwargs):
            started = time.process_time()
            try:
                return _hook(*args, **kwargs)
            finally:
                totals[_slot] += time.process_time() - started
        setattr(monitor, name, timed)
    take = getattr(monitor, "_take_snapshot")

    def counted(*args, **kwargs):
        totals[1] += 1
        return take(*args, **kwargs)
    setattr(monitor, "_take_snapshot", counted)
    return totals


def explosion_sweep(keras, rates, timesteps_list, seeds, epochs, momentum=0.9, step_up=None, activation="relu"):
    """When, if ever, the LSTM's loss turns non-finite with no monitor, per rate, length and seed.

    ``step_up``: the rate is multiplied by it halfway through (as in the
    ``lstm-explode`` fault) instead of staying constant.
    """
    x, y, x_val, y_val = digits()
    found = []

    class FirstNonFinite(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.step, self.first = 0, None

        def on_train_batch_end(self, batch, logs=None):
            if self.first is None and not math.isfinite(logs["loss"]):
                self.first = self.step
            self.step += 1

    for timesteps in timesteps_list:
        shape = (-1, timesteps, 64 // timesteps)
        for rate in rates:
            for seed in seeds:
                keras.utils.set_random_seed(seed)
                schedule = rate if step_up is None else keras.optimizers.schedules.PiecewiseConstantDecay(
                    [epochs * math.ceil(1437 / BATCH) // 2], [rate, step_up * rate])
                model = build_lstm(keras, schedule, activation, timesteps, momentum)
                watch = FirstNonFinite()
                history = model.fit(x.reshape(shape), y, batch_size=BATCH, epochs=epochs, verbose=0,
                                    validation_data=(x_val.reshape(shape), y_val), callbacks=[watch])
                accuracy = history.history["val_accuracy"]
                entry = {"timesteps": timesteps, "learning_rate": rate, "seed": seed, "momentum": momentum,
                         "step_up": step_up, "activation": activation, "epochs": epochs,
                         "first_nonfinite_step": watch.first, "final_val_accuracy": accuracy[-1],
                         "val_accuracy_per_epoch": accuracy, "best_val_accuracy_before": max(
                             accuracy[:max(1, (watch.first or 10**9) // math.ceil(1437 / BATCH))])}
                found.append(entry)
                rates_words = f"rate {rate:g}" + ("" if step_up is None else f" stepped up {step_up:g}x")
                print(f"  {activation} LSTM, {timesteps} timesteps, {rates_words}, momentum {momentum:g}, seed "
                      f"{seed}, {epochs} epochs: non-finite loss from "
                      f"step {watch.first}, final val. acc. {accuracy[-1]:.3f}, best before "
                      f"{entry['best_val_accuracy_before']:.3f}", flush=True)
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faults", default=",".join(FAULTS), help="comma-separated: " + ", ".join(FAULTS))
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the healthy-run cost (0 skips it)")
    parser.add_argument("--cost-epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="the global seed each fault's three runs start from (0)")
    parser.add_argument("--json", help="also write the results there")
    parser.add_argument("--explosion-sweep", metavar="RATES",
                        help="instead, train the relu LSTM with no monitor at these comma-separated constant "
                             "rates and print the step its loss first turns non-finite")
    parser.add_argument("--timesteps", default=str(LSTM_STEPS), help="with --explosion-sweep: comma-separated")
    parser.add_argument("--seeds", default="0", help="with --explosion-sweep: comma-separated")
    parser.add_argument("--momentum", type=float, default=0.9, help="with --explosion-sweep")
    parser.add_argument("--step-up", type=float, help="with --explosion-sweep: multiply the rate by this halfway")
    parser.add_argument("--activation", default="relu", help="with --explosion-sweep")
    parser.add_argument("--epochs", type=int, default=16, help="with --explosion-sweep")
    args = parser.parse_args(argv)
    from gradadvisor._tf import import_keras

    tf, keras = import_keras()
    if args.explosion_sweep:
        found = explosion_sweep(keras, [float(r) for r in args.explosion_sweep.split(",")],
                                [int(t) for t in args.timesteps.split(",")], [int(s) for s in args.seeds.split(",")],
                                args.epochs, args.momentum, args.step_up, args.activation)
        if args.json:
            with open(args.json, "w", encoding="utf-8") as handle:
                json.dump({"explosion_sweep": found, "load_average_at_end": os.getloadavg()}, handle, indent=2)
        return 0
    results = {"faults": {}, "seed": args.seed, "cpu_count": os.cpu_count(), "load_average_at_start": os.getloadavg()}
    for name in [n for n in args.faults.split(",") if n]:
        if name not in FAULTS:
            parser.error(f"unknown fault {name!r}; choose from {', '.join(FAULTS)}")
        print(f"fault {name}: {FAULTS[name].description}", flush=True)
        results["faults"][name] = run_fault(keras, tf, FAULTS[name], args.seed)
    if args.rounds:
        print("healthy-run cost (digits CNN):", flush=True)
        results["healthy_cost"] = healthy_cost(keras, args.rounds, args.cost_epochs)
    results["load_average_at_end"] = os.getloadavg()

    print("\n| fault | without recovery | with recovery: final loss | val. acc. | clean val. acc. | "
          "points vs clean | recoveries (step: trigger) | snapshot bytes |")
    print("|---|---|---|---|---|---|---|---|")
    for name, result in results["faults"].items():
        fault, recovered, clean = result["fault"], result["recover"], result["clean"]
        outcome = (f"non-finite loss from epoch {fault['first_nonfinite_epoch'] + 1}"
                   if fault["first_nonfinite_epoch"] is not None else
                   f"loss {fault['final_loss']:.3g}, val. acc. {fault['final_val_accuracy']:.3f}")
        outcome += (f", largest weight {fault['max_abs_weight']:.3g} (fault-free "
                    f"{clean['max_abs_weight']:.3g})")
        steps = ", ".join(f"{r['step']}: {r['trigger']}" for r in recovered["recoveries"]) or "none"
        print(f"| {name} | {outcome} | {recovered['final_loss']:.3g} | {recovered['final_val_accuracy']:.3f} | "
              f"{clean['final_val_accuracy']:.3f} | {result['val_accuracy_points_vs_clean']:+.1f} | {steps} | "
              f"{recovered['snapshot_bytes']:,} |")
    if "healthy_cost" in results:
        cost = results["healthy_cost"]
        print(f"\nHealthy run ({cost['steps']} steps, {cost['rounds']} rounds): recover/warn paired wall ratio "
              f"{cost['paired_wall_ratio_median']:.3f} (CPU {cost['paired_cpu_ratio_median']:.3f}); the hooks' "
              f"extra CPU time {cost['hook_cpu_share_median']:.2%} of the run, plus "
              f"{cost['fit_start_cpu_share_median']:.2%} at the fit() calls' starts (medians); warn "
              f"{cost['warn_seconds_median']:.2f} s, recover {cost['recover_seconds_median']:.2f} s; snapshot "
              f"{cost['snapshot_bytes']:,} bytes. Load average {results['load_average_at_start']} at start, "
              f"{results['load_average_at_end']} at end, on {results['cpu_count']} CPUs.")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
