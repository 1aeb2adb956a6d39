"""Trial records: what each trial measured, kept in the tuner directory."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from .run import RunResult

RECORD_FILE = "gradadvisor_trial.json"
RECORD_SCHEMA = "gradadvisor.trial/1"


@dataclasses.dataclass
class TrialRecord:
    """One finished trial, as the process that ran it wrote it into its folder.

    Attributes:
        trial: Keras Tuner's trial id.
        values: The hyperparameter values tried.
        score: The objective (lower is better; :data:`DIVERGED_SCORE` for a
            candidate that diverged).
        status: ``healthy``, ``warning``, ``error`` or ``diverged``.
        val_loss, val_metric: Held-out loss and accuracy (None if diverged or
            not a classifier).
        findings: The ids of the rules that fired on the candidate.
        seconds: How long the trial took.
        worker: The Keras Tuner id of the process that ran it (``tuner0`` in a
            local search).
        start_loss: Held-out loss before training (None if unmeasured).
        learns: Whether the held-out loss fell clearly below its start and
            the chance level (see :attr:`RunResult.learns`).
        stopped: Why the trial was cut off early, or None.
    """

    trial: str
    values: dict
    score: float
    status: str
    val_loss: float | None
    val_metric: float | None
    findings: list
    seconds: float
    worker: str
    start_loss: float | None = None
    learns: bool = False
    stopped: str | None = None

    @classmethod
    def from_run(cls, trial_id: str, values: dict, result: RunResult, worker: str) -> "TrialRecord":
        return cls(str(trial_id), dict(values), float(result.score), result.status, result.val_loss,
                   result.val_metric, sorted({f.rule for f in result.findings}), float(result.seconds), worker,
                   result.start_loss, bool(result.learns), result.stopped)

    def to_dict(self) -> dict:
        from ..jsonsafe import jsonable

        return jsonable(dict(dataclasses.asdict(self), schema=RECORD_SCHEMA))

    @classmethod
    def from_dict(cls, data: dict) -> "TrialRecord":
        from ..jsonsafe import restore_floats

        data = restore_floats(dict(data))
        data.pop("schema", None)
        return cls(**{field.name: data[field.name] for field in dataclasses.fields(cls) if field.name in data})


def write_record(trial_dir, record: TrialRecord) -> None:
    """Write ``record`` into its trial's folder, atomically (the chief may be reading)."""
    from ..files import write_text_atomic

    write_text_atomic(Path(trial_dir) / RECORD_FILE, json.dumps(record.to_dict(), indent=1))


def read_records(project_dir) -> list:
    """Every :class:`TrialRecord` under a Keras Tuner project folder, in trial order."""
    records = []
    for path in Path(project_dir).glob(f"trial_*/{RECORD_FILE}"):
        records.append(TrialRecord.from_dict(json.loads(path.read_text(encoding="utf-8"))))
    return sorted(records, key=lambda r: (len(r.trial), r.trial))
