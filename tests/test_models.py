"""The model zoo: bundled models by name, the default alias, model cards, clear errors for unknown names."""

import pytest

from napari_ramseg import models
from napari_ramseg.cli import main
from napari_ramseg.errors import RamsegInputError


def test_bundled_names_and_the_default_alias_resolve():
    assert "vessels" in models.bundled_models()
    vessels = models.resolve_model("vessels")
    assert vessels == models.BUNDLED_ROOT / "vessels" and (vessels / "model.safetensors").is_file()
    for alias in ("default", "DEFAULT", "bundled", " Vessels "):
        assert models.resolve_model(alias) == vessels
    assert models.bundled_model_path() == vessels


def test_every_bundled_model_has_a_card_with_its_facts():
    for name in models.bundled_models():
        card = models.model_card(name)
        assert card is not None and card.name == "MODEL.md", name
        text = card.read_text()
        for heading in ("Intended use", "Training data", "Command", "Metrics", "Known limits"):
            assert f"## {heading}" in text, (name, heading)


def test_an_unknown_name_is_one_line_listing_the_models(tmp_path, capsys):
    with pytest.raises(RamsegInputError, match=r"no bundled model named 'retina-xl'.*bundled models: .*vessels \(default\)"):
        models.resolve_model("retina-xl")
    image = tmp_path / "scan.png"
    image.write_bytes(b"")
    assert main(["predict", "--model", "retina-xl", "--input", str(image), "--output", str(tmp_path / "m.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ramseg: error: ") and "vessels (default)" in err[0]


def test_paths_are_still_paths(tmp_path):
    assert models.resolve_model(tmp_path) == tmp_path
    assert models.resolve_model(tmp_path / "run" / "model.safetensors") == tmp_path / "run" / "model.safetensors"


def test_a_missing_bundled_model_says_it_is_not_installed(tmp_path, monkeypatch):
    (tmp_path / "vessels").mkdir()
    (tmp_path / "vessels" / "model.json").write_text("{}")
    monkeypatch.setattr(models, "BUNDLED_ROOT", tmp_path)
    with pytest.raises(RamsegInputError, match="bundled model 'vessels' is not installed"):
        models.resolve_model("default")
