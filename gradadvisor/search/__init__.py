"""The search: Keras Tuner over rewritten copies of the model, with proof.

The findings decide which dimensions open (a vanishing-gradient finding opens
activations, initializers and normalization; an explosion opens clipping and
the learning rate); Keras Tuner decides what to try; each candidate is built by
:mod:`gradadvisor.surgery` and scored by re-probing it: gradient health from the
rule engine first, held-out loss second.  A diverging candidate gets a large
finite score instead of NaN, so the tuner never stops on it.

The best setup is then confirmed: the original and the recommended model train
the same way (same seed, steps and held-out split), and the setup is
recommended only if it is healthier and reaches a lower held-out loss.

Each trial's measurements are written as a :class:`TrialRecord` into the
trial's folder of the tuner directory, and the ranking reads them back from
there.  A local search and a distributed one (Keras Tuner's chief/worker mode,
see :mod:`gradadvisor.search.distributed`), whose chief runs no trial itself, thus
rank, confirm and save through the same code.  With several devices visible,
candidates are built and trained under a ``tf.distribute.MirroredStrategy``
(see :mod:`gradadvisor.probe.mirrored`).
"""

from .data import held_out, split_data
from .processes import search_settings
from .recommendation import Recommendation, recommend
from .records import RECORD_FILE, RECORD_SCHEMA, TrialRecord, read_records, write_record
from .run import DIVERGED_SCORE, RunResult, train_and_measure
from .space import (ACTIVATIONS, CLIP_THRESHOLDS, INITIALIZERS, LEARNING_RATE_SCALES, Dimension,
                    expert_starts, search_space, setup_from_values)
from .tuner import OBJECTIVE

__all__ = ["recommend", "Recommendation", "search_space", "expert_starts", "setup_from_values", "Dimension",
           "split_data", "held_out", "train_and_measure", "RunResult", "TrialRecord", "write_record",
           "read_records", "search_settings", "DIVERGED_SCORE", "OBJECTIVE", "RECORD_FILE", "RECORD_SCHEMA",
           "INITIALIZERS", "ACTIVATIONS", "CLIP_THRESHOLDS", "LEARNING_RATE_SCALES"]

# Public classes show the path users import them from.
Dimension.__module__ = __name__
RunResult.__module__ = __name__
TrialRecord.__module__ = __name__
Recommendation.__module__ = __name__
