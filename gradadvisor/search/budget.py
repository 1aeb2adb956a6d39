"""The budget: how many steps a trial and the confirmation take, and when to stop starting trials.

Left to itself (``trial_steps`` and ``time_budget`` None), the search sizes
its budget from two facts it already has:

* the sequence length of recurrent layers: a dependency over ``T`` timesteps
  takes more steps to learn, so trials get ``2 T`` steps (between 60 and 240);
* the measured CPU time of a probe step (the diagnosis's own probe, tracing
  included, so an overestimate): the trials stop being started after
  :data:`SMALL_MODEL_SECONDS` CPU seconds for a small model, up to
  :data:`LARGE_MODEL_SECONDS` for a large one, and trials shrink (to no fewer
  than :data:`MIN_TRIAL_STEPS` steps) so that at least
  :data:`MIN_TRIALS` of them fit.

The automatic budget is counted in the CPU time of this process (all its
threads), not in wall time: on a machine shared with other work a step takes
longer in wall time while the work it does stays the same, and a budget sized
from wall time would cut the trials short exactly when the machine is busy.
On a quiet machine the process's CPU time runs at least as fast as the wall
clock whenever TensorFlow keeps one or more cores busy, so a budget of ``S``
CPU seconds ends within about ``S`` wall seconds there.  A ``time_budget``
the caller gives is wall time, as a person means it.

When neither trial steps nor a time budget is given, the search also starts no new trial once one has
learned clearly (held-out loss at most 0.8x its start and chance, where
learning asks for 0.9x) with a healthy probe: the textbook remedies come first, so a repair found by the first
trials is confirmed at once instead of spending the rest of the budget.

A search of the default budget then ends, confirmation included, within about
a minute on a small model and five minutes on a MobileNetV2-size one (2 CPU
cores); ``benchmarks/repair.md`` has the measurements.
"""

from __future__ import annotations

from .._tf import import_keras

DEFAULT_TRIAL_STEPS = 60
MAX_SEQUENCE_TRIAL_STEPS = 240
MIN_TRIAL_STEPS = 20
MIN_TRIALS = 4
SMALL_MODEL_SECONDS = 30.0
LARGE_MODEL_SECONDS = 130.0
#: CPU seconds of trials per CPU second of measured probe step (tracing included).
_SECONDS_PER_STEP_SECOND = 600.0
#: CPU seconds of trials per CPU second of a plain training step (tracing
#: excluded), as the first trial measures it.
_SECONDS_PER_PLAIN_STEP_SECOND = 900.0


def sequence_length(model) -> int | None:
    """The longest number of timesteps any recurrent layer of ``model`` reads, or None."""
    from ..probe import is_graph_model, leaf_layers

    _, keras = import_keras()
    if not is_graph_model(model, keras):
        return None
    lengths = []
    for _, layer in leaf_layers(model):
        if isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional)):
            try:
                length = layer.input.shape[1]
            except Exception:  # shared or unbuilt layers have no single input
                length = None
            if length:
                lengths.append(int(length))
    return max(lengths) if lengths else None


def size_budget(model, probe, *, max_trials: int, trial_steps: int | None, confirm_steps: int | None,
                time_budget: float | None, tuner: str, distributed: bool = False) -> dict:
    """The search budget, with what was sized automatically and why.

    Args:
        model: The model searched.
        probe: The diagnosis's :class:`~gradadvisor.probe.ProbeResult` (its
            ``seconds`` and ``num_steps`` give the step time).
        max_trials, trial_steps, confirm_steps, time_budget, tuner: As given
            to :func:`~gradadvisor.search.recommend`; None means "size it".
        distributed: A distributed search keeps the given or default steps
            (every process must agree) and sizes no time budget.

    Returns:
        ``{"max_trials", "trial_steps", "confirm_steps", "time_budget", "tuner",
        "sized", "automatic_time_budget", "stop_when_learned", "clock"}``;
        ``sized`` lists sentences saying what was sized from what, ``clock``
        is ``"cpu"`` when the time budget counts this process's CPU seconds
        (sized automatically) and ``"wall"`` when it counts wall seconds
        (given by the caller).
    """
    sized = []
    # Left wholly to itself (no steps or time given), the budget may end the search early.
    untouched = trial_steps is None and time_budget is None and not distributed
    step_seconds = probe_step_seconds(probe)
    if trial_steps is None:
        trial_steps = DEFAULT_TRIAL_STEPS
        length = sequence_length(model)
        if length and 2 * length > trial_steps:
            trial_steps = min(2 * length, MAX_SEQUENCE_TRIAL_STEPS)
            sized.append(f"trials of {trial_steps} steps for sequences of {length} timesteps")
        if step_seconds and time_budget is None and not distributed:
            affordable = int(_trial_seconds(step_seconds) / MIN_TRIALS / step_seconds)
            if affordable < trial_steps:
                trial_steps = max(MIN_TRIAL_STEPS, affordable)
                sized.append(f"trials of {trial_steps} steps at a measured {step_seconds:.2g} CPU s per probe step")
    automatic = time_budget is None and bool(step_seconds) and not distributed
    if automatic:
        time_budget = round(_trial_seconds(step_seconds), 1)
        sized.append(f"new trials stop after {time_budget:g} CPU s (measured {step_seconds:.2g} CPU s per "
                     "probe step)")
    stop_when_learned = automatic and untouched
    if stop_when_learned:
        sized.append("no new trial after the first that learns clearly with a healthy probe")
    return {"max_trials": max_trials, "trial_steps": int(trial_steps),
            "confirm_steps": int(confirm_steps or 2 * trial_steps), "time_budget": time_budget,
            "tuner": tuner, "sized": sized, "automatic_time_budget": automatic,
            "stop_when_learned": stop_when_learned, "clock": "cpu" if automatic else "wall"}


def probe_step_seconds(probe) -> float | None:
    """CPU seconds per step of ``probe`` (tracing included), or None if it ran no step.

    Falls back to wall seconds for a probe result saved before its CPU time was recorded.
    """
    if probe is None or not getattr(probe, "num_steps", 0):
        return None
    seconds = float(getattr(probe, "cpu_seconds", 0.0) or 0.0) or float(probe.seconds)
    return seconds / max(int(probe.num_steps), 1) or None


def resize_time_budget(budget: dict, plain_step_seconds: float | None) -> bool:
    """Re-size an automatic time budget from the first trial's plain step time.

    The diagnosis's probe time includes tracing, which dominates on small
    models; the first trial measures a training step without it (in CPU
    seconds, like the budget).  Returns whether the budget changed.
    """
    if not budget.get("automatic_time_budget") or not plain_step_seconds:
        return False
    budget["automatic_time_budget"] = False
    seconds = round(min(LARGE_MODEL_SECONDS, max(SMALL_MODEL_SECONDS,
                                                 _SECONDS_PER_PLAIN_STEP_SECOND * plain_step_seconds)), 1)
    if seconds == budget["time_budget"]:
        return False
    budget["time_budget"] = seconds
    budget["sized"].append(f"new trials stop after {seconds:g} CPU s (the first trial measured "
                           f"{plain_step_seconds:.2g} CPU s per training step)")
    return True


def _trial_seconds(step_seconds: float) -> float:
    return min(LARGE_MODEL_SECONDS, max(SMALL_MODEL_SECONDS, _SECONDS_PER_STEP_SECOND * step_seconds))
