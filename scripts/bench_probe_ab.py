"""Benchmark: two versions of the probe's compiled step against Keras' train function, in one process.

``bench_probe.py --paired`` compares one checkout's probe step with ``fit``; two
such runs at different times see different loads.  This script loads the
probe from another checkout as well (its ``gradadvisor`` package copied under
another name) and calls Keras' train function, the other checkout's probe step
and this one's in rotating blocks of 10 calls (the order reversed every other
round), so the three medians see the same load.

Usage: python scripts/bench_probe_ab.py OTHER_CHECKOUT [--models mobilenetv2] [--blocks 15] [--batch-size N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_probe  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", help="a checkout of gradadvisor whose probe step to compare with")
    parser.add_argument("--models", default="mobilenetv2")
    parser.add_argument("--blocks", type=int, default=15)
    parser.add_argument("--batch-size", type=int,
                        help="one batch size for every model (default: each model's own, see bench_probe.MODELS)")
    args = parser.parse_args()
    if args.batch_size:
        bench_probe.MODELS.update({name: args.batch_size for name in bench_probe.MODELS})
    source = os.path.join(args.other, "gradadvisor")
    if not os.path.isdir(source):
        raise SystemExit(f"'{args.other}' has no gradadvisor package. Pass the root of a gradadvisor checkout.")
    copy = tempfile.mkdtemp()
    shutil.copytree(source, os.path.join(copy, "gradadvisor_other"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    sys.path.insert(0, copy)
    import tensorflow as tf

    import gradadvisor.probe.step as this_step
    import gradadvisor_other.probe.step as other_step
    from gradadvisor._tf import import_keras
    from gradadvisor.probe.working_copy import make_loss_function

    _, keras = import_keras()
    print("| model | batch | fit ms/step | other probe ms/step | this probe ms/step | other / fit | this / fit | "
          "this / other | load avg |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        batch_size = bench_probe.MODELS[name]
        model, x, y = bench_probe.build(name, batch_size * 4)
        model.fit(x, y, batch_size=batch_size, verbose=0)
        batches = iter(tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size, drop_remainder=True).repeat())
        inputs, targets = [tf.constant(x[:batch_size])], tf.constant(y[:batch_size])

        def fit_block():
            started = time.perf_counter()
            for _ in range(10):
                logs = model.train_function(batches)
            float(logs["loss"])
            return (time.perf_counter() - started) / 10

        def probe_block(module):
            work, _, _ = bench_probe.build(name, 1)
            step = module.ProbeStep(work, tf, keras, True, make_loss_function(model.loss, keras),
                                    keras.optimizers.Adam(1e-3))._step_function()

            def run():
                started = time.perf_counter()
                for _ in range(10):
                    vector, _ = step(inputs, targets)
                    vector.numpy()
                return (time.perf_counter() - started) / 10
            return run

        blocks = {"fit": fit_block, "other": probe_block(other_step), "this": probe_block(this_step)}
        for block in blocks.values():  # trace and warm up
            block()
        times, loads = {key: [] for key in blocks}, []
        order = list(blocks)
        for round_number in range(args.blocks):
            loads.append(bench_probe.load_average())
            for key in (order if round_number % 2 == 0 else order[::-1]):
                times[key].append(blocks[key]())
        fit, other, this = (statistics.median(times[key]) for key in order)
        print(f"| {name} | {batch_size} | {fit * 1e3:.2f} | {other * 1e3:.2f} | {this * 1e3:.2f} | {other / fit:.3f} | "
              f"{this / fit:.3f} | {this / other:.3f} | {min(loads):.2f}-{max(loads):.2f} |", flush=True)


if __name__ == "__main__":
    main()
