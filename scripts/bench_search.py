"""Benchmark: one search, run by Keras Tuner's chief with 1 and with 2 workers.

Each run starts a chief and N workers on this machine (loopback, a fresh free
port and tuner folder), all with the same ``gradadvisor diagnose`` command, and
measures:

* ``wall``: from starting the processes until the last one has exited
  (TensorFlow start-up, the diagnosis every process repeats, the search, and the
  chief's confirmation run);
* ``search``: the chief's ``budget.search_seconds``, from serving the oracle to
  the last worker being told to stop (the part that workers divide).

The random tuner is the default because its trials do not depend on which
trials have finished, so every run tries the same setups.  Several workers on
one machine would each start a TensorFlow thread pool as wide as the machine
and fight over the cores, so by default each of N workers gets 1/N of the cores
(``TF_NUM_INTRAOP_THREADS``; ``--no-split-threads`` turns that off); on
separate machines the question does not arise.  A local search (one
process, no oracle) is run too, as the baseline the distributed overhead is
measured against.  The machine is shared: run a few rounds and read the median.

Usage: python scripts/bench_search.py [--example deep-sigmoid] [--max-trials 8]
       [--trial-steps 60] [--tuner random] [--rounds 1] [--no-local]
       [--no-split-threads] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: A run that takes longer than this is killed (its own processes only).
RUN_TIMEOUT = 1800


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def environment(threads: int | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERASTUNER_")}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if threads:
        env.update(TF_NUM_INTRAOP_THREADS=str(threads), TF_NUM_INTEROP_THREADS=str(threads))
    return env


def threads_for(args, workers: int) -> int | None:
    """Intra-op threads of each worker: a fair share of the cores, or TensorFlow's default."""
    if workers < 2 or not args.split_threads:
        return None
    return max(1, (os.cpu_count() or 1) // workers)


def command(args, tuner_dir) -> list:
    return [sys.executable, "-m", "gradadvisor", "diagnose", "--example", args.example, "--steps", "10",
            "--seed", str(args.seed), "--max-trials", str(args.max_trials), "--trial-steps", str(args.trial_steps),
            "--tuner", args.tuner, "--tuner-dir", str(tuner_dir), "--format", "json", "--fail-on", "never", "-q"]


def run(args, workers: int) -> dict:
    """One search with ``workers`` workers (0: a local search); its times and trial split."""
    with tempfile.TemporaryDirectory(prefix="bench-search-") as folder:
        folder = Path(folder)
        base = command(args, folder / "tuner")
        address = f"127.0.0.1:{free_port()}"
        roles = {"chief": base} if workers == 0 else {
            "chief": base + ["--distributed", "chief", "--oracle-address", address],
            **{f"worker-{i}": base + ["--distributed", "worker", "--oracle-address", address,
                                      "--tuner-id", f"worker-{i}"] for i in range(1, workers + 1)}}
        processes, logs = {}, {}
        started = time.perf_counter()
        try:
            for name, argv in roles.items():
                logs[name] = (open(folder / f"{name}.out", "w"), open(folder / f"{name}.err", "w"))
                # The chief only waits during the search; its threads need no share.
                threads = None if name == "chief" else threads_for(args, workers)
                processes[name] = subprocess.Popen(argv, stdout=logs[name][0], stderr=logs[name][1],
                                                   env=environment(threads))
            for process in processes.values():
                process.wait(timeout=max(1.0, RUN_TIMEOUT - (time.perf_counter() - started)))
            wall = time.perf_counter() - started
        finally:
            for process in processes.values():
                if process.poll() is None:
                    process.kill()
                    process.wait(timeout=30)
            for out, err in logs.values():
                out.close()
                err.close()
        for name, process in processes.items():
            if process.returncode != 0:
                raise SystemExit(f"{name} exited {process.returncode}:\n"
                                 f"{(folder / f'{name}.err').read_text()[-2000:]}")
        recommendation = json.loads((folder / "chief.out").read_text())["recommendation"]
    split = (recommendation.get("distributed") or {}).get("trials_by_worker") or {"local": [
        t["trial"] for t in recommendation["trials"]]}
    return {"workers": workers, "wall": round(wall, 2), "search": recommendation["budget"]["search_seconds"],
            "trials": len(recommendation["trials"]),
            "trial_seconds": round(sum(t["seconds"] for t in recommendation["trials"]), 2),
            "trials_by_worker": {name: len(ids) for name, ids in split.items()}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--example", default="deep-sigmoid")
    parser.add_argument("--max-trials", type=int, default=8)
    parser.add_argument("--trial-steps", type=int, default=60)
    parser.add_argument("--tuner", default="random", choices=["random", "bayesian", "hyperband"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--no-local", action="store_true", help="Skip the local (one process) baseline.")
    parser.add_argument("--no-split-threads", dest="split_threads", action="store_false",
                        help="Let every worker use all the cores (TensorFlow's default).")
    parser.add_argument("--json", metavar="PATH", help="Also write the results here.")
    args = parser.parse_args(argv)

    counts = ([] if args.no_local else [0]) + [1, 2]
    results = {count: [] for count in counts}
    for round_index in range(args.rounds):
        # Alternate the order: a shared machine's load drifts.
        for count in (counts if round_index % 2 == 0 else counts[::-1]):
            result = run(args, count)
            results[count].append(result)
            print(f"round {round_index + 1}: {_label(count)}: wall {result['wall']:.1f} s, search "
                  f"{result['search']:.1f} s, trials per process {result['trials_by_worker']}", file=sys.stderr)
    summary = {count: {"wall": statistics.median(r["wall"] for r in runs),
                       "search": statistics.median(r["search"] for r in runs),
                       "trial_seconds": statistics.median(r["trial_seconds"] for r in runs),
                       "trials_by_worker": runs[-1]["trials_by_worker"]} for count, runs in results.items()}
    print(f"{args.max_trials} trials x {args.trial_steps} steps ({args.tuner}, example {args.example}) on "
          f"{os.cpu_count()} CPU core(s), median of {args.rounds} round(s); intra-op threads per worker with 2 "
          f"workers: {threads_for(args, 2) or 'all'}")
    print(f"{'processes':<22}{'wall s':>9}{'search s':>10}{'sum of trial s':>16}  trials per process")
    for count, row in summary.items():
        print(f"{_label(count):<22}{row['wall']:>9.1f}{row['search']:>10.1f}{row['trial_seconds']:>16.1f}  "
              f"{row['trials_by_worker']}")
    search_ratio = summary[2]["search"] / summary[1]["search"]
    wall_ratio = summary[2]["wall"] / summary[1]["wall"]
    print(f"2 workers / 1 worker: search {search_ratio:.2f} (speed-up {1 / search_ratio:.2f}x), "
          f"wall {wall_ratio:.2f} (speed-up {1 / wall_ratio:.2f}x)")
    if args.json:
        Path(args.json).write_text(json.dumps({"schema": "gradadvisor.bench_search/1", "args": vars(args),
                                               "runs": {str(k): v for k, v in results.items()},
                                               "search_ratio": search_ratio, "wall_ratio": wall_ratio},
                                              indent=1))
    return 0


def _label(count: int) -> str:
    return "local (no oracle)" if count == 0 else f"chief + {count} worker{'s' if count > 1 else ''}"


if __name__ == "__main__":
    sys.exit(main())
