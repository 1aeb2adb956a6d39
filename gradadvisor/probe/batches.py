"""The batches each probe step trains on."""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from ..loading import Data


def training_batches(data: Data, batch_size: int, seed: int, input_names=()):
    """Yield ``(x_list, y)`` batches forever, reshuffled each pass, all full size.

    A user's ``tf.data.Dataset`` is used batch by batch as it comes (repeated);
    a dict of inputs is put in the model's input order.
    """
    if data.dataset is not None:
        for element in data.dataset.repeat():
            if not isinstance(element, (tuple, list)) or len(element) < 2:
                raise DataError(
                    "The tf.data.Dataset must yield (x, y) pairs; it yields single elements."
                )
            x, y = element[0], element[1]
            if isinstance(x, dict):
                missing = [name for name in input_names if name not in x]
                if missing:
                    raise DataError(
                        f"The dataset has no input named '{missing[0]}'; it has "
                        f"{', '.join(map(repr, x))}. Name the features after the model's inputs.")
                x = [x[name] for name in input_names] if input_names else list(x.values())
            yield (list(x) if isinstance(x, (list, tuple)) else [x]), y
        return
    rng = np.random.default_rng(seed)
    num = data.num_samples
    ys = data.y if isinstance(data.y, list) else [data.y]
    while True:
        order = rng.permutation(num)
        for start in range(0, num - batch_size + 1, batch_size):
            index = order[start:start + batch_size]
            y = [t[index] for t in ys]
            yield [a[index] for a in data.x], (y[0] if len(y) == 1 else y)
