"""Target-style RAM while fine-tuning: unlabelled scans of the new site lend RAM partner amplitudes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import make_synthetic_domains
from napari_ramseg.cli import main
from napari_ramseg.core.models.checkpoint import load_model
from napari_ramseg.core.config import PreprocessConfig
from napari_ramseg.core.data.dataset import Sample
from napari_ramseg.core.method.sampling import SourcePool
from napari_ramseg.errors import RamsegInputError


def _pool(seed=0):
    rng = np.random.default_rng(seed)
    samples = {d: [Sample(rng.uniform(-0.5, 0.5, (3, 32, 32)).astype(np.float32), np.zeros((32, 32), np.uint8), d,
                          f"{d}{i}") for i in range(3)] for d in ("A", "B")}
    return SourcePool(samples, ["A", "B"], PreprocessConfig(size=32), scale_aug_p=0.0, seed=seed)


def test_style_images_become_the_partners_in_their_share():
    style = [torch.full((3, 40, 40), 0.9)]  # unmistakable: no source pixel is above 0.5
    pool = _pool()
    pool.set_style_images(style, 1.0)
    _, _, domains = pool.draw_batch(8)
    assert torch.allclose(pool.draw_partners(domains), torch.tensor(0.9))
    pool.set_style_images(style, 0.5)
    share = torch.cat([(pool.draw_partners(domains) > 0.8).all(dim=3).all(dim=2).all(dim=1) for _ in range(40)])
    assert 0.35 < share.float().mean() < 0.65  # about half the partners are the new site's
    with pytest.raises(ValueError, match="0..1"):
        pool.set_style_images(style, 1.5)


def test_without_style_images_the_pool_draws_as_before():
    plain, emptied = _pool(), _pool()
    emptied.set_style_images([], 0.7)  # no images: no extra random draws
    for _ in range(3):
        a, _, d = plain.draw_batch(4)
        b, _, _ = emptied.draw_batch(4)
        assert torch.equal(a, b) and torch.equal(plain.draw_partners(d), emptied.draw_partners(d))


def test_finetune_with_the_new_sites_unlabelled_scans(tmp_path, tiny_model, capsys):
    site = make_synthetic_domains(tmp_path / "site", domains=("siteC",), cases=3, size=40, seed=3)
    images = [str(site / "siteC" / "images" / f"case{i}.png") for i in range(3)]
    labels = [str(site / "siteC" / "labels" / f"case{i}.png") for i in range(3)]
    new_site = make_synthetic_domains(tmp_path / "new", domains=("siteD",), cases=2, size=44, seed=5)
    unlabelled = new_site / "siteD" / "images"
    out = tmp_path / "models"
    code = main(["finetune", "--model", str(tiny_model), "--images", *images, "--labels", *labels, "--out", str(out),
                 "--iterations", "2", "--device", "cpu", "--target-style", str(unlabelled),
                 "--target-style-share", "0.75"])
    assert code == 0, capsys.readouterr().err
    _, meta = load_model(out / "v001")
    assert meta.extra["finetune"]["target_style"] == {"folder": "images", "scans": 2, "images": 2, "share": 0.75}
    assert meta.config.method.ram and meta.config.method.consistency


def test_an_empty_style_folder_is_refused(tmp_path):
    from napari_ramseg.core.inference.adapt.target_style import load_style_images

    (tmp_path / "empty").mkdir()
    with pytest.raises(RamsegInputError, match="no readable images"):
        load_style_images(tmp_path / "empty")
