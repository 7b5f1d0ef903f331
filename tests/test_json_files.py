"""One JSON cleaning and one JSON writer (files.py): nan and inf become null, numpy and torch values plain."""

from __future__ import annotations

import json
import math

import numpy as np
import torch

from napari_ramseg.core.evaluation import metrics
from napari_ramseg.files import json_safe, write_json


def test_write_json_writes_strict_json_of_numpy_torch_and_paths(tmp_path):
    data = {"dice": np.float32(0.5), "nan": float("nan"), "inf": np.array([1.0, math.inf]), np.int64(3): "key",
            "tensor": torch.tensor([2.0, float("-inf")]), "path": tmp_path / "x", "nested": ({"a": np.nan},)}
    write_json(tmp_path / "out.json", data)
    text = (tmp_path / "out.json").read_text()
    assert text.endswith("\n") and "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"dice": 0.5, "nan": None, "inf": [1.0, None], "3": "key", "tensor": [2.0, None],
                                "path": str(tmp_path / "x"), "nested": [{"a": None}]}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # atomic: no temporary left


def test_the_metrics_module_hands_out_the_one_cleaning():
    assert metrics.json_safe is json_safe
