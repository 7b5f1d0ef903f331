"""Where models come from: the bundled default, a run folder, or a file."""

from __future__ import annotations

from pathlib import Path

BUNDLED_DIR = Path(__file__).parent / "bundled_models" / "vessels"
DEFAULT_MODEL_NAMES = ("default", "bundled", "vessels")


def bundled_model_path() -> Path:
    """The vessel model trained with RAM-DSIR on HRF + STARE that ships inside the package."""
    return BUNDLED_DIR


def resolve_model(name_or_path: str | Path) -> Path:
    """'default' (or 'bundled') -> the bundled model; anything else is taken as a path."""
    if str(name_or_path).lower() in DEFAULT_MODEL_NAMES:
        return bundled_model_path()
    return Path(name_or_path)
