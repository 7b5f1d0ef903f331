"""Photometric augmentation beside RAM (issue 28's recipe option): what a draw does to an image, that it is
off by default without touching the random stream, and that distributed ranks still draw slices of the
one-process batch."""

from __future__ import annotations

import numpy as np
import torch

from napari_ramseg.core.config import PreprocessConfig
from napari_ramseg.core.data.photometric import PhotometricDraw, apply_photometric, draw_photometric
from napari_ramseg.core.method.sampling import SourcePool

from helpers import square_samples


def _image(seed: int = 0) -> torch.Tensor:
    return torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_p_zero_draws_nothing_and_consumes_no_randomness():
    rng = np.random.default_rng(3)
    assert draw_photometric(rng, 0.0, 3) is None
    assert rng.random() == np.random.default_rng(3).random()


def test_every_draw_stays_in_range_and_changes_the_image():
    rng = np.random.default_rng(0)
    image = _image()
    draws = [draw_photometric(rng, 1.0, 3) for _ in range(50)]
    assert all(d is not None for d in draws)
    assert any(d.blur_sigma > 0 for d in draws) and any(d.noise_std > 0 for d in draws)
    for draw in draws:
        out = apply_photometric(image, draw)
        assert out.shape == image.shape and out.dtype == image.dtype
        assert float(out.min()) >= -1.0 and float(out.max()) <= 1.0
        assert not torch.equal(out, image)


def test_the_identity_draw_returns_the_image():
    identity = PhotometricDraw(brightness=0.0, contrast=1.0, gamma=1.0, colour=(1.0, 1.0, 1.0), blur_sigma=0.0,
                               noise_std=0.0, noise_seed=0)
    image = _image(1)
    assert torch.allclose(apply_photometric(image, identity), image, atol=1e-6)
    assert apply_photometric(image, None) is image


def test_gamma_above_one_darkens_the_mid_tones():
    darker = PhotometricDraw(0.0, 1.0, 1.5, (1.0, 1.0, 1.0), 0.0, 0.0, 0)
    grey = torch.zeros(3, 8, 8)  # 0.5 in [0, 1]
    out = apply_photometric(grey, darker)
    # gamma 1.5 takes 0.5 to 0.354 in [0, 1]; the contrast step keeps a flat image flat
    assert torch.allclose(out, torch.full_like(grey, 2 * 0.5**1.5 - 1), atol=1e-5)


def test_the_pool_changes_training_slots_only_when_asked():
    plain = SourcePool(square_samples(), ["A", "B", "C"], PreprocessConfig(size=32), seed=5)
    same = SourcePool(square_samples(), ["A", "B", "C"], PreprocessConfig(size=32), seed=5, photometric_p=0.0)
    changed = SourcePool(square_samples(), ["A", "B", "C"], PreprocessConfig(size=32), seed=5, photometric_p=1.0)
    a, b, c = plain.draw_batch(6), same.draw_batch(6), changed.draw_batch(6)
    assert torch.equal(a[0], b[0])  # off by default: the batch a run drew before the option existed
    assert torch.equal(a[1][0], c[1][0]) and torch.equal(a[2], c[2])  # the first crop is drawn before any change
    assert not torch.equal(a[0], c[0])


def test_ranks_still_draw_slices_of_the_one_process_batch_with_photometric_changes():
    def pool():
        return SourcePool(square_samples(), ["A", "B", "C"], PreprocessConfig(size=32), seed=5, photometric_p=0.8)

    single, ranks = pool(), [pool(), pool()]
    for _ in range(3):
        images, masks, domains = single.draw_batch(6)
        partners = single.draw_partners(domains)
        for rank, ranked in enumerate(ranks):
            shard = ranked.draw_shard(6, rank, 2)
            assert torch.equal(shard.images, images[shard.slots])
            assert torch.equal(shard.partners, partners[shard.slots])
