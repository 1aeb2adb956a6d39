"""Rewriting a model: check it, plan each leaf layer, build the new model, list what changes."""

from __future__ import annotations

from .._tf import import_keras
from ..errors import SurgeryError, UsageError
from ..probe import _is_graph_model, leaf_layers
from .activations import _plan_activation
from .build import _Builder
from .initializers import _plan_initializer
from .normalization import _plan_normalization
from .optimizer import _CLIP_KEYS, _compile_arguments, _optimizer_configs, _tidy, optimizer_for
from .plan import _LeafPlan, _Names, _entry
from .recurrence import _plan_recurrence
from .setups import Setup, _as_setup
from .structure import _Structure

#: The ``layer`` of optimizer-level entries in :func:`describe_changes`.
OPTIMIZER = "(optimizer)"


def _plan(model, setup: "Setup", scope, keras) -> tuple:
    """``(structure, {path: _LeafPlan})`` for rewriting ``model`` with ``setup``."""
    structure = _Structure(model, keras)
    names = _Names(structure.names)
    plans = {path: _LeafPlan(path, layer, layer.get_config())
             for path, layer in structure.leaves.items()}
    chosen = set(structure.leaves) if scope is None else scope
    for path, plan in plans.items():
        if path in chosen:
            _plan_initializer(plan, setup, keras)
            _plan_recurrence(plan, setup, keras)
            if path not in structure.outputs:
                _plan_activation(plan, setup, names, keras)
    for path, plan in plans.items():
        if path in chosen and path not in structure.outputs:
            _plan_normalization(plan, setup, structure, plans, names, keras)
    return structure, plans


def _check_model(model, keras, function: str) -> None:
    if not isinstance(model, keras.Model):
        raise UsageError(
            f"The 'model' parameter of {function} must be a keras.Model. "
            f"Got {type(model).__name__} instead.")
    if not _is_graph_model(model, keras):
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


def apply_setup(model, setup: Setup, *, scope=None):
    """Rewrite ``model`` into a new, built and compiled model with ``setup``.

    The input model is never modified.  Layers keep their names and, unless
    re-initialised, their weights; inserted layers get names unused anywhere
    in the model (Keras' automatic names collide after ``load_model``).

    What changes, for the layers in ``scope``:

    * initializer: kernels of Dense, Conv* and recurrent layers (recurrent
      kernels become orthogonal, biases zeros); those layers start from fresh
      weights.  SELU without an initializer uses lecun_normal.
    * activation: saturating (sigmoid, tanh, ...) and ReLU-family activations
      of hidden layers and ``Activation`` layers.  Output layers, recurrent
      layers and wrapped layers (``TimeDistributed``) keep theirs.  LeakyReLU
      and PReLU are inserted as layers after a linear version of the layer.
    * normalization: hidden Dense/Conv layers become linear layer,
      BatchNormalization and activation (``batchnorm_before``) or linear
      layer, activation and BatchNormalization (``batchnorm_after``), unless a
      normalization already follows; ``layernorm`` puts LayerNormalization
      after sequence-returning recurrent layers and hidden Dense layers of
      models with a recurrent layer, and does nothing in other models.

    The new model is compiled with the input model's loss and metrics (none if
    it was not compiled) and :func:`optimizer_for`'s optimizer, so clipping and
    learning rate travel with it.

    Args:
        model: A Sequential or Functional ``keras.Model``; nested models, branches
            and shared layers are fine.
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
    _, keras = import_keras()
    _check_model(model, keras, "apply_setup")
    setup = _as_setup(setup)
    scope = _check_scope(model, scope)
    _, plans = _plan(model, setup, scope, keras)
    builder = _Builder(plans, keras)
    new = builder.build(model)
    builder.copy_weights()
    arguments = _compile_arguments(model, keras) or {}
    if setup.output_kind:
        from .output import rewrite_output

        new, arguments["loss"] = rewrite_output(new, setup.output_kind, arguments.get("loss"))
    new.compile(optimizer=optimizer_for(model, setup), **arguments)
    return new


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
    _, plans = _plan(model, setup, scope, keras)
    entries = [entry for plan in plans.values() for entry in plan.changes()]
    _, current, new = _optimizer_configs(model, setup, keras)
    for key in ("learning_rate",) + _CLIP_KEYS:
        before, after = current.get(key), new.get(key)
        if before != after:
            if key == "learning_rate" and isinstance(before, (int, float)):
                before = _tidy(before)
            entries.append(_entry(OPTIMIZER, key, before, after))
    return entries
