"""Reading the model: leaves, what follows what, which layers are outputs."""

from __future__ import annotations

from ..probe import _is_graph_model

_KERNEL_BASES = frozenset({"Dense", "BaseConv", "BaseConvTranspose", "BaseDepthwiseConv",
                           "BaseSeparableConv"})
_ACTIVATION_LAYERS = frozenset({"Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax"})
# Layers that neither hold weights nor mix inputs: the layer before one of them
# at the end of a model is still the output layer.
_PASSTHROUGH_LAYERS = _ACTIVATION_LAYERS | frozenset({
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianDropout",
    "GaussianNoise", "AlphaDropout", "Flatten", "Reshape", "Permute", "RepeatVector",
    "ActivityRegularization", "Identity"})


class _Structure:
    """The leaf layers of a Sequential/Functional model, nested models flattened.

    Attributes:
        leaves: ``{path: layer}`` in forward order, input layers left out.
        successors: ``{path: [paths]}``, the leaves that read each leaf's output.
        outputs: Paths of the output layers, including the layer before a
            trailing weightless layer (``Dense`` before ``Activation("softmax")``).
        names: Every layer and model name in the model, nested ones too.
        sequence: Whether the model has a recurrent layer.
    """

    def __init__(self, model, keras):
        self.keras = keras
        self.leaves: dict = {}
        self.successors: dict = {}
        self.names: set = _all_names(model, keras)
        self._ends: dict = {}
        _, tails = self._link(model, "")
        self.outputs = self._with_trailing(tails)
        self.sequence = any(_is_recurrent(layer, keras) for layer in self.leaves.values())

    def _link(self, model, prefix):
        """Record edges inside ``model``; return its ``(heads, tails)`` leaf paths."""
        keras = self.keras
        if isinstance(model, keras.Sequential):
            heads, previous = [], None
            for layer in model.layers:
                first, last = self._ends_of(layer, prefix)
                if previous is None:
                    heads = first
                else:
                    self._connect(previous, first)
                previous = last
            return heads, previous or []
        heads = []
        for depth in sorted(model._nodes_by_depth, reverse=True):
            for node in model._nodes_by_depth[depth]:
                if node.is_input or node.operation is None:
                    continue
                first, _ = self._ends_of(node.operation, prefix)
                for tensor in node.input_tensors:
                    producer = tensor._keras_history.operation
                    if isinstance(producer, keras.layers.InputLayer):
                        heads.extend(path for path in first if path not in heads)
                    else:
                        self._connect(self._ends_of(producer, prefix)[1], first)
        tails = []
        for tensor in model.outputs:
            producer = tensor._keras_history.operation
            if not isinstance(producer, keras.layers.InputLayer):
                tails.extend(self._ends_of(producer, prefix)[1])
        return heads, tails

    def _ends_of(self, layer, prefix):
        key = (prefix, id(layer))
        if key not in self._ends:
            self.names.add(layer.name)
            path = prefix + layer.name
            if _is_graph_model(layer, self.keras):
                self._ends[key] = self._link(layer, path + "/")
            else:
                self.leaves[path] = layer
                self.successors[path] = []
                self._ends[key] = ([path], [path])
        return self._ends[key]

    def _connect(self, sources, targets):
        for source in sources:
            for target in targets:
                if target not in self.successors[source]:
                    self.successors[source].append(target)

    def _with_trailing(self, tails):
        predecessors: dict = {}
        for source, targets in self.successors.items():
            for target in targets:
                predecessors.setdefault(target, []).append(source)
        outputs, pending = set(), list(tails)
        while pending:
            path = pending.pop()
            if path in outputs:
                continue
            outputs.add(path)
            if type(self.leaves[path]).__name__ in _PASSTHROUGH_LAYERS:
                pending.extend(predecessors.get(path, []))
        return outputs

    def followed_by_normalization(self, path) -> bool:
        return any(type(self.leaves[after]).__name__.endswith("Normalization")
                   for after in self.successors[path])


def _all_names(model, keras) -> set:
    names = {model.name}
    # A Sequential model's InputLayer is only in its private layer list.
    for layer in list(getattr(model, "_layers", [])) + list(model.layers):
        names.add(layer.name)
        if _is_graph_model(layer, keras):
            names |= _all_names(layer, keras)
    return names


def _is_recurrent(layer, keras) -> bool:
    return isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional))


def _is_kernel_layer(layer) -> bool:
    """Dense and convolution layers, the ones split around a normalization."""
    return any(cls.__name__ in _KERNEL_BASES for cls in type(layer).__mro__)
