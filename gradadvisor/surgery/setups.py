"""The setup: one candidate fix as plain data, and the choices each field may take."""

from __future__ import annotations

import dataclasses
import math

from ..errors import UsageError

#: Initializers a setup may choose, with the Keras class each builds.
INITIALIZERS = {
    "glorot_normal": "GlorotNormal",
    "glorot_uniform": "GlorotUniform",
    "he_normal": "HeNormal",
    "he_uniform": "HeUniform",
    "lecun_normal": "LecunNormal",
    "orthogonal": "Orthogonal",
}
#: Activations a setup may choose; the first two are inserted as layers.
ACTIVATIONS = ("leaky_relu", "prelu", "relu", "elu", "selu", "gelu", "swish")
NORMALIZATIONS = ("none", "batchnorm_before", "batchnorm_after", "layernorm")
CLIPPINGS = ("none", "clipnorm", "clipvalue", "global_clipnorm")
#: Recurrence schemes: "irnn" gives SimpleRNN layers ReLU units and an identity
#: recurrent matrix (Le, Jaitly and Hinton, 2015), which carries gradient across
#: long sequences where tanh units with random recurrent weights lose it.
RECURRENCES = ("none", "irnn")
#: Recurrent cells a SimpleRNN (or GRU) layer may become: gated cells keep a
#: gradient path through time that a tanh SimpleRNN loses.
CELLS = ("gru", "lstm")
#: Directions a recurrent layer may read its sequence in: "bidirectional"
#: wraps it in ``Bidirectional`` (outputs concatenated), so an input near the
#: start of a sequence is also read last, a few steps from the loss, instead of
#: having to survive every step of the forward pass (Schuster and Paliwal, 1997).
#: It needs the whole sequence at once: not for step-by-step (causal) use.
DIRECTIONS = ("bidirectional",)
#: LSTM forget-gate biases: "unit" starts them at 1 (Jozefowicz et al., 2015);
#: "chrono" draws them from log(U[1, T-1]) with the input-gate bias its
#: negative, T the sequence length (Tallec and Ollivier, 2018), so the cell
#: starts out remembering over spans up to T.
FORGET_BIASES = ("unit", "chrono")
#: Optimizers a setup may switch to, at their standard learning rate unless
#: ``optimizer_learning_rate`` says otherwise.
OPTIMIZERS = {"adam": "Adam", "rmsprop": "RMSprop"}
STANDARD_LEARNING_RATE = 1.0e-3


