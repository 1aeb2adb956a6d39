"""Rewriting a model: check it, plan each leaf layer, build the new model, list what changes."""

from __future__ import annotations

import dataclasses
from typing import Any

from .._tf import import_keras
from ..errors import SurgeryError, UsageError
from ..probe import is_graph_model, leaf_layers
from .activations import _plan_activation
from .build import _Builder, _new_layer, _PlanFailed
from .initializers import _plan_initializer
from .normalization import _plan_normalization
from .optimizer import _compile_arguments, _optimizer_changes, optimizer_for
from .plan import _LeafPlan, _Names, _skip
from .recurrence import _plan_recurrence
from .setups import Setup, _as_setup
from .structure import _Structure

#: The ``layer`` of optimizer-level entries in :func:`describe_changes`.
OPTIMIZER = "(optimizer)"


def _plan(model, setup: "Setup", scope, keras) -> tuple:
    """``(structure, {path: _LeafPlan}, skipped)`` for rewriting ``model`` with ``setup``.

    ``skipped`` lists the layers the setup would change but that are kept as
    they are, each with the reason (see :class:`Rewrite`).
    """
    structure = _Structure(model, keras)
    names = _Names(structure.names)
    plans = {path: _LeafPlan(path, layer, _config_of(path, layer))
             for path, layer in structure.leaves.items()}
    chosen = set(structure.leaves) if scope is None else scope
    skipped: list = []
    frozen = {path for path in chosen if not plans[path].layer.trainable}
    chosen -= frozen
    for path, plan in plans.items():
        if path in chosen:
            _plan_initializer(plan, setup, keras)
            _plan_recurrence(plan, setup, keras)
            if path not in structure.outputs:
                _plan_activation(plan, setup, names, keras, structure, skipped)
    for path, plan in plans.items():
        if path in chosen and path not in structure.outputs:
            _plan_normalization(plan, setup, structure, plans, names, keras, skipped)
    for path in sorted(frozen, key=list(plans).index):
        # Only the frozen layers the setup would change are worth naming.
        would = _LeafPlan(path, plans[path].layer, plans[path].config)
        _plan_initializer(would, setup, keras)
        if path not in structure.outputs:
            _plan_activation(would, setup, _Names(names.taken), keras, structure, None)
        if would.changed:
            skipped.append(_skip(path, "it is frozen (trainable=False), so it keeps its settings and weights"))
    for path, plan in plans.items():
        if plan.changed and plan.replacement is None:
            try:
                _new_layer(plan, keras)
            except Exception as error:  # the layer class refuses the new settings
                _keep(plan, skipped, error)
    return structure, plans, _in_order(skipped, plans)


def _config_of(path, layer) -> dict:
    try:
        return layer.get_config()
    except Exception as error:  # NotImplementedError for custom layers without get_config()
        raise SurgeryError(
            f"The layer '{path}' ({type(layer).__name__}) cannot be rebuilt: its get_config() raised "
            f"{type(error).__name__} ({error}). Give custom layers a complete get_config() and register "
            "them with keras.saving.register_keras_serializable().") from error


def _keep(plan: _LeafPlan, skipped: list, error: Exception) -> None:
    """Drop a plan's changes after they failed, and say why."""
    what = ", ".join(sorted({entry["change"] for entry in plan.changes()})) or "its changes"
    message = str(error)
    # Keras wraps a layer's own error after a dump of its whole config.
    marker = "Exception encountered:"
    if marker in message:
        message = message.rsplit(marker, 1)[1]
    message = " ".join(message.split()) or type(error).__name__
    if len(message) > 160:
        message = message[:157] + "..."
    plan.keep()
    skipped.append(_skip(plan.path, f"{type(plan.layer).__name__} could not be rebuilt with the new "
                         f"{what} ({message})"))


def _in_order(skipped: list, plans: dict) -> list:
    order = {path: index for index, path in enumerate(plans)}
    unique = {}
    for entry in skipped:
        unique.setdefault((entry["layer"], entry["reason"]), entry)
    return sorted(unique.values(), key=lambda entry: order.get(entry["layer"], len(order)))


def _check_model(model, keras, function: str) -> None:
    if not isinstance(model, keras.Model):
        raise UsageError(
            f"The 'model' parameter of {function} must be a keras.Model. "
            f"Got {type(model).__name__} instead.")
    if not is_graph_model(model, keras):
        raise SurgeryError(
            f"The model '{model.name}' is a subclassed model ({type(model).__name__}): gradadvisor "
            "can diagnose it but can only rewrite a Sequential or Functional model, so rebuild it "
            "with keras.Sequential or the functional API, or apply the setup in your own code as "
            "gradadvisor.surgery.snippet() shows.")


