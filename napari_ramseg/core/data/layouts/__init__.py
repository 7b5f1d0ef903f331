"""The dataset layouts the engine reads, by name, and :func:`detect_format` to tell them apart.

``LAYOUTS`` is the one list of format names: the CLI's ``--format`` choices, the train dock's list
and ``discover`` all read it. Adding a layout is one new module with a :class:`~.base.Layout`
subclass and one line here.
"""

from __future__ import annotations

from pathlib import Path

from napari_ramseg.errors import RamsegInputError

from .base import Case, Layout, MaskLabelsError, files, subdirs
from .dofe import DofeLayout
from .domains import DomainsLayout
from .saml import SamlLayout
from .saml_npy import SamlNpyLayout

__all__ = ["LAYOUTS", "FORMATS", "Case", "Layout", "MaskLabelsError", "get", "detect_format", "layouts_help",
           "check_root"]

# name -> layout, in the order they are offered (--format choices, the train dock, "expected ..." messages)
LAYOUTS: dict[str, type[Layout]] = {
    DomainsLayout.name: DomainsLayout,
    DofeLayout.name: DofeLayout,
    SamlLayout.name: SamlLayout,
    SamlNpyLayout.name: SamlNpyLayout,
}
FORMATS: tuple[str, ...] = tuple(LAYOUTS)

_INSTANCES: dict[str, Layout] = {name: cls() for name, cls in LAYOUTS.items()}


def get(name: str) -> Layout:
    """The layout registered as ``name``; ValueError naming the known ones otherwise."""
    try:
        return _INSTANCES[name]
    except KeyError:
        raise ValueError(f"format must be 'auto' or one of {FORMATS}, not {name!r}") from None


def layouts_help() -> str:
    return "expected " + ", or ".join(layout.pattern for layout in _INSTANCES.values())


def check_root(root: Path) -> None:
    if not root.exists():
        raise RamsegInputError("dataset folder not found", root)
    if not root.is_dir():
        raise RamsegInputError("is a file; give the dataset folder", root)


def detect_format(root: str | Path) -> str:
    """The name of the layout ``root`` is in; RamsegInputError when none fits (saying what was expected,
    or that ``root`` is one domain folder of a layout rather than the dataset root)."""
    root = Path(root)
    check_root(root)
    folders = subdirs(root)
    if not folders and not files(root):
        raise RamsegInputError("dataset folder is empty", root)
    # specific signatures first: the native layout's "<domain>/images/" is the loosest
    ordered = sorted(_INSTANCES.values(), key=lambda layout: layout.fallback)
    for layout in ordered:
        if any(layout.is_domain(d) for d in folders):
            return layout.name
    for layout in sorted(_INSTANCES.values(), key=lambda layout: not layout.fallback):
        if layout.is_domain(root):
            raise RamsegInputError(layout.single_domain_hint, root)
    raise RamsegInputError(f"no known dataset layout: {layouts_help()}", root)
