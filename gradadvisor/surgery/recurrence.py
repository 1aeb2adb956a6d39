"""Planning the recurrence: SimpleRNN layers become IRNNs (ReLU, identity recurrent matrix)."""

from __future__ import annotations

from .initializers import _initializer_class
from .plan import _LeafPlan, _entry
from .setups import Setup


def _plan_recurrence(plan: _LeafPlan, setup: Setup, keras) -> None:
    if setup.recurrence_kind != "irnn" or not isinstance(plan.layer, keras.layers.SimpleRNN):
        return
    wanted = {"activation": "relu", "recurrent_initializer": "identity"}
    current = {"activation": plan.config.get("activation"),
               "recurrent_initializer": _initializer_class(plan.config.get("recurrent_initializer"), keras)}
    if current["activation"] != "relu":
        plan.initializer_changes.append(_entry(plan.path, "activation", current["activation"], "relu"))
    if current["recurrent_initializer"] != "Identity":
        plan.initializer_changes.append(
            _entry(plan.path, "recurrent_initializer", current["recurrent_initializer"], "identity"))
    plan.edits.update(wanted)
    plan.reinitialise = True