@dataclasses.dataclass(frozen=True)
class Setup:
    """One candidate fix, as plain data.

    Every field left at its default keeps what the model already has, so
    ``Setup()`` rebuilds the model unchanged.

    Attributes:
        initializer: Kernel initializer for layers with a kernel (Dense, Conv*,
            recurrent layers), one of :data:`INITIALIZERS`; None keeps them.
        activation: Replacement for saturating and ReLU-family hidden
            activations, one of :data:`ACTIVATIONS`; None keeps them.
        normalization: ``"batchnorm_before"`` (BatchNormalization before the
            activation), ``"batchnorm_after"``, ``"layernorm"`` (sequence
            models), or None / ``"none"``.
        clipping: ``"clipnorm"``, ``"clipvalue"``, ``"global_clipnorm"``, or
            None / ``"none"`` to keep the optimizer's own clipping.
        clip_threshold: The clipping threshold (None means 1.0).
        learning_rate_scale: Factor on the optimizer's learning rate.
        recurrence: ``"irnn"`` turns SimpleRNN layers into IRNNs (ReLU, identity
            recurrent initializer); None / ``"none"`` keeps them.
        cell: ``"gru"`` or ``"lstm"`` replaces SimpleRNN layers (and ``"lstm"``
            GRU layers) by that cell, keeping units and the return and
            direction flags; None keeps them.
        direction: ``"bidirectional"`` wraps unwrapped recurrent layers in
            ``Bidirectional`` (see :data:`DIRECTIONS`); None keeps them.
        forget_bias: ``"unit"`` or ``"chrono"`` (see :data:`FORGET_BIASES`)
            for LSTM layers, including those ``cell`` creates; None keeps them.
        recurrent_initializer: ``"orthogonal"`` re-initialises recurrent
            kernels orthogonally; None keeps them.
        optimizer: ``"adam"`` or ``"rmsprop"`` replaces the optimizer (the
            clipping of the setup still applies); None keeps the model's.
        optimizer_learning_rate: The new optimizer's learning rate (None:
            :data:`STANDARD_LEARNING_RATE`); ``learning_rate_scale`` applies
            on top.
        warmup_steps: Steps of linear learning-rate warm-up from near zero to
            the (scaled) rate, then constant; 0 for none.
        output: An output change of :mod:`gradadvisor.surgery.output`
            (``"sigmoid"``, ``"softmax"``, ``"linear"``, ``"from_logits"``,
            ``"probabilities"`` or ``"units=N"``); None / ``"none"`` keeps the
            output layer and the loss.

    Example:
        >>> setup = Setup(initializer="he_normal", activation="relu",
        ...               normalization="batchnorm_before", clipping="clipnorm")
        >>> Setup.from_dict(setup.to_dict()) == setup
        True
    """

    initializer: str | None = None
    activation: str | None = None
    normalization: str | None = None
    clipping: str | None = None
    clip_threshold: float | None = 1.0
    learning_rate_scale: float = 1.0
    recurrence: str | None = None
    cell: str | None = None
    forget_bias: str | None = None
    direction: str | None = None
    recurrent_initializer: str | None = None
    optimizer: str | None = None
    optimizer_learning_rate: float | None = None
    warmup_steps: int = 0
    output: str | None = None

    def __post_init__(self):
        _check_choice("recurrence", self.recurrence, RECURRENCES)
        from .output import OUTPUT_FIXES, is_output_fix

        if self.output not in (None, "none") and not is_output_fix(self.output):
            _check_choice("output", self.output, ("none",) + OUTPUT_FIXES + ("units=N",))
        _check_choice("cell", self.cell, CELLS)
        _check_choice("forget_bias", self.forget_bias, FORGET_BIASES)
        _check_choice("direction", self.direction, DIRECTIONS)
        _check_choice("recurrent_initializer", self.recurrent_initializer, ("orthogonal",))
        _check_choice("optimizer", self.optimizer, tuple(OPTIMIZERS))
        if (isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int)
                or self.warmup_steps < 0):
            raise UsageError(
                "The 'warmup_steps' parameter of Setup must be a whole number of at least 0. "
                f"Got {self.warmup_steps!r} instead.")
        if self.optimizer_learning_rate is not None:
            value = self.optimizer_learning_rate
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not math.isfinite(value) or value <= 0):
                raise UsageError(
                    "The 'optimizer_learning_rate' parameter of Setup must be None or a positive "
                    f"finite number. Got {value!r} instead.")
            object.__setattr__(self, "optimizer_learning_rate", float(value))
        _check_choice("initializer", self.initializer, tuple(INITIALIZERS))
        _check_choice("activation", self.activation, ACTIVATIONS)
        _check_choice("normalization", self.normalization, NORMALIZATIONS)
        _check_choice("clipping", self.clipping, CLIPPINGS)
        if self.clip_threshold is None:
            object.__setattr__(self, "clip_threshold", 1.0)
        for name in ("clip_threshold", "learning_rate_scale"):
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not math.isfinite(value) or value <= 0):
                raise UsageError(
                    f"The '{name}' parameter of Setup must be a positive finite number. "
                    f"Got {value!r} instead.")
            object.__setattr__(self, name, float(value))

    @property
    def kernel_initializer(self) -> str | None:
        """The initializer applied: the chosen one, or lecun_normal for SELU."""
        if self.initializer is None and self.activation == "selu":
            return "lecun_normal"
        return self.initializer

    @property
    def normalization_kind(self) -> str | None:
        """The normalization, with ``"none"`` read as None."""
        return None if self.normalization in (None, "none") else self.normalization

    @property
    def clipping_kind(self) -> str | None:
        """The clipping argument, with ``"none"`` read as None."""
        return None if self.clipping in (None, "none") else self.clipping

    @property
    def is_baseline(self) -> bool:
        """Whether the setup changes nothing at all."""
        return (self.kernel_initializer is None and self.activation is None
                and self.normalization_kind is None and self.clipping_kind is None
                and self.learning_rate_scale == 1.0 and self.recurrence_kind is None
                and not self.changes_recurrent_layers and not self.changes_optimizer_class
                and self.warmup_steps == 0 and self.output_kind is None)

    @property
    def changes_recurrent_layers(self) -> bool:
        """Whether the cell, direction, forget-gate bias or recurrent initializer changes."""
        return bool(self.cell or self.direction or self.forget_bias or self.recurrent_initializer)

    @property
    def changes_optimizer_class(self) -> bool:
        """Whether the optimizer is replaced."""
        return self.optimizer is not None

    @property
    def output_kind(self) -> str | None:
        """The output change, with ``"none"`` read as None."""
        return None if self.output in (None, "none") else self.output

    @property
    def recurrence_kind(self) -> str | None:
        """The recurrence scheme, with ``"none"`` read as None."""
        return None if self.recurrence in (None, "none") else self.recurrence

    def describe(self) -> str:
        """A short human-readable summary, e.g. ``he_normal init, relu, clipnorm=1``."""
        parts = []
        if self.kernel_initializer:
            parts.append(f"{self.kernel_initializer} init")
        if self.activation:
            parts.append(self.activation)
        if self.normalization_kind:
            parts.append(self.normalization_kind)
        if self.clipping_kind:
            parts.append(f"{self.clipping_kind}={self.clip_threshold:g}")
        if self.learning_rate_scale != 1.0:
            parts.append(f"learning rate x{self.learning_rate_scale:g}")
        if self.recurrence_kind:
            parts.append(f"{self.recurrence_kind} recurrence")
        if self.cell:
            parts.append(f"{self.cell.upper()} cells")
        if self.direction:
            parts.append(self.direction)
        if self.forget_bias:
            parts.append(f"{self.forget_bias} forget-gate bias")
        if self.recurrent_initializer:
            parts.append(f"{self.recurrent_initializer} recurrent weights")
        if self.optimizer:
            rate = self.optimizer_learning_rate or STANDARD_LEARNING_RATE
            parts.append(f"{OPTIMIZERS[self.optimizer]} at {rate:g}")
        if self.warmup_steps:
            parts.append(f"{self.warmup_steps}-step linear warm-up")
        if self.output_kind:
            parts.append(f"output {self.output_kind}")
        return ", ".join(parts) if parts else "the model unchanged"

    def to_dict(self) -> dict:
        """The fields as a JSON-friendly dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Setup":
        """Rebuild a setup from :meth:`to_dict` output.

        Raises:
            UsageError: ``data`` is not a dict, has an unknown field, or a value
                a setup cannot take.
        """
        if not isinstance(data, dict):
            raise UsageError(f"A setup must be given as a dict. Got {type(data).__name__} instead.")
        fields = [field.name for field in dataclasses.fields(cls)]
        unknown = [key for key in data if key not in fields]
        if unknown:
            raise UsageError(
                f"The setup has an unknown field '{unknown[0]}'; the fields are "
                f"{', '.join(fields)}. Remove it or correct its spelling.")
        return cls(**data)


def _check_choice(name: str, value, choices) -> None:
    if value is None or value in choices:
        return
    allowed = ", ".join(repr(choice) for choice in choices)
    raise UsageError(
        f"The '{name}' parameter of Setup must be None or one of {allowed}. Got {value!r} instead.")


def _as_setup(setup) -> Setup:
    if isinstance(setup, Setup):
        return setup
    if isinstance(setup, dict):
        return Setup.from_dict(setup)
    raise UsageError(
        f"The 'setup' parameter must be a gradadvisor.surgery.Setup or a dict. "
        f"Got {type(setup).__name__} instead.")
