"""What a probe measured, as plain data: :class:`ProbeResult` and its JSON form.

``to_dict``/``from_dict`` carry NaN and infinities as strings, so a result
round-trips exactly.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..jsonsafe import jsonable, restore_floats

SCHEMA = "gradadvisor.probe/1"


@dataclasses.dataclass
class LayerInfo:
    """What the probe knows about one layer, input to output.

    Attributes:
        name: Unique path, nested models joined by ``/`` (``encoder/dense_1``).
        class_name: The Keras class, e.g. ``Dense``.
        index: Position in the forward pass, 0 for the layer nearest the input.
        activation: The nonlinearity shaping the output, or None if linear.
        num_params: Number of trainable parameters.
        recurrent: Whether the layer runs over timesteps (RNN or Bidirectional).
        is_output: Whether the layer produces a model output.
        kernel_initializer: The configured kernel initializer's class name.
        recurrent_initializer: The recurrent initializer's class name, for RNNs.
        bias_initializer: The bias initializer's class name.
        next_is_normalization: Whether a normalization layer follows it.
        output_shape: The output shape without the batch axis.
    """

    name: str
    class_name: str
    index: int
    activation: str | None = None
    num_params: int = 0
    recurrent: bool = False
    is_output: bool = False
    kernel_initializer: str | None = None
    recurrent_initializer: str | None = None
    bias_initializer: str | None = None
    next_is_normalization: bool = False
    output_shape: list | None = None


@dataclasses.dataclass
class ProbeResult:
    """Everything one probe measured, as plain data.

    ``stats[layer][stat]`` is a list with one value per step run; the stat names
    are the keys of :data:`WEIGHT_STATS` and :data:`ACTIVATION_STATS`.
    ``timestep_grad_norms[layer]`` is a list per step of per-timestep norms of
    d loss / d input_t. ``nonfinite`` is None, or says at which step the loss or
    gradients first stopped being finite and which layers showed it first.
    ``seconds`` is the probe's wall time and ``cpu_seconds`` the CPU time the
    process spent over it (all threads; 0 in results saved before it was
    recorded): the search sizes its budget from the latter, which a busy
    machine does not inflate.
    ``outputs`` describes each model output and the loss it is trained with
    (:func:`~gradadvisor.probe.stats.describe_outputs`); empty in results saved
    before it was recorded. ``to_dict``/``from_dict`` round-trip exactly (NaN and
    infinities included).
    """

    model_name: str
    model_class: str
    num_params: int
    loss_name: str
    loss_inferred: bool
    optimizer: dict
    data_source: str
    batch_size: int
    num_steps: int
    seed: int
    layers: list
    loss: list
    global_grad_norm: list
    stats: dict
    timestep_grad_norms: dict
    nonfinite: dict | None = None
    activations_recorded: bool = True
    copy_mode: str = "clone"
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    notes: list = dataclasses.field(default_factory=list)
    outputs: list = dataclasses.field(default_factory=list)

    @property
    def steps_run(self) -> int:
        return len(self.loss)

    def layer(self, name: str) -> LayerInfo:
        for info in self.layers:
            if info.name == name:
                return info
        raise KeyError(name)

    def weighted_layers(self) -> list:
        """Layers with trainable weights, input to output."""
        return [info for info in self.layers if info.num_params > 0]

    def series(self, layer: str, stat: str) -> np.ndarray:
        """One statistic of one layer over the steps, as a float array."""
        return np.asarray(self.stats.get(layer, {}).get(stat, []), dtype="float64")

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["schema"] = SCHEMA
        return jsonable(data)

    @classmethod
    def from_dict(cls, data: dict) -> "ProbeResult":
        data = dict(data)
        data.pop("schema", None)
        data["layers"] = [LayerInfo(**info) for info in data["layers"]]
        data = restore_floats(data)
        return cls(**data)
