"""The fit check: source profiles in model.json, the score, its threshold, older model.json files, volume spacing."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_ramseg.core.shift import domain_fit
from napari_ramseg.core.models.checkpoint import ModelMetadata, load_metadata, load_model, portable_command
from napari_ramseg.core.config import FIT, ModelConfig, PreprocessConfig, TrainConfig
from napari_ramseg.core.labels import PROSTATE
from napari_ramseg.core.data.dataset import Sample
from napari_ramseg.core.shift.domain_fit import calibrate, fit_score, profile_domains
from napari_ramseg.core.inference.predictor import Predictor
from napari_ramseg.core.method.model import RamSegNet
from napari_ramseg.core.shift.source_profile import SourceProfile
from napari_ramseg.errors import RamsegInputError


def _grey_volume(shape=(12, 48, 48), seed=0):
    """Something MRI-like: a bright ellipsoid in grey noise."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:shape[0], :shape[1], :shape[2]]
    blob = ((z - shape[0] / 2) / (shape[0] / 3)) ** 2 + ((y - shape[1] / 2) / 12) ** 2 + ((x - shape[2] / 2) / 15) ** 2
    return (400 + 900 * (blob < 1) + rng.normal(0, 80, shape)).astype(np.float32)


def _source_images(data: Path):
    return {p: np.array(Image.open(p)) for p in sorted(data.glob("*/images/*.png"))}


def test_wrong_modality_warns(tiny_model):
    meta = load_metadata(tiny_model)
    assert meta.source_profile is not None  # training recorded it
    volume = fit_score(meta, _grey_volume())
    assert not volume.fits and volume.kind == "grey 3D volume"
    assert volume.differs.startswith("grey 3D volume (fit ")
    assert volume.differs.endswith("the model was trained on colour 2D images (siteA, siteB)")
    grey = fit_score(meta, _grey_volume()[6])
    assert not grey.fits and grey.kind == "grey 2D image"


def test_own_source_domains_are_silent(tiny_model, synthetic_data):
    meta = load_metadata(tiny_model)
    results = [fit_score(meta, image) for image in _source_images(synthetic_data).values()]
    assert results and all(r.fits and r.differs == "" for r in results), [r.differs for r in results if r.differs]
    assert all(r.score >= meta.source_profile.threshold for r in results)


