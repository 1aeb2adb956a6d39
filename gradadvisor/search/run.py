"""One training-and-measuring run, shared by trials and the confirmation, and its score."""

from __future__ import annotations

import dataclasses
import math
import time

from .._tf import import_keras
from ..loading import Data
from .data import held_out

#: Score of a candidate whose loss or gradients became non-finite.
DIVERGED_SCORE = 1.0e6
_STATUS_PENALTY = {"healthy": 0.0, "warning": 10.0, "error": 100.0}


@dataclasses.dataclass
class RunResult:
    """How one model trained: probe measurements, health and held-out numbers."""

    probe: object
    findings: list
    status: str
    val_loss: float | None
    val_metric: float | None
    seconds: float

    @property
    def score(self) -> float:
        if self.status == "diverged" or self.val_loss is None or not math.isfinite(self.val_loss):
            return DIVERGED_SCORE
        return _STATUS_PENALTY[self.status] + self.val_loss

    def summary(self) -> dict:
        return {"loss": list(self.probe.loss), "val_loss": self.val_loss, "val_metric": self.val_metric,
                "status": self.status, "findings": sorted({f.rule for f in self.findings})}


def train_and_measure(model, train: Data, val: Data, *, steps: int, batch_size: int, seed: int,
                      rules: dict, in_place: bool, loss, kind: str, strategy=None) -> RunResult:
    """Train ``model`` (or a copy) for ``steps`` probe steps, then evaluate it.

    With a ``tf.distribute`` strategy, an in-place ``model`` must have been
    built in its scope; a copy is made in it.
    """
    from ..analysis.diagnosis import Diagnosis
    from ..analysis.engine import evaluate
    from ..probe import _working_copy, make_loss_function, run_probe

    tf, keras = import_keras()
    started = time.perf_counter()
    with _working_copy(model, keras, in_place, strategy) as (work, _):
        probe = run_probe(work, train, steps=steps, batch_size=min(batch_size, train.num_samples),
                          seed=seed, in_place=True, strategy=strategy)
        findings = evaluate(probe, rules)
        status = Diagnosis(probe=probe, findings=findings).status
        if probe.nonfinite:
            status, val_loss, metric = "diverged", None, None
        else:
            val_loss, metric = held_out(work, make_loss_function(loss, keras), val, kind)
            if not math.isfinite(val_loss):
                status, val_loss = "diverged", None
    return RunResult(probe, findings, status, val_loss, metric, time.perf_counter() - started)
