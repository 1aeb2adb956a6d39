"""Reading the model: leaves, what follows what, which layers are outputs.

This module and :func:`_run_graph` hold the surgery's only private Keras access:
``Functional._nodes_by_depth`` (to see which node feeds which, operation nodes
included) and ``Functional._run_through_graph`` (to rebuild a graph node by
node).  Keras has no public API for either; ``keras.models.clone_model`` runs
the same method but recompiles the clone from its compile config.
"""

from __future__ import annotations

from .. import _compat
from ..probe import is_graph_model

_KERNEL_BASES = frozenset({"Dense", "BaseConv", "BaseConvTranspose", "BaseDepthwiseConv",
                           "BaseSeparableConv"})
_ACTIVATION_LAYERS = frozenset({"Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax"})
# Layers that neither hold weights nor mix inputs: the layer before one of them
# at the end of a model is still the output layer.
_PASSTHROUGH_LAYERS = _ACTIVATION_LAYERS | frozenset({
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianDropout",
    "GaussianNoise", "AlphaDropout", "Flatten", "Reshape", "Permute", "RepeatVector",
    "ActivityRegularization", "Identity"})
# A layer or operation that multiplies two tensors: what feeds it is a gate.
_GATE_CONSUMERS = frozenset({"Multiply"})


class _Structure:
    """The leaf layers of a Sequential/Functional model, nested models flattened.

    Operation nodes (``x + y``, ``keras.ops.*``, slicing) are nodes of the
    graph too, keyed by :class:`_OperationKey` rather than by a path: they have
    no weights and nothing to rewrite, but they connect layers.

    Attributes:
        leaves: ``{path: layer}`` in forward order, input layers left out.
        successors: ``{node: [nodes]}``, what reads each leaf's (or
            operation's) output; a node is a leaf path or an operation key.
        outputs: Paths of the output layers, including the layer before a
            trailing weightless layer or operation (``Dense`` before
            ``Activation("softmax")``).
        predecessors: ``{node: [nodes]}``, the reverse of ``successors``.
        ranks: ``{path: rank}`` of each leaf's output where the graph says it.
        names: Every layer and model name in the model, nested ones too.
        sequence: Whether the model has a recurrent layer.
    """

    def __init__(self, model, keras):
        self.keras = keras
        self.leaves: dict = {}
        self.successors: dict = {}
        self.ranks: dict = {}
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
                if not is_graph_model(layer, keras) and prefix + layer.name not in self.ranks:
                    self.ranks[prefix + layer.name] = _rank(lambda: layer.output)
            return heads, previous or []
        heads = []
        for operation, producers, outputs in _graph_nodes(model, keras):
            first, _ = self._ends_of(operation, prefix)
            if outputs and first and isinstance(first[0], str) and first[0] not in self.ranks:
                self.ranks[first[0]] = _rank(lambda: outputs[0])
            for producer in producers:
                if isinstance(producer, keras.layers.InputLayer):
                    heads.extend(node for node in first if node not in heads)
                else:
                    self._connect(self._ends_of(producer, prefix)[1], first)
        tails = []
        for tensor in model.outputs:
            producer = _compat.producer(tensor)
            if not isinstance(producer, keras.layers.InputLayer):
                tails.extend(self._ends_of(producer, prefix)[1])
        return heads, tails

    def _ends_of(self, operation, prefix):
        key = (prefix, id(operation))
        if key not in self._ends:
            if not isinstance(operation, self.keras.layers.Layer):
                node = _OperationKey(prefix, operation)
                self.successors[node] = []
                self._ends[key] = ([node], [node])
                return self._ends[key]
            self.names.add(operation.name)
            path = prefix + operation.name
            if is_graph_model(operation, self.keras):
                self._ends[key] = self._link(operation, path + "/")
            else:
                self.leaves[path] = operation
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
        self.predecessors = predecessors
        outputs, pending = set(), list(tails)
        while pending:
            node = pending.pop()
            if node in outputs:
                continue
            outputs.add(node)
            if self._passes_through(node):
                pending.extend(predecessors.get(node, []))
        return {node for node in outputs if isinstance(node, str)}

    def _passes_through(self, node) -> bool:
        return (isinstance(node, _OperationKey)
                or type(self.leaves[node]).__name__ in _PASSTHROUGH_LAYERS)

    def leaf_successors(self, path) -> list:
        """The leaves directly after ``path`` (operations between them break the link)."""
        return [node for node in self.successors[path] if isinstance(node, str)]

    def followed_by_normalization(self, path) -> bool:
        return any(type(self.leaves[after]).__name__.endswith("Normalization")
                   for after in self.leaf_successors(path))

    def feeds_gate(self, path) -> bool:
        """Whether ``path`` is a gate: its output, through weightless layers and
        operations, multiplies a tensor that does not come from it.

        A squeeze-and-excitation sigmoid, or MobileNetV3's hard sigmoid
        ``ReLU(6.)(x + 3.) / 6``, scales the block's input; the block's input
        itself feeds the same multiplication but also the gate, so it is not one.
        A multiplication by a constant is a scaling, not a gate.
        """
        downstream = self._reachable(path)
        seen, pending = set(), [(node, path) for node in self.successors[path]]
        while pending:
            node, came_from = pending.pop()
            if node in seen:
                continue
            seen.add(node)
            name = (node.operation_class if isinstance(node, _OperationKey)
                    else type(self.leaves[node]).__name__)
            if name in _GATE_CONSUMERS:
                others = [other for other in self.predecessors.get(node, []) if other != came_from]
                if others and not any(other in downstream for other in others):
                    return True
                if others:
                    continue
            if self._passes_through(node) or name in _GATE_CONSUMERS:
                pending.extend((after, node) for after in self.successors[node])
        return False

    def _reachable(self, path) -> set:
        found, pending = set(), list(self.successors[path])
        while pending:
            node = pending.pop()
            if node not in found:
                found.add(node)
                pending.extend(self.successors[node])
        return found


