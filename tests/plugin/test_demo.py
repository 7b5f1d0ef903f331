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
    from napari_ramseg.plugin import demo

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


def _pyqt6_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("PyQt6") is not None


@pytest.mark.skipif(not _pyqt6_installed(), reason="PyQt6 is not installed (the [pyqt6] extra)")
def test_demo_on_pyqt6_keeps_the_console_free_of_the_pyqt5_warning(tiny_model, tmp_path):
    """Issue 29, finding 19: where PyQt6 is installed (beside PyQt5 or alone) the demo runs on it, and
    napari's "PyQt5 backend is deprecated" warning does not appear."""
    env = {k: v for k, v in os.environ.items() if k not in ("QT_API", "PYTEST_QT_API")}
    env["RAMSEG_DEMO_MODEL"] = str(tiny_model)
    out = tmp_path / "demo.png"
    result = subprocess.run([sys.executable, "-m", "napari_ramseg", "demo", "--screenshot", str(out)], env=env,
                            capture_output=True, text=True, timeout=300)  # this interpreter: it has PyQt6
    assert result.returncode == 0, result.stderr[-3000:]
    assert out.exists()
    assert "PyQt5 backend is deprecated" not in result.stderr
    assert "requires a Qt6 backend" not in result.stderr


def test_prefer_qt6_leaves_a_chosen_binding_alone(monkeypatch):
    from napari_ramseg.plugin import demo

    monkeypatch.setenv("QT_API", "pyqt5")
    assert demo.prefer_qt6() is None and os.environ["QT_API"] == "pyqt5"
