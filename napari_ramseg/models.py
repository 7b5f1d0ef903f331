"""Where models come from: a bundled model by name (the model zoo), a run folder, or a file.

Bundled models live in ``bundled_models/<name>/`` (``model.json``, ``model.safetensors`` and the
model card ``MODEL.md``). A name is resolved here and nowhere else, so the CLI's ``--model`` and the
Segment dock's picker accept the same names.
"""

from __future__ import annotations

from pathlib import Path

from .core.models.run_folder import RunFolder
from .errors import RamsegInputError

BUNDLED_ROOT = Path(__file__).parent / "bundled_models"
DEFAULT_MODEL = "vessels"
ALIASES = {"default": DEFAULT_MODEL, "bundled": DEFAULT_MODEL}
CARD_NAME = "MODEL.md"


def bundled_models() -> list[str]:
    """Names of the bundled models that are installed (a folder holding ``model.json``)."""
    if not BUNDLED_ROOT.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_ROOT.iterdir() if RunFolder(p).model_json.is_file())


def canonical_name(name: str) -> str | None:
    """``"default"`` -> ``"vessels"``; a bundled model's name stays; anything else -> None."""
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    return key if key in bundled_models() or key == DEFAULT_MODEL else None


def bundled_model_path(name: str = DEFAULT_MODEL) -> Path:
    """The folder of a bundled model (the default: the vessel model)."""
    return BUNDLED_ROOT / (canonical_name(name) or name)


def model_card(name_or_path: str | Path) -> Path | None:
    """The model card (``MODEL.md``) beside a model, if it has one."""
    folder = resolve_model(name_or_path)
    folder = folder if folder.is_dir() else folder.parent
    card = folder / CARD_NAME
    return card if card.is_file() else None


def available_text() -> str:
    names = bundled_models()
    shown = [f"{n} (default)" if n == DEFAULT_MODEL else n for n in names]
    return ", ".join(shown) if shown else "none installed"


def _looks_like_a_name(text: str) -> bool:
    return "/" not in text and "\\" not in text and "." not in text


def resolve_model(name_or_path: str | Path) -> Path:
    """A bundled model's name (or ``default``) -> its folder; anything else is taken as a path.

    A bare word that is neither a bundled model nor an existing path is refused with one line that
    lists the bundled models, rather than failing later as a missing file."""
    text = str(name_or_path).strip()
    name = canonical_name(text)
    if name is not None:
        path = bundled_model_path(name)
        if not RunFolder(path).model_weights.is_file():
            raise RamsegInputError(f"the bundled model {name!r} is not installed; bundled models: {available_text()}",
                                   path)
        return path
    path = Path(text).expanduser()
    if not path.exists() and _looks_like_a_name(text):
        raise RamsegInputError(f"no bundled model named {text!r} and no such file or folder; "
                               f"bundled models: {available_text()}; or give a run folder or a .safetensors file")
    return path