def _check_scope(model, scope) -> set | None:
    if scope is None:
        return None
    if isinstance(scope, str):
        scope = [scope]
    scope = set(scope)
    known = [path for path, _ in leaf_layers(model)]
    unknown = sorted(path for path in scope if path not in known)
    if unknown:
        raise UsageError(
            f"The 'scope' parameter names a layer that is not in the model: '{unknown[0]}'. "
            f"Use layer paths such as {', '.join(repr(path) for path in known[:3])} "
            "(nested model names joined with '/').")
    return scope


@dataclasses.dataclass
class Rewrite:
    """What :func:`rewrite` made: the new model, what changed, and what was kept.

    Attributes:
        model: The new, built and compiled ``keras.Model``.
        changes: The changes made, as :func:`describe_changes` lists them.
        skipped: Layers the setup would have changed but that were kept as
            they are, in forward order, each ``{"layer": path, "reason": text}``:
            gates (an activation whose output multiplies another tensor, as in
            squeeze-and-excitation blocks), custom activation functions,
            frozen layers, wrappers other than ``TimeDistributed``, and layers
            whose class refused the new settings or failed to build with them.
    """

    model: Any
    changes: list
    skipped: list

    def to_dict(self) -> dict:
        """``changes`` and ``skipped`` as a JSON-friendly dict (the model left out)."""
        return {"changes": list(self.changes), "skipped": list(self.skipped)}


def rewrite(model, setup: Setup, *, scope=None) -> Rewrite:
    """Rewrite ``model`` with ``setup``, and say what changed and what was kept.

    The same as :func:`apply_setup`, which returns only the model, but also
    lists the changes and the layers kept as they are, with the reason.  A
    layer whose new settings fail to build (a custom layer refusing an
    initializer, an inserted layer that does not fit) is kept as it is and
    named in ``skipped``; the rest of the model is still rewritten.

    Args:
        model: A Sequential or Functional ``keras.Model``: operation nodes
            (``x + y``, ``keras.ops.*``, slicing), shared layers, nested
            models, ``TimeDistributed`` and ``Bidirectional`` wrappers and
            several inputs and outputs are all fine.
        setup: A :class:`Setup` (or its dict).
        scope: As for :func:`apply_setup`.

    Returns:
        A :class:`Rewrite`.

    Raises:
        SurgeryError: a subclassed model, or a layer that cannot be rebuilt
            even unchanged (a custom layer without a complete ``get_config()``).
        UsageError: a bad ``setup`` or an unknown path in ``scope``.

    Example:
        >>> result = rewrite(model, Setup(activation="relu"))
        >>> result.model.fit(x, y)
        >>> for entry in result.skipped:
        ...     print(entry["layer"], entry["reason"])
    """
    _, keras = import_keras()
    _check_model(model, keras, "rewrite")
    setup = _as_setup(setup)
    scope = _check_scope(model, scope)
    _, plans, skipped = _plan(model, setup, scope, keras)
    for _ in range(len(plans) + 1):
        builder = _Builder(plans, keras)
        try:
            new = builder.build(model)
            break
        except _PlanFailed as failure:
            # Each failure drops one plan's changes, so this ends.
            _keep(failure.plan, skipped, failure.error)
            for plan in plans.values():
                plan.instances = None
    builder.copy_weights()
    arguments = _compile_arguments(model, keras) or {}
    if setup.output_kind:
        from .output import rewrite_output

        new, arguments["loss"] = rewrite_output(new, setup.output_kind, arguments.get("loss"))
    new.compile(optimizer=optimizer_for(model, setup), **arguments)
    changes = [entry for plan in plans.values() for entry in plan.changes()]
    return Rewrite(new, changes + _optimizer_changes(model, setup, keras, OPTIMIZER), _in_order(skipped, plans))


