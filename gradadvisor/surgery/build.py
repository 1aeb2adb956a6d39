"""Building: the rewritten Sequential or Functional model from the plans, then its weights."""

from __future__ import annotations

import warnings

from .. import _compat
from ..errors import SurgeryError
from ..probe import is_graph_model
from .plan import _LeafPlan, _edited_config
from .structure import _run_graph


class _PlanFailed(Exception):
    """A planned change made its layer (or the layers inserted after it) fail to build.

    Raised inside the builder only; :func:`gradadvisor.surgery.rewrite` catches
    it, keeps that layer as it is and builds again.
    """

    def __init__(self, plan: _LeafPlan, error: Exception):
        super().__init__(f"{plan.path}: {error}")
        self.plan = plan
        self.error = error


class _Builder:
    """Builds the rewritten model from the plans, remembering which new layer
    stands for which old one so weights can be copied afterwards.

    Operation nodes of a Functional graph (``x + y``, ``keras.ops.*``) are
    reused as they are: they hold no state, so the new graph may call them too.
    """

    def __init__(self, plans: dict, keras):
        self.plans = plans
        self.keras = keras
        self.pairs: list = []

    def build(self, model, prefix: str = ""):
        if isinstance(model, self.keras.Sequential):
            return self._sequential(model, prefix)
        return self._functional(model, prefix)

    def _sequential(self, model, prefix):
        keras = self.keras
        new_layers, plan_of = [], {}
        layers = _compat.sequential_layers(model)
        first = layers[0] if layers else None
        if isinstance(first, keras.layers.InputLayer):
            new_layers.append(keras.Input(batch_shape=first.batch_shape, dtype=first.output.dtype,
                                          name=first.name))
        for layer in model.layers:
            if is_graph_model(layer, keras):
                new_layers.append(self.build(layer, prefix + layer.name + "/"))
            else:
                plan = self.plans[prefix + layer.name]
                new_layers.append(self._leaf(plan))
                plan_of[id(new_layers[-1])] = plan
                for inserted in plan.inserted_layers(keras):
                    new_layers.append(inserted)
                    plan_of[id(inserted)] = plan
        try:
            return keras.Sequential(new_layers, name=model.name, trainable=model.trainable)
        except Exception as error:
            self._blame_in_sequence(new_layers, plan_of, error)
            raise SurgeryError(
                f"The Sequential model '{model.name}' cannot be rebuilt ({error}).") from error

    def _blame_in_sequence(self, new_layers, plan_of, error):
        """Replay the new layers one by one to find which planned change fails;
        raise :class:`_PlanFailed` for it (return if none of them does)."""
        keras = self.keras
        if not new_layers or not isinstance(new_layers[0], keras.KerasTensor):
            return
        tensor = new_layers[0]
        for layer in new_layers[1:]:
            try:
                tensor = layer(tensor)
            except Exception as layer_error:
                plan = plan_of.get(id(layer))
                if plan is not None and plan.changed:
                    raise _PlanFailed(plan, layer_error) from error
                return

    def _functional(self, model, prefix):
        keras = self.keras
        plan_of_new: dict = {}
        cloned: dict = {}

        def clone(operation):
            if not isinstance(operation, keras.layers.Layer):
                return operation
            if id(operation) not in cloned:
                if is_graph_model(operation, keras):
                    cloned[id(operation)] = self.build(operation, prefix + operation.name + "/")
                else:
                    plan = self.plans[prefix + operation.name]
                    cloned[id(operation)] = self._leaf(plan)
                    plan_of_new[id(cloned[id(operation)])] = plan
            return cloned[id(operation)]

        def call(operation, *args, **kwargs):
            plan = plan_of_new.get(id(operation))
            try:
                output = operation(*args, **kwargs)
                if plan is not None:
                    for inserted in plan.inserted_layers(keras):
                        output = inserted(output)
            except _PlanFailed:
                raise
            except Exception as error:
                if plan is not None and plan.changed:
                    raise _PlanFailed(plan, error) from error
                raise SurgeryError(
                    f"The node '{prefix}{operation.name}' of the model '{model.name}' cannot be called "
                    f"again while rebuilding the model ({type(error).__name__}: {error}).") from error
            return output

        inputs = keras.tree.map_structure(
            lambda tensor: keras.Input(batch_shape=tensor.shape, dtype=tensor.dtype,
                                       sparse=getattr(tensor, "sparse", False),
                                       name=_compat.producer(tensor).name),
            model.input)
        outputs = _run_graph(model, inputs, operation_fn=clone, call_fn=call)
        new = keras.Model(inputs=inputs, outputs=outputs, name=model.name)
        if not model.trainable:
            new.trainable = False
        return new

    def _leaf(self, plan: _LeafPlan):
        try:
            layer = _new_layer(plan, self.keras)
        except Exception as error:
            if plan.changed:
                raise _PlanFailed(plan, error) from error
            raise _rebuild_error(plan, error) from error
        self.pairs.append((plan, layer))
        return layer

    def copy_weights(self) -> None:
        for plan, new in self.pairs:
            if plan.reinitialise or plan.replacement is not None:
                continue
            old = plan.layer
            if [tuple(v.shape) for v in old.weights] == [tuple(v.shape) for v in new.weights]:
                new.set_weights(old.get_weights())
            else:
                warnings.warn(
                    f"The layer '{plan.path}' has weights of other shapes after rewriting, so it "
                    "starts from fresh weights.", stacklevel=3)


def _new_layer(plan: _LeafPlan, keras):
    """The leaf layer the plan describes, unbuilt."""
    if plan.replacement is not None:
        return plan.replacement.build(keras)
    config = _edited_config(plan.config, plan.edits)
    try:
        return type(plan.layer).from_config(config)
    except Exception:
        live = _with_live_functions(config, plan.layer)
        if live is None:
            raise
        return type(plan.layer).from_config(live)


_FUNCTION_KEYS = ("activation", "recurrent_activation")


def _with_live_functions(config: dict, layer):
    """``config`` with serialized custom functions (an unregistered activation, which
    ``from_config`` cannot find) replaced by the layer's own function objects, or
    None if it holds none."""
    replaced = dict(config)
    found = False
    for key in _FUNCTION_KEYS:
        live = getattr(layer, key, None)
        if isinstance(config.get(key), dict) and callable(live):
            replaced[key] = live
            found = True
    inner = getattr(layer, "layer", None)
    if isinstance(config.get("layer"), dict) and isinstance(config["layer"].get("config"), dict) and inner:
        nested = _with_live_functions(config["layer"]["config"], inner)
        if nested is not None:
            # A wrapper deserializes its inner layer itself: hand it the rebuilt layer.
            try:
                replaced["layer"] = type(inner).from_config(nested)
                found = True
            except Exception:  # keep the serialized inner layer; the caller reports the error
                pass
    return replaced if found else None


def _rebuild_error(plan: _LeafPlan, error: Exception) -> SurgeryError:
    return SurgeryError(
        f"The layer '{plan.path}' ({type(plan.layer).__name__}) cannot be rebuilt from its config "
        f"({error}). Give custom layers a complete get_config() and register them with "
        "keras.saving.register_keras_serializable().")
