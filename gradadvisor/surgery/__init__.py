"""Model surgery: rewrite a model into a new one with a different setup.

A :class:`Setup` names a candidate fix (initializer, activation, normalization,
gradient clipping, learning-rate scale) as plain data.  :func:`apply_setup`
builds a **new** model with that setup and never touches the user's model;
:func:`describe_changes` lists, layer by layer, what it would change, without
building anything; :func:`snippet` shows how to write the same setup in one's
own model code.

Rewriting happens in two steps.  A *plan* is made per leaf layer from layer
configs and the connections between layers (which layers are outputs, what
follows what, nested models flattened).  The plan is then *built*: a Sequential
model is rebuilt as a new Sequential, a Functional model by running its graph
with fresh layers, nested models recursively.  Weights are copied layer by
layer from the input model, except for layers that were re-initialised.

Functional models are rebuilt with ``Functional._run_through_graph`` rather than
``keras.models.clone_model``: in Keras 3.15 ``clone_model`` recompiles the clone
from the compile config, which raises for an unregistered custom loss or metric,
and the compiled optimizer would be thrown away anyway.  That method and
``Functional._nodes_by_depth`` are the only private Keras access here, both in
``structure.py``.  Operation nodes (``x + y``, ``keras.ops.*``) are carried over
as they are; a layer the setup cannot rewrite is kept as it is and named, with
the reason, in :attr:`Rewrite.skipped`.
"""

from .optimizer import optimizer_for
from .rewrite import OPTIMIZER, Rewrite, apply_setup, describe_changes, kept_layers, rewrite
from .setups import ACTIVATIONS, CLIPPINGS, INITIALIZERS, NORMALIZATIONS, RECURRENCES, Setup
from .snippets import snippet

__all__ = ["Setup", "apply_setup", "rewrite", "Rewrite", "kept_layers", "describe_changes", "optimizer_for", "snippet", "INITIALIZERS",
           "ACTIVATIONS", "NORMALIZATIONS", "CLIPPINGS", "RECURRENCES", "OPTIMIZER"]

# Public classes show the path users import them from.
Setup.__module__ = __name__
Rewrite.__module__ = __name__
