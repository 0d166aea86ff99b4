"""Run-directory files: strict JSON."""
from __future__ import annotations

import json
import math

import numpy as np

from metasft.rundir import JsonlWriter, write_json


def _strict_load(text: str):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


def test_json_files_are_strict(tmp_path):
    obj = {"nan": math.nan, "inf": math.inf, "ninf": -math.inf, "np": np.float32(0.5), "nested": [np.inf, 1.0]}
    write_json(tmp_path / "a.json", obj)
    assert _strict_load((tmp_path / "a.json").read_text()) == {
        "nan": None, "inf": "inf", "ninf": "-inf", "np": 0.5, "nested": ["inf", 1.0]}
    log = JsonlWriter(tmp_path / "m.jsonl")
    log.write({"step": 1, "loss": math.nan})
    log.close()
    assert _strict_load((tmp_path / "m.jsonl").read_text()) == {"step": 1, "loss": None}
