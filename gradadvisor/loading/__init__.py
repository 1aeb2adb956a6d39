"""Models and data in: safe loading, validation, and synthetic data.

Everything a user hands over passes through here, and every problem with it
becomes a :class:`~gradadvisor.errors.GradAdvisorError` whose message names
what was given, what was expected and how to fix it.  Checks that need no
TensorFlow (missing file, wrong extension, not a zip) run before TensorFlow is
imported, so bad input is answered at once.
"""

from __future__ import annotations

# What other modules, tests and scripts import from gradadvisor.loading, and its other public names.
from .data import Data, from_python, load_data, validate_data  # noqa: F401
from .introspection import (RELU_FAMILY, SATURATING_ACTIVATIONS, activation_name,  # noqa: F401
                            input_specs, output_layers)
from .loss import LossChoice, resolve_loss  # noqa: F401
from .models import (check_model_path, import_custom_objects, load_model, resolve_model,  # noqa: F401
                     unbuilt_optimizer_state_ignored)
from .synthetic import synthetic_data  # noqa: F401
from .prepare import prepare  # noqa: F401
