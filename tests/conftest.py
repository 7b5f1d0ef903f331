"""Shared fixtures. The real data live outside the repository, in ``../shared/data``."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import make_synthetic_domains

SHARED_DATA = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real evaluation data folder; tests using it skip cleanly when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def notifications():
    """Messages of the napari notifications dispatched during the test (a function returning the list)."""
    from napari.utils.notifications import notification_manager

    start = len(notification_manager.records)
    return lambda: [str(n.message) for n in notification_manager.records[start:]]


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    """Two synthetic source domains of 4 cases each, 48x48 RGB with a binary mask."""
    return make_synthetic_domains(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, synthetic_data) -> Path:
    """A run folder with a tiny RAM-DSIR model (base width 4) trained for 3 steps on synthetic data."""
    from napari_ramseg.core.train_job import TrainRequest, run_training

    out = tmp_path_factory.mktemp("runs") / "tiny"
    run_training(TrainRequest(data=synthetic_data, out=out, iterations=3, size=32, batch=4, base_width=4,
                              labels=["blob"], device="cpu", val_every=3))
    return out
