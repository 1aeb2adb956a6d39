"""Building: the rewritten Sequential or Functional model from the plans, then its weights."""

from __future__ import annotations

import warnings

from ..errors import SurgeryError
from ..probe import _is_graph_model
from .plan import _LeafPlan, _edited_config


class _Builder:
    """Builds the rewritten model from the plans, remembering which new layer
    stands for which old one so weights can be copied afterwards."""

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
        new_layers = []
        first = model._layers[0] if model._layers else None
        if isinstance(first, keras.layers.InputLayer):
            new_layers.append(keras.Input(batch_shape=first.batch_shape, dtype=first.output.dtype,
                                          name=first.name))
        for layer in model.layers:
            if _is_graph_model(layer, keras):
                new_layers.append(self.build(layer, prefix + layer.name + "/"))
            else:
                plan = self.plans[prefix + layer.name]
                new_layers.append(self._leaf(plan))
                new_layers.extend(plan.inserted_layers(keras))
        return keras.Sequential(new_layers, name=model.name, trainable=model.trainable)

    def _functional(self, model, prefix):
        keras = self.keras
        plan_of_new: dict = {}
        cloned: dict = {}

        def clone(layer):
            if id(layer) not in cloned:
                if _is_graph_model(layer, keras):
                    cloned[id(layer)] = self.build(layer, prefix + layer.name + "/")
                else:
                    plan = self.plans[prefix + layer.name]
                    cloned[id(layer)] = self._leaf(plan)
                    plan_of_new[id(cloned[id(layer)])] = plan
            return cloned[id(layer)]

        def call(layer, *args, **kwargs):
            output = layer(*args, **kwargs)
            plan = plan_of_new.get(id(layer))
            if plan is not None:
                for inserted in plan.inserted_layers(keras):
                    output = inserted(output)
            return output

        inputs = keras.tree.map_structure(
            lambda tensor: keras.Input(batch_shape=tensor.shape, dtype=tensor.dtype,
                                       name=tensor._keras_history.operation.name),
            model.input)
        outputs = model._run_through_graph(inputs, operation_fn=clone, call_fn=call)
        new = keras.Model(inputs=inputs, outputs=outputs, name=model.name)
        if not model.trainable:
            new.trainable = False
        return new

    def _leaf(self, plan: _LeafPlan):
        if plan.replacement is not None:
            layer = plan.replacement.build(self.keras)
        else:
            config = _edited_config(plan.config, plan.edits)
            try:
                layer = type(plan.layer).from_config(config)
            except Exception as error:
                raise SurgeryError(
                    f"The layer '{plan.path}' ({type(plan.layer).__name__}) cannot be rebuilt from "
                    f"its config ({error}). Give custom layers a complete get_config() and register "
                    "them with keras.saving.register_keras_serializable().") from error
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
