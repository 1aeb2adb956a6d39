"""Every use of a private Keras, Keras Tuner or TensorFlow name, in one place.

gradadvisor reaches into a few internals that no public API offers. Each one
is wrapped here with the reason it is needed, and ``tests/test_compat.py``
checks each against the installed versions, so that a release that renames or
removes one fails there, loudly and by name, instead of somewhere deep in a
probe or a search. The versions these were checked against are declared in
``setup.cfg`` and listed in the README.

Nothing here imports TensorFlow, Keras or Keras Tuner at module level.
"""

from __future__ import annotations

import contextlib


# --- Keras graphs -----------------------------------------------------------

def functional_class():
    """Keras' ``Functional`` model class.

    Why: ``keras.Model(inputs, outputs)`` returns a ``Functional`` instance,
    but the class is not exported; telling a graph model from a subclassed one
    (which cannot be walked or rewritten) needs it.
    """
    from keras.src.models.functional import Functional

    return Functional


def run_through_graph(model, inputs, *, operation_fn, call_fn):
    """Run a Functional model's graph on ``inputs``, calling ``call_fn`` for each node.

    Why: the probe records every layer's output in the same pass that computes
    the loss, and surgery re-creates a graph with some layers replaced; both
    need Keras' own graph walk (with its handling of operation nodes, shared
    layers and nested structures) with a hook at each call, which only the
    private ``Functional._run_through_graph`` offers.
    """
    return model._run_through_graph(inputs, operation_fn=operation_fn, call_fn=call_fn)


def producer(tensor):
    """The operation (layer or op node) that produced a symbolic tensor, or None.

    Why: a Keras tensor's producer is kept only in ``_keras_history``.
    """
    history = getattr(tensor, "_keras_history", None)
    return history.operation if history else None


def nodes_by_depth(model) -> dict:
    """``{depth: [node, ...]}`` of a Functional model (depth 0 is the outputs).

    Why: the order of a graph's nodes, for tracing which layer feeds which,
    is kept only in ``_nodes_by_depth``.
    """
    return model._nodes_by_depth


def inbound_nodes(layer) -> list:
    """The nodes at which ``layer`` was called (empty for a layer never called).

    Why: which inputs feed a layer (for example the integer input of an
    Embedding) is kept only in ``_inbound_nodes``.
    """
    return list(getattr(layer, "_inbound_nodes", []))


def sequential_layers(model) -> list:
    """A Sequential model's layers including its ``InputLayer``.

    Why: ``Sequential.layers`` hides the InputLayer, whose batch shape and dtype
    a rebuilt copy must keep.
    """
    return list(model._layers)


# --- Keras training internals (TensorFlow backend) --------------------------

def compute_loss(model, **kwargs):
    """The model's compiled loss, before any loss scaling, as ``fit`` computes it.

    Why: the public ``compute_loss`` of a subclass may be overridden and does
    not take every argument ``fit``'s own step passes; the monitor's train
    step must compute exactly what Keras' step computes.
    """
    return model._compute_loss(**kwargs)


def loss_tracker(model):
    """The metric ``fit`` reports as ``loss``.

    Why: a train step that replaces Keras' own must update it the same way,
    or the history's loss would differ from a plain ``fit``.
    """
    return model._loss_tracker


def unscale_loss_for_distribution(loss):
    """Undo the per-replica scaling Keras applies to a loss under a strategy.

    Why: Keras' own train step reports the unscaled loss; this is its helper.
    """
    from keras.src.losses.loss import unscale_loss_for_distribution as unscale

    return unscale(loss)


def train_step_internals_present(model) -> bool:
    """Whether ``model`` has the internals a replacement train step relies on."""
    return all(hasattr(model, name) for name in ("_compute_loss", "_loss_tracker",
                                                 "make_train_function"))


def keras_train_step():
    """Keras' own TensorFlow ``train_step`` function.

    Why: the monitor replaces the train step only of models that do not define
    their own; comparing against the trainer's function is the one reliable test.
    """
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

    return TensorFlowTrainer.train_step


def model_strategy(model):
    """The ``tf.distribute`` strategy a model was built under, or None.

    Why: Keras keeps it only in ``_distribute_strategy``.
    """
    return getattr(model, "_distribute_strategy", None)


def build_metrics_ahead(model, element_spec) -> bool:
    """Build the compiled loss and metrics from a data spec before the first trace.

    Why: otherwise the first traced step creates them, which forces a second
    trace; Keras does the same in ``fit`` through ``_symbolic_build``.

    Returns:
        True when something was built, False when nothing needed building.
    """
    compile_metrics = getattr(model, "_compile_metrics", None)
    compile_loss = getattr(model, "_compile_loss", None)
    if not ((compile_metrics is not None and not compile_metrics.built)
            or (compile_loss is not None and not compile_loss.built)):
        return False
    model._symbolic_build(data_batch=element_spec)
    return True


def optimizer_learning_rate_setting(optimizer):
    """What the optimizer's learning rate was set to: a variable, or a schedule.

    Why: the public ``learning_rate`` property returns the current value, not
    the schedule behind it; scaling a schedule without replacing it needs to
    tell the two apart, and only ``_learning_rate`` holds the setting.
    """
    return getattr(optimizer, "_learning_rate", None)


# --- Keras Tuner --------------------------------------------------------------

def oracle_has_tried(oracle, values: dict) -> bool:
    """Whether the oracle has already run (or is running) a trial with ``values``.

    Why: expert starting points are queued before the tuner's own proposals
    and must not repeat a trial; the oracle's test is ``_duplicate``.
    """
    return bool(oracle._duplicate(values))


def chief_may_exit(oracle) -> bool:
    """Keras Tuner's own test that a chief's workers have all been told to stop.

    Why: the chief must wait for that before ranking trials, and Keras Tuner
    keeps the test in its distribute package only.
    """
    from keras_tuner.src.distribute.oracle_chief import exit_chief

    return bool(exit_chief(oracle))


@contextlib.contextmanager
def oracle_call_timeout(seconds: float):
    """Bound every worker-to-chief call by ``seconds`` while the block runs.

    Why: Keras Tuner waits up to an hour per call, set by a module constant of
    its gRPC client; a worker whose chief is gone should say so sooner.
    """
    from keras_tuner.src.distribute import oracle_client

    saved = getattr(oracle_client, "TIMEOUT", None)
    oracle_client.TIMEOUT = seconds
    try:
        yield
    finally:
        if saved is not None:
            oracle_client.TIMEOUT = saved