def apply_setup(model, setup: Setup, *, scope=None):
    """Rewrite ``model`` into a new, built and compiled model with ``setup``.

    The input model is never modified.  Layers keep their names and, unless
    re-initialised, their weights; inserted layers get names unused anywhere
    in the model (Keras' automatic names collide after ``load_model``).
    :func:`rewrite` does the same and also lists the layers kept as they are.

    What changes, for the layers in ``scope``:

    * initializer: kernels of Dense, Conv*, attention and recurrent layers
      (wrapped in ``TimeDistributed``/``Bidirectional`` too; recurrent kernels
      become orthogonal, biases zeros); those layers start from fresh weights.
      SELU without an initializer uses lecun_normal.
    * activation: saturating (sigmoid, tanh, ...) and ReLU-family (ReLU,
      capped ReLU such as ``ReLU(6.)``) activations of hidden layers, of
      ``Activation``/``ReLU`` layers and of layers inside ``TimeDistributed``.
      Output layers, recurrent layers (their gates), gates (an activation whose
      output multiplies another tensor) and ``Softmax``/``LeakyReLU``/``PReLU``/
      ``ELU`` layers keep theirs.  LeakyReLU and PReLU are inserted as layers
      after a linear version of the layer.
    * normalization: hidden Dense/Conv layers become linear layer,
      BatchNormalization and activation (``batchnorm_before``) or linear
      layer, activation and BatchNormalization (``batchnorm_after``), unless a
      normalization already follows; ``layernorm`` puts LayerNormalization
      after sequence-returning recurrent layers and hidden Dense layers of
      models with a recurrent layer, and does nothing in other models.

    Frozen layers (``trainable=False``) are kept as they are.  Operation nodes
    (``x + y``, ``keras.ops.*``) are carried over unchanged.

    The new model is compiled with the input model's loss and metrics (none if
    it was not compiled) and :func:`optimizer_for`'s optimizer, so clipping and
    learning rate travel with it.

    Args:
        model: A Sequential or Functional ``keras.Model``; nested models, branches,
            operation nodes and shared layers are fine.
        setup: A :class:`Setup` (or its dict).
        scope: Optional layer paths (as :func:`gradadvisor.probe.leaf_layers`
            gives them) to restrict the layer changes to; the optimizer changes
            apply regardless.

    Returns:
        The new ``keras.Model``.

    Raises:
        SurgeryError: a subclassed model, or a layer that cannot be rebuilt.
        UsageError: a bad ``setup`` or an unknown path in ``scope``.

    Example:
        >>> fixed = apply_setup(model, Setup(activation="relu", initializer="he_normal"))
        >>> fixed.fit(x, y)
    """
    return rewrite(model, setup, scope=scope).model


def kept_layers(model, setup: Setup, scope=None) -> list:
    """The layers ``setup`` would change but that stay as they are, without building.

    The same list as :attr:`Rewrite.skipped`, less any layer found only while
    building (an inserted layer that does not fit its input).

    Args:
        model: A Sequential or Functional ``keras.Model``.
        setup: A :class:`Setup` (or its dict).
        scope: As for :func:`apply_setup`.

    Returns:
        A list of ``{"layer": path, "reason": text}`` in forward order.
    """
    _, keras = import_keras()
    _check_model(model, keras, "kept_layers")
    setup = _as_setup(setup)
    scope = _check_scope(model, scope)
    return _plan(model, setup, scope, keras)[2]


def describe_changes(model, setup: Setup, scope=None) -> list:
    """List what :func:`apply_setup` would change, without building anything.

    Layer entries come in forward order, one per changed setting or inserted
    layer, inserted layers in the order they follow the layer.  Optimizer
    entries (``layer`` is ``"(optimizer)"``) compare the model's optimizer, or
    ``Adam(1e-3)`` if it has none, with :func:`optimizer_for`'s.

    Args:
        model: A Sequential or Functional ``keras.Model``.
        setup: A :class:`Setup` (or its dict).
        scope: As for :func:`apply_setup`.

    Returns:
        A list of dicts ``{"layer", "change", "from", "to"}``, e.g.
        ``{"layer": "encoder/dense_1", "change": "kernel_initializer",
        "from": "RandomNormal", "to": "he_normal"}``; ``change`` is an
        initializer key, ``"activation"``, ``"insert_after"`` (``to`` names the
        new layer), ``"learning_rate"`` or a clipping argument.

    Raises:
        SurgeryError: a subclassed model.
        UsageError: a bad ``setup`` or an unknown path in ``scope``.
    """
    _, keras = import_keras()
    _check_model(model, keras, "describe_changes")
    setup = _as_setup(setup)
    scope = _check_scope(model, scope)
    _, plans, _ = _plan(model, setup, scope, keras)
    entries = [entry for plan in plans.values() for entry in plan.changes()]
    entries.extend(_optimizer_changes(model, setup, keras, OPTIMIZER))
    return entries
