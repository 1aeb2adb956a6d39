"""Settings are checked once, before any TensorFlow work, for the Python API as for the command line."""

import pytest

from gradadvisor.api import diagnose
from gradadvisor.errors import COMMAND_LINE, OutputError, UsageError
from gradadvisor.search import recommend
from gradadvisor.search.options import OutputOptions, ProbeOptions, SearchOptions, check_options


@pytest.mark.parametrize("call, message", [
    (lambda: diagnose(object(), steps=0), "The 'steps' parameter must be a whole number of at least 1. Got 0 instead."),
    (lambda: diagnose(object(), batch_size=2.5),
     "The 'batch_size' parameter must be a whole number of at least 1. Got 2.5 instead."),
    (lambda: recommend(object(), max_trials=0),
     "The 'max_trials' parameter must be a whole number of at least 1. Got 0 instead."),
    (lambda: recommend(object(), trial_steps=1),
     "The 'trial_steps' parameter must be a whole number of at least 2. Got 1 instead."),
    (lambda: recommend(object(), time_budget=-1),
     "The 'time_budget' parameter must be a number of seconds above 0. Got -1 instead."),
    (lambda: recommend(object(), tuner="grid"),
     "The 'tuner' parameter must be bayesian, random or hyperband. Got 'grid' instead."),
])
def test_python_api_settings_are_refused_before_the_model_is_touched(call, message):
    # object() is no model: the settings are refused before anything looks at it.
    with pytest.raises(UsageError) as caught:
        call()
    assert str(caught.value) == message


def test_outputs_are_checked_once_and_a_worker_writes_none(tmp_path):
    existing = tmp_path / "fixed.keras"
    existing.write_bytes(b"keep me")
    with pytest.raises(OutputError, match="already exists"):
        check_options(ProbeOptions(), SearchOptions(), OutputOptions(save_fixed=existing))
    plan = check_options(ProbeOptions(), SearchOptions(), OutputOptions(save_fixed=existing, force=True,
                                                                        report=tmp_path / "r.html"))
    assert (plan.save_fixed, plan.report, plan.cluster) == (existing, tmp_path / "r.html", None)
    assert "GA101" in plan.rules and existing.read_bytes() == b"keep me"
    worker = check_options(ProbeOptions(), SearchOptions(distributed="worker", tuner_dir=tmp_path,
                                                         oracle_address="127.0.0.1:1"),
                           OutputOptions(save_fixed=existing, report=tmp_path / "r.html"), spelling=COMMAND_LINE)
    assert worker.worker and worker.save_fixed is None and worker.report is None
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError) as caught:
        check_options(ProbeOptions(), SearchOptions(tuner_dir=tmp_path / "file"), OutputOptions(),
                      spelling=COMMAND_LINE)
    assert str(caught.value) == f"--tuner-dir '{tmp_path / 'file'}' is a file. Name a folder."
