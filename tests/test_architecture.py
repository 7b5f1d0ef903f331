"""The layering napari_ramseg/ARCHITECTURE.md draws, as import-linter contracts (pyproject.toml's
[tool.importlinter]): the core never imports Qt, napari or the layers above it; entry points, the
napari side, export, the core and the readers import only downwards; the server runs without Qt."""

from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[1] / "napari_ramseg" / "core"


def test_the_import_contracts_hold(capsys, monkeypatch):
    lint = pytest.importorskip("importlinter.cli", reason="import-linter is in the test extra")
    monkeypatch.chdir(CORE.parents[1])  # the contracts live in the project's pyproject.toml
    code = lint.lint_imports(no_cache=True, no_logo=True)
    assert code == 0, capsys.readouterr().out[-3000:]


def test_a_broken_contract_is_caught(tmp_path, monkeypatch):
    """The contract is not vacuous: a core module importing napari breaks it."""
    lint = pytest.importorskip("importlinter.cli")
    package = tmp_path / "toy"
    (package / "core").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "core" / "__init__.py").write_text("")
    (package / "widgets.py").write_text("")
    (package / "core" / "engine.py").write_text("from .. import widgets\n")
    (tmp_path / "pyproject.toml").write_text(
        '[tool.importlinter]\nroot_package = "toy"\n[[tool.importlinter.contracts]]\nname = "core below"\n'
        'type = "forbidden"\nsource_modules = ["toy.core"]\nforbidden_modules = ["toy.widgets"]\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert lint.lint_imports(no_cache=True, no_logo=True) == 1


def test_the_architecture_names_modules_that_exist():
    text = (CORE.parent / "ARCHITECTURE.md").read_text(encoding="utf-8")
    for name in ("core/training/trainer.py", "core/models/run_folder.py", "core/data/layouts/",
                 "core/inference/predictor.py", "files.py", "plugin/layer_meta.py", "plugin/widgets/_base.DockWidget"):
        assert name in text
        assert (CORE.parent / name.split(".DockWidget")[0].replace("plugin/widgets/_base", "plugin/widgets/_base.py")).exists(), name