class _OperationKey:
    """The graph node of an operation that is not a layer (``x + y``, ``keras.ops.*``)."""

    __slots__ = ("prefix", "operation_id", "operation_class")

    def __init__(self, prefix, operation):
        self.prefix = prefix
        self.operation_id = id(operation)
        # keras.ops.multiply is class Multiply; `x * y` on tensors is the same operation.
        self.operation_class = type(operation).__name__

    def __eq__(self, other):
        return (isinstance(other, _OperationKey) and other.prefix == self.prefix
                and other.operation_id == self.operation_id)

    def __hash__(self):
        return hash((self.prefix, self.operation_id))


def _graph_nodes(model, keras):
    """``(operation, producing operations, output tensors)`` for every non-input
    node of a Functional model, inputs first."""
    depths = _compat.nodes_by_depth(model)
    for depth in sorted(depths, reverse=True):
        for node in depths[depth]:
            if node.is_input or node.operation is None:
                continue
            producers = [_compat.producer(tensor) for tensor in node.input_tensors]
            yield node.operation, producers, list(node.outputs)


def _run_graph(model, inputs, operation_fn, call_fn):
    """Run a Functional model's graph on ``inputs``, with ``operation_fn`` choosing
    the operation for each node and ``call_fn(operation, *args, **kwargs)`` calling it."""
    return _compat.run_through_graph(model, inputs, operation_fn=operation_fn, call_fn=call_fn)


def _rank(get_tensor) -> int | None:
    try:
        return len(get_tensor().shape)
    except Exception:  # a layer without a single output tensor (unbuilt, or of a nested model)
        return None


def _all_names(model, keras) -> set:
    names = {model.name}
    # A Sequential model's InputLayer is only in its private layer list.
    for layer in list(getattr(model, "_layers", [])) + list(model.layers):
        names.add(layer.name)
        if is_graph_model(layer, keras):
            names |= _all_names(layer, keras)
    return names


def _is_recurrent(layer, keras) -> bool:
    return isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional))


def _wrapped(layer, keras):
    """The layer inside a ``TimeDistributed`` wrapper, else the layer itself."""
    if isinstance(layer, keras.layers.TimeDistributed):
        return layer.layer
    return layer


def _is_kernel_layer(layer, keras=None) -> bool:
    """Dense and convolution layers (wrapped in TimeDistributed or not), the ones
    split around a normalization."""
    if keras is not None:
        layer = _wrapped(layer, keras)
    return any(cls.__name__ in _KERNEL_BASES for cls in type(layer).__mro__)
