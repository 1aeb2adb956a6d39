"""The report's recovery section: the training loss with each GradientMonitor recovery marked.

Only a report written by :class:`~gradadvisor.GradientMonitor` with
``on_problem="recover"`` (or a callable) has it; the data comes from the
monitor, not from the diagnosis, so a diagnosis saved as JSON does not carry it.
"""

from __future__ import annotations

import math

import numpy as np

from . import plots

_LOSS_COLOR = "#2563eb"


def recovery_chart(training: dict) -> plots.Chart | None:
    """The batch loss at each training step, a marker and a label at each recovery.

    Args:
        training: ``loss_steps`` and ``loss`` (the batch loss per step, thinned
            on long runs) and ``recoveries`` (the monitor's records).

    Returns:
        The chart, or None when no step was recorded.
    """
    import matplotlib

    steps = np.asarray(training.get("loss_steps") or [], dtype="float64")
    losses = plots._floats(training.get("loss") or [])
    if losses.size == 0 or steps.size != losses.size:
        return None
    notes = []
    finite = np.isfinite(losses)
    if not finite.all():
        notes.append(f"{int((~finite).sum())} recorded step(s) had a NaN or infinite loss; they are not drawn.")
    recoveries = training.get("recoveries") or []
    with matplotlib.rc_context(plots._STYLE):
        figure, axis = plots._figure(3.2)
        axis.plot(steps[finite], losses[finite], color=_LOSS_COLOR, linewidth=1.0, label="batch loss")
        plots._loss_axis(axis, losses, "batch loss")
        for number, record in enumerate(recoveries, start=1):
            step = record.get("step")
            if step is None:
                continue
            axis.axvline(step, color=plots._PROBLEM_COLOR, linewidth=1.2, linestyle="--")
            axis.annotate(f"recovery {number}", xy=(step, 1.0), xycoords=("data", "axes fraction"),
                          xytext=(3, -12 * (1 + (number - 1) % 3)), textcoords="offset points",
                          color=plots._PROBLEM_COLOR, fontsize=8)
            restored = record.get("restored_step")
            if restored is not None and restored >= 0:
                axis.axvspan(restored, step, color=plots._PROBLEM_COLOR, alpha=0.08, linewidth=0)
        axis.set_xlabel("training step")
        if recoveries:
            axis.legend(loc="upper right")
        svg = plots._render(figure)
    description = (f"Line chart of the batch loss over {int(steps[-1]) + 1 if steps.size else 0} training "
                   f"steps with {len(recoveries)} recover{'y' if len(recoveries) == 1 else 'ies'} marked.")
    return plots.Chart(svg, notes, description)


def recovery_context(training: dict | None, format_number) -> dict | None:
    """Plain values for the template's recovery section, or None without monitor data."""
    if training is None:
        return None
    rows = []
    for number, record in enumerate(training.get("recoveries") or [], start=1):
        skipped = record.get("skipped_steps") or [None, None]
        restored = record.get("restored_step")
        clip = record.get("global_clipnorm")
        rows.append({
            "number": number,
            "step": record.get("step"),
            "epoch": record.get("epoch"),
            "trigger": str(record.get("trigger", "")).replace("_", " "),
            "rules": ", ".join(record.get("rules") or []) or "—",
            "problem": record.get("problem", ""),
            "loss": format_number(record.get("loss")),
            "restored": "start of training" if restored is not None and restored < 0 else f"after step {restored}",
            "skipped": f"{skipped[0]}–{skipped[1]}",
            "clipnorm": format_number(clip) if clip is not None and not _nan(clip) else "—",
            "lr_scale": format_number(record.get("learning_rate_scale")),
            "changes": record.get("changes") or [],
        })
    return {
        "chart": recovery_chart(training),
        "rows": rows,
        "snapshot_bytes": format_number(int(training.get("snapshot_bytes") or 0)),
        "stop_reason": training.get("stop_reason"),
    }


def _nan(value) -> bool:
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return False
