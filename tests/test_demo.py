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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X displays are a Linux matter")
def test_demo_without_a_display_says_how_to_run_it(tmp_path):
    """Issue 29, finding 6: no display -> one line naming xvfb-run, exit 2 (Qt used to abort: 134)."""
    ramseg = shutil.which("ramseg") or str(Path(sys.executable).parent / "ramseg")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    result = subprocess.run([ramseg, "demo"], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "xvfb-run -a ramseg demo" in lines[0], result.stderr
    shot = tmp_path / "shot.png"
    result = subprocess.run([ramseg, "demo", "--screenshot", str(shot)], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2 and f"xvfb-run -a ramseg demo --screenshot {shot}" in result.stderr
    assert not shot.exists()