def test_an_image_of_the_right_kind_but_another_style_warns(tiny_model, synthetic_data):
    meta = load_metadata(tiny_model)
    image = next(iter(_source_images(synthetic_data).values()))
    washed = (255 - image // 4).astype(np.uint8)  # inverted, low contrast: same kind, another look
    result = fit_score(meta, washed)
    assert not result.fits and result.kind == "colour 2D image" and "far from the model's sources" in result.differs


def test_training_records_profile_threshold_and_data_by_name(tiny_model, synthetic_data):
    data = json.loads((tiny_model / "model.json").read_text())
    profile = data["source_profile"]
    assert list(profile["domains"]) == ["siteA", "siteB"]
    assert profile["calibration"]["method"] == "source_validation"
    assert profile["threshold"] == pytest.approx(FIT.margin * profile["calibration"]["lowest_score"], abs=1e-4)
    assert all(d["colour"] and not d["volume"] and d["spacing"] is None for d in profile["domains"].values())
    assert data["data"]["name"] == synthetic_data.name and len(data["data"]["sha256"]) == 64
    assert "root" not in data["data"] and str(synthetic_data) not in (tiny_model / "model.json").read_text()
    spectrum = load_metadata(tiny_model).source_profile.spectrum("siteA")  # what "adapt to the scan" reuses
    assert spectrum.dtype == np.float32 and spectrum.shape == (3, 33, 33)


def test_threshold_comes_from_the_validation_cases_alone():
    rng = np.random.default_rng(0)

    def sample(domain, name, scale):
        return Sample(np.clip(rng.normal(0, scale, (3, 40, 40)), -1, 1).astype(np.float32), None, domain, name)

    train = [sample("a", f"t{i}", 0.3) for i in range(6)]
    val = [sample("a", "v0", 0.3), sample("a", "v1", 0.5)]
    profile = profile_domains(train)
    assert profile.threshold == FIT.default_threshold and profile.calibration["method"] == "default"
    calibrated = calibrate(profile, val)
    scores = [domain_fit.judge(profile, domain_fit.case_features([s], profile.side, profile.window_ratio)).score
              for s in val]
    assert calibrated.threshold == pytest.approx(FIT.margin * min(scores))
    assert calibrated.calibration["cases"] == 2 and calibrate(profile, []) is profile


def test_profile_round_trips_and_bad_profiles_are_refused(tiny_model, tmp_path):
    data = json.loads((tiny_model / "model.json").read_text())
    profile = SourceProfile.from_dict(data["source_profile"], ["siteA", "siteB"])
    assert profile.to_dict() == data["source_profile"]

    def broken(change):
        raw = json.loads(json.dumps(data))
        change(raw["source_profile"])
        run = tmp_path / f"bad{len(list(tmp_path.iterdir()))}"
        run.mkdir()
        (run / "model.safetensors").write_bytes((tiny_model / "model.safetensors").read_bytes())
        (run / "model.json").write_text(json.dumps(raw))
        with pytest.raises(RamsegInputError, match="source_profile"):
            load_metadata(run)

    broken(lambda p: p["domains"]["siteA"]["spectrum_mean"].update(base64="AAAA"))
    broken(lambda p: p["domains"]["siteA"]["spectrum_std"].update(shape=[3, 999, 999]))
    broken(lambda p: p["domains"].pop("siteB"))
    broken(lambda p: p.update(side=10**6))
    broken(lambda p: p.update(threshold=2))
    broken(lambda p: p["domains"]["siteA"].update(spacing=[0, -1]))
    broken(lambda p: p["domains"]["siteA"].update(intensity_mean=["x"] * 10))


def _without_profile(tiny_model, tmp_path, data_format=None):
    raw = json.loads((tiny_model / "model.json").read_text())
    raw.pop("source_profile")
    if data_format:
        raw["data"]["format"] = data_format
    run = tmp_path / f"old-{data_format}"
    run.mkdir()
    (run / "model.safetensors").write_bytes((tiny_model / "model.safetensors").read_bytes())
    (run / "model.json").write_text(json.dumps(raw))
    return run


def test_an_older_model_json_still_loads_and_gets_the_weaker_check(tiny_model, tmp_path):
    old = _without_profile(tiny_model, tmp_path)
    model, meta = load_model(old)
    assert meta.source_profile is None
    result = Predictor(model, meta, "cpu").check_fit(_grey_volume())
    assert result.fits and result.score is None and result.check == "none"  # nothing recorded to check against
    volumes = load_metadata(_without_profile(tiny_model, tmp_path, "saml"))  # SAML: grey 3D volumes
    photo = np.random.default_rng(0).integers(0, 255, (40, 40, 3)).astype(np.uint8)
    assert fit_score(volumes, _grey_volume()).fits
    weak = fit_score(volumes, photo)
    assert not weak.fits and weak.check == "kind" and weak.differs.startswith("colour 2D image; the model was")


def test_portable_command_drops_machine_paths():
    assert portable_command("ramseg train --data /work/main/../shared/data/vessels --out runs/a --seed 0") == \
        "ramseg train --data vessels --out runs/a --seed 0"
    assert portable_command("ramseg train --data=../data/prostate/ --out /home/me/r") == \
        "ramseg train --data=prostate --out r"
    assert portable_command("napari Train widget") == "napari Train widget"


# -- volumes: the spacing a model was trained at ---------------------------------------------------

def _volume_predictor(preprocess, spacing=None):
    cfg = TrainConfig(labels=PROSTATE, model=ModelConfig(base_width=4, depth=3), preprocess=preprocess)
    profile = None
    if spacing is not None:
        samples = [Sample(np.zeros((3, 32, 32), np.float32), None, "a", "c", slice_index=j, spacing=(3.0, *spacing))
                   for j in range(3)]
        profile = profile_domains(samples)
    meta = ModelMetadata(cfg, ["a"], source_profile=profile)
    return Predictor(RamSegNet(cfg.model, cfg.labels, 1), meta, "cpu")


def _working_sizes(predictor, volume, **kwargs):
    seen = []
    original = predictor._probabilities
    predictor._probabilities = lambda x: (seen.append(tuple(x.shape[-2:])), original(x))[1]
    prediction = predictor.predict_volume(volume, **kwargs)
    assert prediction.labels.shape == volume.shape
    return set(seen)


def test_a_volume_keeps_its_own_size_without_a_recorded_spacing():
    # a fundus model's 540 px field-of-view scale is a photograph's: a 48x40 MRI slice is not upsampled to it
    predictor = _volume_predictor(PreprocessConfig(size=256, long_side=540))
    assert _working_sizes(predictor, _grey_volume((4, 48, 40)), spacing=(3.0, 0.5, 0.5)) == {(48, 40)}


def test_a_volume_is_predicted_at_the_spacing_its_model_was_trained_at():
    predictor = _volume_predictor(PreprocessConfig(size=32), spacing=(1.0, 1.0))
    assert predictor.metadata.source_profile.spacing == (1.0, 1.0)
    assert _working_sizes(predictor, _grey_volume((4, 48, 40)), spacing=(3.0, 0.5, 0.5)) == {(24, 20)}
    assert _working_sizes(predictor, _grey_volume((4, 48, 40))) == {(48, 40)}  # spacing unknown: its own size


def test_training_on_volumes_records_the_working_spacing(tmp_path):
    nib = pytest.importorskip("nibabel")
    from napari_ramseg.core.training.job import TrainRequest, run_training

    for k, site in enumerate(("siteA", "siteB")):
        (tmp_path / "data" / site).mkdir(parents=True)
        for i in range(2):
            volume = _grey_volume((6, 40, 40), seed=10 * k + i)
            mask = (volume > 900).astype(np.uint8)
            affine = np.diag([0.8, 0.8, 3.0, 1.0])  # x, y, z spacing
            nib.save(nib.Nifti1Image(volume.transpose(2, 1, 0), affine), tmp_path / "data" / site / f"c{i}.nii.gz")
            nib.save(nib.Nifti1Image(mask.transpose(2, 1, 0), affine),
                     tmp_path / "data" / site / f"c{i}_segmentation.nii.gz")
    run = tmp_path / "run"
    run_training(TrainRequest(data=tmp_path / "data", out=run, iterations=2, size=32, batch=2, base_width=4,
                              device="cpu", val_every=2))
    meta = load_metadata(run)
    profile = meta.source_profile
    assert all(d.volume and not d.colour for d in profile.domains.values())
    # 40 px at 0.8 mm were seen at 32 px: 1.0 mm per pixel
    assert profile.spacing == pytest.approx((1.0, 1.0))
    predictor = Predictor.from_path(run, device="cpu")
    assert predictor.volume_shape(40, 40, (3.0, 0.8, 0.8)) == (32, 32)
    assert fit_score(meta, _grey_volume((6, 40, 40), seed=5)).fits
    assert not fit_score(meta, np.random.default_rng(0).integers(0, 255, (40, 40, 3)).astype(np.uint8)).fits


# -- real data (skipped without ../shared/data) -----------------------------------------------------

def test_bundled_model_on_real_scans(shared_data):
    from napari_ramseg.io import read_image
    from napari_ramseg.models import bundled_model_path

    meta = load_metadata(bundled_model_path())
    assert meta.source_profile is not None and meta.source_profile.description == "colour fundus photographs"
    assert "/work/main" not in (bundled_model_path() / "model.json").read_text()
    assert "/shared/data" not in (bundled_model_path() / "model.json").read_text()
    for key in meta.extra["data"]["val_cases"][:2] + meta.extra["data"]["val_cases"][-2:]:  # HRF and STARE
        domain, name = key.split("/")
        path = next((shared_data / "vessels" / domain / "images").glob(f"{name}.*"))
        result = fit_score(meta, read_image(path).array)
        assert result.fits, (path, result)
    for path in (shared_data / "prostate_volume" / "Case00.nii.gz",
                 next((shared_data / "prostate_slices" / "RUNMC" / "images").glob("*.png"))):
        image = read_image(path)
        result = fit_score(meta, image.array, image.is_volume)
        assert not result.fits and "the model was trained on colour fundus photographs (HRF, STARE, CHASE_DB1)" in result.differs
