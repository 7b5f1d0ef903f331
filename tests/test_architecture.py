"""The layering napari_ramseg/ARCHITECTURE.md draws: core/ never imports Qt, napari or the UI modules."""

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[1] / "napari_ramseg" / "core"
FORBIDDEN = ("qtpy", "PyQt5", "PySide2", "PySide6", "napari", "magicgui", "superqt", "vispy")
UI_MODULES = ("widgets", "napari_io", "cli", "demo", "sample")


def _imports(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, 0) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append((node.module or "", node.level))
    return out


@pytest.mark.parametrize("path", sorted(CORE.rglob("*.py")), ids=lambda p: str(p.relative_to(CORE)))
def test_core_never_imports_the_ui(path):
    for module, level in _imports(path):
        top = module.split(".")[0]
        assert level > 0 or top not in FORBIDDEN, f"{path.name} imports {module}"
        if level >= 2 or module.startswith("napari_ramseg."):  # from the package above core/
            name = module.split(".")[-1] if module.startswith("napari_ramseg.") else module.split(".")[0]
            assert name not in UI_MODULES, f"{path.name} imports the UI module {module}"


def test_the_architecture_names_modules_that_exist():
    text = (CORE.parent / "ARCHITECTURE.md").read_text(encoding="utf-8")
    for name in ("core/train.py", "core/run_folder.py", "core/layouts/", "core/infer.py", "files.py",
                 "layer_meta.py", "widgets/_base.DockWidget"):
        assert name in text
        assert (CORE.parent / name.split(".DockWidget")[0].replace("widgets/_base", "widgets/_base.py")).exists(), name
