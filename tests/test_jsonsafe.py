"""The one JSON-number helper: NaN and infinities survive a strict JSON round trip."""

import json
import math

import numpy as np

from gradadvisor.jsonsafe import jsonable, restore_floats


def test_nan_and_infinities_round_trip_through_strict_json():
    value = {"loss": [0.5, float("nan"), np.float32("inf")], 3: (np.int64(2), np.bool_(True)),
             "norms": np.array([1.0, -np.inf]), "name": "nan-free text"}
    text = json.dumps(jsonable(value), allow_nan=False)
    back = restore_floats(json.loads(text))
    assert back["3"] == [2, True] and back["name"] == "nan-free text"
    assert back["loss"][0] == 0.5 and math.isnan(back["loss"][1]) and back["loss"][2] == math.inf
    assert back["norms"] == [1.0, -math.inf]
    assert type(jsonable(np.float32(1.5))) is float and type(jsonable(np.int32(1))) is int
