"""Scaling out: Keras Tuner's chief/worker search on loopback, and the probe on two devices."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gradadvisor.cli import main_group
from gradadvisor.search.distributed import (Cluster, OracleUnreachableError, check_settings, resolve_cluster,
                                     write_settings)
from gradadvisor.errors import UsageError
from gradadvisor.api import diagnose
from gradadvisor.search import TrialRecord, read_records, recommend, write_record

#: Every subprocess of this file must finish within this many seconds.
PROCESS_TIMEOUT = 240


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def child_environment() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERASTUNER_")}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
    return env


@pytest.fixture(scope="module")
def sigmoid_files(tmp_path_factory, sigmoid_stack):
    """A small deep sigmoid model that vanishes, as a .keras file with its .npz data."""
    folder = tmp_path_factory.mktemp("sigmoid")
    model, x, y = sigmoid_stack()
    model.save(folder / "sig.keras")
    np.savez(folder / "sig.npz", x=x, y=y)
    return folder / "sig.keras", folder / "sig.npz"


# --------------------------------------------------------------------------
# Options, checked before any TensorFlow work

@pytest.mark.parametrize("extra, message", [
    (["--distributed", "chief", "--oracle-address", "127.0.0.1:5000"],
     "--distributed chief needs --tuner-dir DIR, a folder shared by the chief and every worker (for example "
     "on NFS)."),
    (["--distributed", "worker", "--tuner-dir", "{tmp}"],
     "A distributed worker needs the oracle's address: pass --oracle-address HOST:PORT or set "
     "KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT."),
    (["--distributed", "worker", "--tuner-dir", "{tmp}", "--oracle-address", "localhost"],
     "The oracle address must be HOST:PORT with a port from 1 to 65535, for example 10.0.0.5:8470. Got "
     "'localhost' instead."),
    (["--distributed", "worker", "--tuner-dir", "{tmp}", "--oracle-address", "h:1", "--tuner-id", "chief-2"],
     "A worker's tuner id must not contain 'chief' (Keras Tuner would take it for the chief). Got 'chief-2' "
     "instead; choose another with --tuner-id ID."),
    (["--distributed", "chief", "--tuner-dir", "{tmp}", "--oracle-address", "h:1", "--tuner-id", "boss"],
     "The chief's tuner id must contain 'chief' (Keras Tuner tells the chief by it). Got 'boss' instead; "
     "drop --tuner-id or KERASTUNER_TUNER_ID for the chief."),
    (["--distributed", "chief", "--tuner-dir", "{tmp}", "--oracle-address", "h:1", "--no-search"],
     "--distributed chief runs a search, but --no-search turns it off. Drop one of them."),
    (["--oracle-address", "127.0.0.1:5000"],
     "--oracle-address only applies to a distributed search. Add --distributed chief or --distributed worker."),
])
def test_distributed_options_are_checked_before_any_work(extra, message, tmp_path, monkeypatch):
    for name in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
        monkeypatch.delenv(name, raising=False)
    args = ["diagnose", "--example", "deep-sigmoid"] + [a.replace("{tmp}", str(tmp_path)) for a in extra]
    result = CliRunner().invoke(main_group, args, standalone_mode=False)
    assert isinstance(result.exception, UsageError), result.output
    assert str(result.exception) == message


@pytest.mark.parametrize("call, message", [
    (lambda tmp: recommend(object(), oracle_address="127.0.0.1:5000"),
     "The 'oracle_address' parameter only applies to a distributed search. Add distributed='chief' or "
     "distributed='worker'."),
    (lambda tmp: recommend(object(), distributed="worker", oracle_address="127.0.0.1:5000"),
     "distributed='worker' needs tuner_dir=DIR, a folder shared by the chief and every worker (for example on "
     "NFS)."),
    (lambda tmp: diagnose(object(), search_options=dict(distributed="chief", tuner_dir=tmp)),
     "distributed='chief' runs a search, but search=False turns it off. Drop one of them."),
    (lambda tmp: diagnose(object(), search=True, search_options=dict(distributed="worker", tuner_dir=tmp,
                                                                     oracle_address="h:1", tuner_id="chief-2")),
     "A worker's tuner id must not contain 'chief' (Keras Tuner would take it for the chief). Got 'chief-2' "
     "instead; choose another with tuner_id=ID."),
    (lambda tmp: diagnose(object(), search=True, search_options=dict(distributed="worker", tuner_dir=tmp)),
     "A distributed worker needs the oracle's address: pass oracle_address=HOST:PORT or set KERASTUNER_ORACLE_IP "
     "and KERASTUNER_ORACLE_PORT."),
    (lambda tmp: diagnose(object(), search=True, search_options=dict(trials=3)),
     "The 'search_options' parameter has the unknown key 'trials'. Known keys: confirm_steps, distributed, force, "
     "max_trials, oracle_address, oracle_timeout, save_fixed, time_budget, trial_steps, tuner, tuner_dir, "
     "tuner_id."),
])
def test_the_python_api_gets_the_same_checks_in_its_own_names(call, message, tmp_path, monkeypatch):
    for name in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(UsageError) as caught:
        call(tmp_path)
    assert str(caught.value) == message


def test_a_chief_whose_port_is_taken_fails_at_once(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["diagnose", "--example", "deep-sigmoid", "--distributed", "chief", "--tuner-dir", str(tmp_path),
                "--oracle-address", f"127.0.0.1:{port}"]
        result = CliRunner().invoke(main_group, args, standalone_mode=False)
    assert isinstance(result.exception, UsageError)
    assert str(result.exception).startswith(f"The chief cannot listen on 127.0.0.1:{port} (")


def test_cluster_comes_from_the_environment_and_has_unique_worker_ids():
    environ = {"KERASTUNER_ORACLE_IP": "10.0.0.5", "KERASTUNER_ORACLE_PORT": "8470"}
    chief = resolve_cluster("chief", environ=environ)
    assert chief == Cluster("chief", "10.0.0.5", 8470, "chief")
    assert chief.environment() == {"KERASTUNER_TUNER_ID": "chief", "KERASTUNER_ORACLE_IP": "10.0.0.5",
                                   "KERASTUNER_ORACLE_PORT": "8470"}
    worker = resolve_cluster("worker", environ=environ)
    assert worker.tuner_id == f"worker-{socket.gethostname()}-{os.getpid()}"
    named = resolve_cluster("worker", "[::1]:9000", environ=dict(environ, KERASTUNER_TUNER_ID="gpu-box-1"))
    assert (named.host, named.port, named.tuner_id, named.address) == ("::1", 9000, "gpu-box-1", "[::1]:9000")
    assert resolve_cluster(None, environ=environ) is None


def test_trial_records_round_trip_in_trial_order(tmp_path):
    for trial, score in (("10", 3.0), ("2", 1.0), ("1", 1e6)):
        (tmp_path / f"trial_{trial}").mkdir()
        write_record(tmp_path / f"trial_{trial}", TrialRecord(
            trial, {"activation": "relu"}, score, "healthy", None if score > 100 else score, None, ["GA101"],
            1.5, "worker-a"))
    records = read_records(tmp_path)
    assert [r.trial for r in records] == ["1", "2", "10"]
    assert records[0].val_loss is None and records[1] == TrialRecord(
        "2", {"activation": "relu"}, 1.0, "healthy", 1.0, None, ["GA101"], 1.5, "worker-a")


def test_a_worker_refuses_a_chief_that_searches_something_else(tmp_path):
    cluster = Cluster("worker", "127.0.0.1", 5000, "w1", timeout=1.0)
    ours = {"seed": 0, "trial_steps": 20, "dimensions": [{"name": "activation"}]}
    with pytest.raises(UsageError) as missing:
        check_settings(tmp_path, ours, cluster)
    assert str(missing.value) == (
        f"The worker cannot see the chief's search settings in '{tmp_path.parent}': the chief at 127.0.0.1:5000 "
        "writes them into its --tuner-dir before serving trials, so this folder is not the chief's. Point the "
        "chief and every worker at one shared folder.")
    write_settings(tmp_path, dict(ours, trial_steps=60))
    with pytest.raises(UsageError) as different:
        check_settings(tmp_path, ours, cluster)
    assert str(different.value).startswith(
        "This worker's search differs from the chief's in trial_steps (20 here, 60 on the chief). Run the chief "
        "and every worker with the same MODEL, --data, --seed")
    write_settings(tmp_path, ours)
    check_settings(tmp_path, ours, cluster)


def test_a_worker_without_a_chief_gives_up_in_time(sigmoid_files, tmp_path):
    from gradadvisor.search import recommend

    model_path, data_path = sigmoid_files
    data = np.load(data_path)
    started = time.perf_counter()
    with pytest.raises(OracleUnreachableError) as caught:
        recommend(str(model_path), data["x"], data["y"], steps=3, max_trials=2, trial_steps=3,
                  tuner="random", tuner_dir=tmp_path, distributed="worker",
                  oracle_address=f"127.0.0.1:{free_port()}", tuner_id="lonely", oracle_timeout=1.0)
    assert str(caught.value).startswith("The worker could not reach the oracle at 127.0.0.1:")
    assert str(caught.value).endswith("within 1 s. Start the chief first ('gradadvisor diagnose ... "
                                      "--distributed chief'), check the address and that the port is open, "
                                      "or raise --oracle-timeout.")
    assert time.perf_counter() - started < 60


# --------------------------------------------------------------------------
# One chief and two workers, on loopback

def _shape(value):
    """The keys of nested dicts (first element for lists of dicts), to compare documents' schemas.

    Lists of plain values and empty lists count as values: whether a list is
    empty, or null, depends on the outcome (``fixed_findings`` is ``[]`` for a
    recommended setup re-probed healthy and ``None`` when nothing was saved).
    """
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return [_shape(value[0])]
    return None


@pytest.mark.slow
def test_one_chief_and_two_workers_split_the_trials_on_loopback(sigmoid_files, tmp_path):
    import jsonschema

    from gradadvisor.api import diagnose

    model_path, data_path = sigmoid_files
    tuner_dir = tmp_path / "shared"
    tuner_dir.mkdir()
    address = f"127.0.0.1:{free_port()}"
    common = [sys.executable, "-m", "gradadvisor", "diagnose", str(model_path), "--data", str(data_path),
              "--steps", "5", "--seed", "3", "--max-trials", "4", "--trial-steps", "12", "--tuner", "random",
              "--tuner-dir", str(tuner_dir), "--oracle-address", address, "--oracle-timeout", "120"]
    roles = {"chief": ["--distributed", "chief", "--format", "json", "--fail-on", "never"],
             "worker-a": ["--distributed", "worker", "--tuner-id", "worker-a", "--format", "json"],
             "worker-b": ["--distributed", "worker", "--tuner-id", "worker-b"]}
    processes, files = {}, {}
    started = time.monotonic()
    try:
        for name, extra in roles.items():
            files[name] = (open(tmp_path / f"{name}.out", "w"), open(tmp_path / f"{name}.err", "w"))
            processes[name] = subprocess.Popen(common + extra, stdout=files[name][0], stderr=files[name][1],
                                               env=child_environment())
        for process in processes.values():
            process.wait(timeout=max(1.0, PROCESS_TIMEOUT - (time.monotonic() - started)))
    finally:
        # Only the processes this test started, and only if they outlived the deadline.
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
        for out, err in files.values():
            out.close()
            err.close()
    outputs = {name: ((tmp_path / f"{name}.out").read_text(), (tmp_path / f"{name}.err").read_text())
               for name in roles}
    for name, process in processes.items():
        assert process.returncode == 0, f"{name} exited {process.returncode}: {outputs[name][1][-3000:]}"
        assert "Traceback" not in outputs[name][1], outputs[name][1]

    chief = json.loads(outputs["chief"][0])
    recommendation = chief["recommendation"]
    ran = {worker: set(ids) for worker, ids in recommendation["distributed"]["trials_by_worker"].items()}
    assert set(ran) == {"worker-a", "worker-b"} and all(ran.values()), ran
    assert ran["worker-a"].isdisjoint(ran["worker-b"])
    assert ran["worker-a"] | ran["worker-b"] == {t["trial"] for t in recommendation["trials"]}
    assert len(recommendation["trials"]) == 4 and recommendation["confirmation"] is not None
    assert {t["worker"] for t in recommendation["trials"]} == {"worker-a", "worker-b"}
    assert recommendation["distributed"]["role"] == "chief"
    for name in ("worker-a", "worker-b"):
        out, err = outputs[name]
        assert out == "", f"{name} printed a report"
        line = err.strip().splitlines()[-1]
        ids = ", ".join(sorted(ran[name], key=int))
        assert line == (f"gradadvisor: worker {name} ran trial(s) {ids} for the oracle at {address}; the chief "
                        "prints the result."), line
    assert sorted(p.name for p in (tuner_dir / "search").glob("trial_*/gradadvisor_trial.json")) == \
        ["gradadvisor_trial.json"] * 4

    # The same search in one process gives a document of the same shape.
    local = diagnose(str(model_path), data=str(data_path), steps=5, seed=3, search=True,
                     search_options=dict(max_trials=2, trial_steps=12, tuner="random")).to_dict()
    schema = json.loads((Path(__file__).parent.parent / "gradadvisor" / "diagnosis.schema.json").read_text())
    jsonschema.validate(chief, schema)
    jsonschema.validate(local, schema)
    local_recommendation = local["recommendation"]
    assert local_recommendation["distributed"] is None
    assert {t["worker"] for t in local_recommendation["trials"]} == {"tuner0"}
    shape, local_shape = _shape(recommendation), _shape(local_recommendation)
    shape.pop("distributed"), local_shape.pop("distributed")
    # How the budget was sized is a list of sentences; a chief runs no trial, so it never
    # re-sizes the budget from a measured step and may say fewer of them.
    shape["budget"].pop("sized"), local_shape["budget"].pop("sized")
    assert shape == local_shape
    assert time.monotonic() - started < PROCESS_TIMEOUT + 60


# --------------------------------------------------------------------------
# The probe and the confirmation run on two devices

MIRRORED_SCRIPT = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import numpy as np
    from gradadvisor.loading import prepare
    from gradadvisor.probe.mirrored import resolve_strategy
    from gradadvisor.probe import run_probe
    from gradadvisor.search import recommend

    model, data, _ = prepare(sys.argv[1], data=sys.argv[2])
    strategy = resolve_strategy()
    probe = run_probe(model, data, steps=4, batch_size=30, seed=1)
    one = run_probe(model, data, steps=4, batch_size=30, seed=1, strategy=None)
    rec = recommend(model, data, steps=4, max_trials=1, trial_steps=4, confirm_steps=6, tuner="random", seed=1)
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "notes": probe.notes,
                      "probe": probe.to_dict(), "one": one.to_dict(), "single_notes": one.notes,
                      "confirmation": rec.confirmation, "trials": rec.trials}))
""")


