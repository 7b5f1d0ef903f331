"""``ramseg demo --screenshot``: napari opens with the sample and the widgets, segments, and writes a PNG."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def test_demo_writes_a_screenshot(tiny_model, tmp_path):
    from PIL import Image

    ramseg = shutil.which("ramseg") or str(Path(sys.executable).parent / "ramseg")
    out = tmp_path / "shots" / "demo.png"
    env = {**os.environ, "RAMSEG_DEMO_MODEL": str(tiny_model)}
    result = subprocess.run([ramseg, "demo", "--screenshot", str(out)], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert out.exists() and out.stat().st_size > 20_000
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width >= 800 and im.height >= 500
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.std() > 10  # a real window, not a blank frame


def test_demo_model_switch(tmp_path, monkeypatch, tiny_model):
    from napari_ramseg import demo

    monkeypatch.setenv(demo.MODEL_ENV, str(tiny_model))
    assert demo.demo_model() == tiny_model
    monkeypatch.setenv(demo.MODEL_ENV, str(tmp_path / "missing"))
    assert demo.demo_model() is None
