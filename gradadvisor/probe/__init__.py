"""The probe: a few real training steps that measure every layer.

The probe trains a **copy** of the user's model (a clone with the same weights,
or, for subclassed models that cannot be cloned, the model itself with every
variable restored afterwards), so the user's model and file never change.

Each step is one compiled ``tf.function`` that runs the forward pass layer by
layer, records each layer's output, computes the loss and the gradients, applies
the optimizer and reduces everything to scalars in the graph; one vector per step
leaves TensorFlow.  For recurrent layers the gradient of the loss with respect to
the layer's input at every timestep is measured too, which shows vanishing or
exploding **through time**.
"""

from __future__ import annotations

# What other modules, tests and scripts import from gradadvisor.probe, and its other public names.
from .result import SCHEMA, LayerInfo, ProbeResult, jsonable, restore_floats  # noqa: F401
from .gradients import (StepGradients, forward_and_gradients, model_forward,  # noqa: F401
                        recurrent_inputs, recurrent_outputs)
from .run import run_probe  # noqa: F401
from .step import ProbeStep  # noqa: F401
from .stats import (ACTIVATION_STATS, WEIGHT_STATS, describe_layers, group_variables,  # noqa: F401
                    layer_output_stats, layer_weight_stats, timestep_norms)
from .walk import is_graph_model, Tracer, leaf_layers  # noqa: F401
from .working_copy import make_working_copy, describe_optimizer, make_loss_function  # noqa: F401
from .outputs import ACTIVATION_RANGES, describe_targets, softmax_rows_not_one, targets_out_of_range  # noqa: F401
