"""Fine-tuning from corrections: new versions, base untouched, stop leaves nothing, fixed held-out cases."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from helpers import make_synthetic_domains
from napari_ramseg.core.models.checkpoint import load_model
from napari_ramseg.core.config import FinetuneConfig, PreprocessConfig
from napari_ramseg.core.finetune.corrections import CorrectionStore
from napari_ramseg.core.data.dataset import Sample
from napari_ramseg.core.finetune.round import CORRECTIONS_DOMAIN, CorrectionPool, finetune, iter_finetune, next_version
from napari_ramseg.core.inference.predictor import Predictor
from napari_ramseg.errors import RamsegInputError
from napari_ramseg.io import read_image, read_mask


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture()
def corrections(tmp_path, tiny_model) -> CorrectionStore:
    """Four corrected cases from an unseen site; the third is held out."""
    site = make_synthetic_domains(tmp_path / "site", domains=("siteC",), cases=4, size=40, seed=7)
    predictor = Predictor.from_path(tiny_model, device="cpu")
    store = CorrectionStore(tmp_path / "project")
    for i in range(4):
        image = read_image(site / "siteC" / "images" / f"case{i}.png").array
        final = read_mask(site / "siteC" / "labels" / f"case{i}.png")
        store.save(image, predictor.predict(image).labels, final, tiny_model, f"case{i}")
    return store


def test_finetune_writes_new_versions_and_never_touches_the_base(tmp_path, tiny_model, synthetic_data, corrections):
    base_files = _hashes(tiny_model)
    out = tmp_path / "models"
    events = []
    first = finetune(tiny_model, corrections, out, FinetuneConfig(iterations=3, device="cpu"), replay_root=synthetic_data,
                     on_event=events.append)
    assert first.model_dir == out / "v001" and first.version == "v001" and first.round == 1 and not first.stopped
    assert [e.iteration for e in events if e.phase == "train"] == [1, 2, 3]
    val = corrections.latest_cases("val")
    assert first.val_cases == val and len(val) == 1 and set(first.train_cases).isdisjoint(val)
    assert 0.0 <= first.before_dice <= 1.0 and 0.0 <= first.after_dice <= 1.0

    second = finetune(first.model_dir, corrections, out, FinetuneConfig(iterations=2, device="cpu"))
    assert second.model_dir == out / "v002" and second.round == 2
    assert sorted(p.name for p in out.iterdir()) == ["v001", "v002"]  # no temporary folder left
    assert _hashes(tiny_model) == base_files

    base_w, new_w = load_file(str(tiny_model / "model.safetensors")), load_file(str(out / "v001" / "model.safetensors"))
    assert set(base_w) == set(new_w)
    assert any(not np.array_equal(base_w[k].numpy(), new_w[k].numpy()) for k in base_w if k.startswith("encoder"))
    # DSIR is off while fine-tuning: the restoration decoder is carried over exactly
    assert all(np.array_equal(base_w[k].numpy(), new_w[k].numpy()) for k in base_w if k.startswith("restoration"))
    model, meta = load_model(out / "v002")
    record = json.loads((out / "v002" / "model.json").read_text())["finetune"]
    assert record["parent_model"] == str((out / "v001").resolve()) and record["parent_version"] == "v001"
    assert record["round"] == 2 and record["version"] == "v002"
    assert record["cases_val"] == val and record["cases_train"] == first.train_cases
    assert record["lineage"] == [str(tiny_model.resolve()), str((out / "v001").resolve())]
    base_lr = load_model(tiny_model)[1].config.lr
    # the round's rate is the source rate times FinetuneConfig.lr_scale, never compounded over rounds
    assert record["lr"] == pytest.approx(base_lr * FinetuneConfig().lr_scale) and record["source_lr"] == base_lr
    v1 = json.loads((out / "v001" / "model.json").read_text())
    assert v1["finetune"]["replay"]["domains"] == ["siteA", "siteB"]
    assert v1["finetune"]["before_dice"] == pytest.approx(first.before_dice)
    assert v1["metrics"]["heldout_corrections"]["after_dice"] == pytest.approx(first.after_dice)
    assert v1["source_domains"] == meta.domains == ["siteA", "siteB"]


def test_a_stopped_finetune_leaves_no_version_and_no_temporary_folder(tmp_path, tiny_model, corrections):
    out = tmp_path / "models"
    steps = []
    result = finetune(tiny_model, corrections, out, FinetuneConfig(iterations=50, device="cpu"),
                      on_event=lambda e: steps.append(e.iteration) if e.phase == "train" else None,
                      should_stop=lambda: len(steps) >= 2)
    assert result.stopped and result.model_dir is None and len(steps) == 2
    assert not out.exists() or list(out.iterdir()) == []
    # a generator abandoned halfway (e.g. the widget closed) leaves nothing either
    gen = iter_finetune(tiny_model, corrections, out, FinetuneConfig(iterations=50, device="cpu"))
    for event in gen:
        if event.phase == "train":
            break
    gen.close()
    assert not out.exists() or list(out.iterdir()) == []
    assert next_version(out) == "v001"


def test_corrections_fill_half_of_each_replay_batch():
    rng = np.random.default_rng(0)

    def samples(domain):
        return [Sample(rng.normal(size=(3, 32, 32)).astype(np.float32), np.zeros((32, 32), np.uint8), domain, f"{domain}{i}")
                for i in range(2)]

    pool = CorrectionPool({"A": samples("A"), "B": samples("B"), CORRECTIONS_DOMAIN: samples("c")},
                          ["A", "B", CORRECTIONS_DOMAIN], PreprocessConfig(size=32), correction_share=0.5)
    slots = pool.batch_domains(8)
    assert (slots == 2).sum() == 4 and (slots == 0).sum() == 2 and (slots == 1).sum() == 2
    default = CorrectionPool({"A": samples("A"), "B": samples("B"), CORRECTIONS_DOMAIN: samples("c")},
                             ["A", "B", CORRECTIONS_DOMAIN], PreprocessConfig(size=32))
    share = FinetuneConfig().correction_share
    assert (default.batch_domains(8) == 2).sum() == round(8 * share)
    alone = CorrectionPool({CORRECTIONS_DOMAIN: samples("c")}, [CORRECTIONS_DOMAIN], PreprocessConfig(size=32))
    assert alone.batch_domains(3).tolist() == [0, 0, 0]


def test_finetune_needs_training_corrections(tmp_path, tiny_model):
    with pytest.raises(RamsegInputError, match="no corrected training cases"):
        finetune(tiny_model, CorrectionStore(tmp_path / "empty"), tmp_path / "models",
                 FinetuneConfig(iterations=2, device="cpu"))
    assert not (tmp_path / "models").exists()


def test_a_finetuned_optic_disc_model_keeps_its_two_stage_settings(tmp_path, tiny_model, corrections):
    """The locator's settings were chosen for the base's sources; corrections do not re-choose them."""
    from napari_ramseg.core.models.checkpoint import write_disc_settings

    base = tmp_path / "base"
    base.mkdir()
    for f in tiny_model.iterdir():
        (base / f.name).write_bytes(f.read_bytes())
    write_disc_settings(base, {"coarse_long_side": 384, "refine_crops": 2})
    result = finetune(base, corrections, tmp_path / "models", FinetuneConfig(iterations=1, device="cpu"))
    assert load_model(result.model_dir, "cpu")[1].disc == {"coarse_long_side": 384, "refine_crops": 2}
    plain = finetune(tiny_model, corrections, tmp_path / "plain", FinetuneConfig(iterations=1, device="cpu"))
    assert "disc" not in json.loads((plain.model_dir / "model.json").read_text())