def _close(a, b, tolerance=1e-4):
    a, b = np.asarray(a, dtype="float64"), np.asarray(b, dtype="float64")
    return a.shape == b.shape and np.allclose(a, b, rtol=tolerance, atol=1e-7)


def test_probe_and_confirmation_run_on_two_devices_with_the_same_numbers(sigmoid_files, tmp_path):
    from gradadvisor.loading import prepare
    from gradadvisor.probe.mirrored import resolve_strategy
    from gradadvisor.probe import run_probe
    from gradadvisor.search import recommend

    model_path, data_path = sigmoid_files
    script = tmp_path / "two_devices.py"
    script.write_text(MIRRORED_SCRIPT)
    with open(tmp_path / "two.out", "w") as out, open(tmp_path / "two.err", "w") as err:
        process = subprocess.Popen([sys.executable, str(script), str(model_path), str(data_path)], stdout=out,
                                   stderr=err, env=child_environment())
        try:
            # Meanwhile, this process (one device) takes the unchanged single-device path.
            assert resolve_strategy() is None
            model, data, _ = prepare(str(model_path), data=str(data_path))
            one = run_probe(model, data, steps=4, batch_size=30, seed=1)
            rec = recommend(model, data, steps=4, max_trials=1, trial_steps=4, confirm_steps=6, tuner="random",
                            seed=1)
            process.wait(timeout=PROCESS_TIMEOUT)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
    assert process.returncode == 0, (tmp_path / "two.err").read_text()[-3000:]
    two = json.loads((tmp_path / "two.out").read_text().strip().splitlines()[-1])
    assert two["replicas"] == 2
    assert any(note.startswith("Each step ran on 2 devices with MirroredStrategy") for note in two["notes"])
    assert not any("devices" in note for note in two["single_notes"] + one.notes)
    for probe in (two["probe"], two["one"]):
        assert _close(probe["loss"], one.loss)
        for layer, stats in one.stats.items():
            for name, values in stats.items():
                assert _close(probe["stats"][layer][name], values), (layer, name)
    assert [t["values"] for t in two["trials"]] == [t["values"] for t in rec.trials]
    assert _close(two["trials"][0]["score"], rec.trials[0]["score"])
    for run in ("original", "recommended"):
        assert _close(two["confirmation"][run]["loss"], rec.confirmation[run]["loss"]), run
