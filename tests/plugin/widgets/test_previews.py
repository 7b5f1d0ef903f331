"""Amplitude mixup preview and restoration preview, driven in a real napari viewer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from napari_ramseg.core.method.ram import window_bounds
from napari_ramseg.plugin.widgets._common import world_box
from napari_ramseg.plugin.widgets.mixup_preview import MixupPreviewWidget
from napari_ramseg.plugin.widgets.restoration_preview import LOW_PASS_LAYER, MASK_LAYER, RestorationPreviewWidget, low_pass

pytestmark = pytest.mark.gui
WAIT_MS = 60_000


def _fundus_like(shape=(40, 60), tint=(1.0, 0.5, 0.2), seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    disc = ((yy - shape[0] / 2) ** 2 + (xx - shape[1] / 2) ** 2 < (min(shape) / 2.2) ** 2)
    grey = 40 + 150 * disc + 30 * np.sin(xx / 3.0) + rng.normal(0, 8, shape)
    return np.clip(grey[..., None] * np.asarray(tint), 0, 255).astype(np.uint8)


def _right_edge(layer):
    origin, size = world_box(layer)
    return origin[1] + size[1]


@pytest.fixture
def mixup(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(_fundus_like(), name="photo", scale=(2.0, 2.0), translate=(10.0, 5.0))
    viewer.add_image(_fundus_like((50, 50), tint=(0.3, 0.9, 1.0), seed=1)[..., 1], name="other site")
    widget = MixupPreviewWidget(viewer)
    widget.image_combo.set_layer(viewer.layers["photo"])
    widget.set_partners(["other site"])
    return widget


def test_mixup_changes_the_image_and_lam_one_gives_it_back(mixup):
    viewer = mixup.viewer
    mixup.set_params(window_ratio=0.2, lam=0.0, samples=1)
    assert mixup.update_preview()
    tiles = mixup.last_tiles
    assert tiles.shape == (2, 40, 60, 3)  # original + one partner, at the image's size (under 256 px)
    assert np.abs(tiles[1] - tiles[0]).mean() > 0.01

    mixup.set_params(lam=1.0)
    assert mixup.update_preview()
    np.testing.assert_allclose(mixup.last_tiles[1], mixup.last_tiles[0], atol=1e-4)

    # preview layers sit to the right of the image, tiles at the image's world size; no overlap
    photo = viewer.layers["photo"]
    mosaic, spectra = viewer.layers["mixup: photo"], viewer.layers["spectra: photo"]
    assert mosaic.rgb and mosaic.data.shape[0] == 40 and mosaic.data.shape[1] > 2 * 60
    assert world_box(mosaic)[0][1] > _right_edge(photo)
    np.testing.assert_allclose(mosaic.scale, photo.scale)
    assert world_box(spectra)[0][0] > world_box(mosaic)[0][0] + world_box(mosaic)[1][0] - 1e-6
    window = viewer.layers["mixing window: photo"]
    assert window.nshapes == 2 and set(window.shape_type) == {"rectangle"}
    r0, r1, c0, c1 = window_bounds(40, 60, 0.2)
    corners = window.data[0]
    np.testing.assert_allclose(corners[:, 0].min() + 0.5, r0)
    np.testing.assert_allclose(corners[:, 0].max() + 0.5, r1)
    np.testing.assert_allclose(corners[:, 1].min() + 0.5, c0)
    full, shown = mixup.canvas.caption_texts()
    assert full == ["original", "1 · other site", "|F| original", "|F| 1"]
    assert list(viewer.layers["mixup captions: photo"].features["caption"]) == shown
    assert all(s == f or (s.endswith("…") and f.startswith(s[:-1])) for s, f in zip(shown, full))
    assert "1 · other site" in mixup.legend.text()
    # preview layers are not offered as inputs or partners
    assert "mixup: photo" not in [mixup.image_combo.itemText(i) for i in range(mixup.image_combo.count())]


def test_sliders_update_live_and_fast(mixup, qtbot):
    mixup.set_params(window_ratio=0.1, lam=0.5)
    assert mixup.update_preview()
    before = mixup.last_tiles.copy()
    mixup.lam_slider.setValue(5)  # as a user drags: debounced, then recomputed
    qtbot.waitUntil(lambda: not np.allclose(mixup.last_tiles, before), timeout=5000)
    assert "λ = 0.05" in mixup.status.text()
    # a slider update re-uses the cached inputs; well under a second even on a busy CI machine
    times = []
    for lam in (0.2, 0.4, 0.6):
        mixup.set_params(lam=lam)
        mixup.update_preview()
        times.append(mixup.last_update_ms)
    assert min(times) < 1000


def test_several_partners_from_a_folder(mixup, tmp_path, qtbot):
    for i, tint in enumerate([(0.2, 0.2, 1.0), (1.0, 1.0, 0.1), (0.5, 1.0, 0.5)]):
        Image.fromarray(_fundus_like((64, 64), tint=tint, seed=i)).save(tmp_path / f"p{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    mixup.set_partners(tmp_path)
    mixup.set_params(samples=2, lam=0.0)
    mixup.load_folder(run_sync=False)
    qtbot.waitUntil(lambda: not mixup.runner.busy, timeout=WAIT_MS)
    assert mixup.runner.last_outcome == "done"
    assert mixup.last_tiles.shape[0] == 3  # original + the first two images of the folder
    assert not np.allclose(mixup.last_tiles[1], mixup.last_tiles[2])
    assert mixup.viewer.layers["mixing window: photo"].nshapes == 3
    assert mixup.samples_spin.maximum() == 3  # the folder holds three images


def test_samples_never_exceed_the_partners_and_three_captions_do_not_collide(mixup):
    viewer = mixup.viewer
    for i, tint in enumerate([(0.2, 0.2, 1.0), (1.0, 1.0, 0.1)]):
        viewer.add_image(_fundus_like((50, 70), tint=tint, seed=5 + i), name=f"scanner {i} of another site")
    mixup.set_partners(["other site", "scanner 0 of another site", "scanner 1 of another site"])
    mixup.set_params(samples=3)
    assert mixup.update_preview()
    assert mixup.samples_spin.maximum() == 3 and mixup.samples_spin.value() == 3
    assert mixup.last_tiles.shape[0] == 4
    mixup.set_params(samples=8)
    assert mixup.samples_spin.value() == 3  # clamped to the three partners
    mixup.set_partners(["other site", "scanner 0 of another site"])
    assert mixup.samples_spin.value() == 2 and mixup.samples_spin.maximum() == 2

    mixup.set_partners(["other site", "scanner 0 of another site", "scanner 1 of another site"])
    assert mixup.samples_spin.value() == 3  # at its maximum, it follows a new partner
    assert mixup.update_preview()
    from napari_ramseg.plugin.widgets._common import CAPTION_CHAR_PX

    mosaic = viewer.layers["mixup: photo"]
    for zoom in (viewer.camera.zoom, viewer.camera.zoom / 4):
        viewer.camera.zoom = zoom  # zooming out re-cuts the captions to their tiles
        tile_px = mixup.last_tiles.shape[2] * mosaic.scale[1] * zoom
        full, shown = mixup.canvas.caption_texts()
        assert len(full) == 8 and full[3] == "3 · scanner 1 of another site"
        assert all(len(text) * CAPTION_CHAR_PX <= tile_px or len(text) == 1 for text in shown)
    assert "3 · scanner 1 of another site" in mixup.legend.text()


def test_the_dock_says_what_lambda_means(mixup):
    text = mixup.lam_help.text()
    assert "λ = 1 gives the original back" in text and "own share" in text
    mixup.set_params(lam=0.3)
    assert mixup.update_preview()
    assert "30 % the image's own amplitude, 70 % the partner's" in mixup.status.text()


def test_mixup_without_partner_says_why(mixup, notifications):
    mixup.set_partners([])
    assert not mixup.update_preview(notify=True)
    assert "partner" in mixup.status.text()
    assert any("partner" in m for m in notifications())


def test_docked_through_the_plugin_updates_layers_in_place(make_napari_viewer):
    """Docked by napari, the widget sees the viewer through a proxy; layers must still be reused."""
    viewer = make_napari_viewer()
    viewer.add_image(_fundus_like(), name="photo")
    viewer.add_image(_fundus_like((30, 30), tint=(0.2, 1.0, 1.0)), name="other site")
    _, widget = viewer.window.add_plugin_dock_widget("napari-ramseg", "Amplitude mixup preview")
    widget.image_combo.set_layer("photo")
    widget.set_partners(["photo", "other site"])  # the image itself is never its own partner
    widget.set_params(lam=0.2, samples=3)
    assert widget.update_preview()
    assert widget.last_tiles.shape[0] == 2
    layers = {name: viewer.layers[name] for name in ("mixup: photo", "spectra: photo", "mixing window: photo")}
    widget.set_params(lam=0.6, window_ratio=0.3)
    assert widget.update_preview()
    for name, layer in layers.items():
        assert viewer.layers[name] is layer, name


def test_mixup_on_a_volume_uses_the_current_slice(make_napari_viewer):
    viewer = make_napari_viewer()
    volume = np.random.default_rng(0).random((5, 30, 30), dtype=np.float32)
    viewer.add_image(volume, name="vol")
    viewer.add_image(_fundus_like((30, 30)), name="style")
    widget = MixupPreviewWidget(viewer)
    widget.image_combo.set_layer(viewer.layers["vol"])
    widget.set_partners(["style"])
    viewer.dims.set_current_step(0, 3)
    widget.set_params(lam=1.0)
    assert widget.update_preview()
    from napari_ramseg.plugin.widgets.mixup_preview import to_preview

    expected = ((to_preview(volume[3]).permute(1, 2, 0).numpy() + 1) / 2).clip(0, 1)
    np.testing.assert_allclose(widget.last_tiles[0], expected, atol=1e-5)


def test_restoration_one_layer_per_source_domain(make_napari_viewer, tiny_model, qtbot):
    from napari_ramseg.core.models.checkpoint import load_metadata

    domains = load_metadata(tiny_model).domains
    viewer = make_napari_viewer()
    photo = viewer.add_image(_fundus_like((36, 52)), name="photo", scale=(0.5, 0.5), translate=(2.0, 3.0))
    widget = RestorationPreviewWidget(viewer)
    widget.set_model(tiny_model)
    widget.image_combo.set_layer(photo)
    widget.restore(run_sync=False)
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=WAIT_MS)
    assert widget.runner.last_outcome == "done"

    restored = [layer for layer in viewer.layers if layer.name.startswith("restored as ")]
    assert [layer.name for layer in restored] == [f"restored as {d}" for d in domains]
    mask = viewer.layers[MASK_LAYER]
    assert mask.data.shape == (36, 52)
    photo_origin, photo_size = world_box(photo)
    assert world_box(mask)[0][1] >= _right_edge(photo) - 1e-6  # the mask beside the input
    left = -np.inf
    for layer in restored:  # the restorations in a row below, side by side
        origin, size = world_box(layer)
        assert origin[0] >= photo_origin[0] + photo_size[0] - 1e-6
        assert origin[1] >= left - 1e-6
        np.testing.assert_allclose(size, photo_size)
        left = origin[1] + size[1]
    for layer in restored:
        assert layer.rgb and 0.0 <= layer.data.min() and layer.data.max() <= 1.0
    # the input blurred to the decoder's scale opens the lower row, for a fair comparison
    blurred = viewer.layers[LOW_PASS_LAYER]
    assert blurred.data.shape == restored[0].data.shape
    np.testing.assert_allclose(world_box(blurred)[0][1], world_box(mask)[0][1])  # under the mask
    assert world_box(restored[0])[0][1] > world_box(blurred)[0][1] + world_box(blurred)[1][1] - 1e-6
    full = widget._captions.texts
    assert full == ["predicted mask", "input at 1/16", *[f"as {d}" for d in domains]]
    assert list(viewer.layers["restoration captions"].features["caption"]) == widget._captions.shown()
    # the dock says honestly what the restorations can show
    assert "1/16" in widget.explanation.text() and "cannot" in widget.explanation.text()
    assert "not fine detail" in widget.runner.status.text()
    # running again updates the same layers
    n = len(viewer.layers)
    widget.restore(run_sync=True)
    assert len(viewer.layers) == n


def test_restoration_on_a_volume_slice(make_napari_viewer, tiny_model):
    viewer = make_napari_viewer()
    vol = viewer.add_image(np.random.default_rng(2).random((6, 32, 32), dtype=np.float32), name="vol")
    viewer.dims.set_current_step(0, 4)
    widget = RestorationPreviewWidget(viewer)
    widget.set_model(tiny_model)
    widget.image_combo.set_layer(vol)
    widget.restore(run_sync=True)
    assert viewer.layers[MASK_LAYER].data.shape == (32, 32)
    assert "slice 4" in widget.runner.status.text()


def test_restoration_of_a_volume_sees_one_input_for_every_tile(make_napari_viewer, tiny_model, monkeypatch):
    """The restorations, the blurred input and the mask of a volume slice are all made from one input:
    the 2.5D slice normalised over the volume, as the Segment dock sees it (it used to be normalised
    again per slice for the restorations, and not for the mask)."""
    from napari_ramseg.core.inference.predictor import Predictor
    from napari_ramseg.core.data.preprocess import volume_to_slices_25d
    from napari_ramseg.plugin.widgets._common import get_predictor
    from napari_ramseg.plugin.widgets.restoration_preview import low_pass_prepared, to_display

    seen: dict[str, tuple] = {}
    for name in ("restore_prepared", "predict_prepared"):
        original = getattr(Predictor, name)

        def spy(self, x, shape=None, _name=name, _original=original):
            seen[_name] = (x.clone(), shape)
            return _original(self, x, shape)

        monkeypatch.setattr(Predictor, name, spy)
    rng = np.random.default_rng(5)
    volume = (rng.random((6, 32, 32), dtype=np.float32) * np.linspace(1, 40, 6, dtype=np.float32)[:, None, None])
    viewer = make_napari_viewer()
    layer = viewer.add_image(volume, name="vol")
    viewer.dims.set_current_step(0, 4)
    widget = RestorationPreviewWidget(viewer)
    widget.set_model(tiny_model)
    widget.image_combo.set_layer(layer)
    widget.restore(run_sync=True)
    assert widget.runner.last_outcome == "done"

    expected = volume_to_slices_25d(volume)[4]  # slices 3, 4, 5, normalised over the whole volume
    (restore_input, restore_shape), (mask_input, mask_shape) = seen["restore_prepared"], seen["predict_prepared"]
    np.testing.assert_array_equal(restore_input.numpy(), expected)
    np.testing.assert_array_equal(mask_input.numpy(), expected)
    assert restore_shape == mask_shape
    blurred = to_display(low_pass_prepared(torch.from_numpy(expected), restore_shape, 16))
    np.testing.assert_allclose(viewer.layers[LOW_PASS_LAYER].data, blurred, atol=1e-6)
    # the mask is the Segment dock's prediction of that slice
    segment = get_predictor(tiny_model, widget.device_combo.value()).predict_volume(volume).labels[4]
    assert (viewer.layers[MASK_LAYER].data == segment).mean() > 0.99


def test_low_pass_keeps_the_coarse_image_and_drops_detail():
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:64, :96]
    coarse = (xx / 96.0 * 200).astype(np.float32)
    noisy = coarse + rng.normal(0, 40, coarse.shape).astype(np.float32)
    out = low_pass(noisy, (64, 96), 16, 1)
    assert out.shape == (1, 64, 96) and -1.0 <= out.min() and out.max() <= 1.0
    assert np.abs(np.diff(out[0], axis=0)).mean() < 0.05  # smooth: the noise is gone
    assert out[0, :, -8:].mean() > out[0, :, :8].mean() + 0.5  # the left-to-right ramp survives


def _visible_box(viewer):
    """The world (y, x) box the 2D canvas shows now."""
    camera = viewer.camera
    half = np.asarray(viewer.canvas.size, dtype=float) / (2 * camera.zoom)
    center = np.asarray(camera.center)[-2:]
    return center - half, center + half


def _layer_box(layer):
    if layer.name.startswith(("mixup: ", "spectra: ", "restored as ")) or layer.name in (MASK_LAYER, LOW_PASS_LAYER):
        origin, size = world_box(layer)
        return origin, origin + size
    extent = np.asarray(layer.extent.world)[:, -2:]
    return extent[0], extent[1]


def _group_box(viewer, names):
    """The world box of a preview's layers, found by their names (as the user sees them)."""
    boxes = [_layer_box(layer) for layer in viewer.layers if names(layer.name)]
    assert boxes
    return np.min([b[0] for b in boxes], axis=0), np.max([b[1] for b in boxes], axis=0)


def _mixup_layers(name):
    return name in ("mixup: photo", "spectra: photo", "mixing window: photo", "mixup captions: photo")


def _restoration_layers(name):
    return name.startswith("restored as ") or name in (MASK_LAYER, LOW_PASS_LAYER, "restoration captions")


def _overlaps(a, b):
    return bool(np.all(a[0] < b[1]) and np.all(b[0] < a[1]))


def _inside(inner, outer, tol=1e-6):
    return bool(np.all(inner[0] >= outer[0] - tol) and np.all(inner[1] <= outer[1] + tol))


def test_mixup_and_restoration_of_one_image_each_get_a_place_of_their_own(make_napari_viewer, tiny_model):
    """Issue 29, finding 1: each preview has its own place, in view when made, uncovered, captions apart."""
    viewer = make_napari_viewer()
    photo = viewer.add_image(_fundus_like((40, 60)), name="photo")
    big = viewer.add_image(_fundus_like((300, 450), tint=(0.9, 0.4, 0.3), seed=4), name="HRF partner")
    viewer.layers.move(viewer.layers.index(big), len(viewer.layers))  # opened last: on top of everything
    viewer.add_image(_fundus_like((20, 20), seed=6)[..., 0], name="small partner")  # over the photo only
    viewer.add_image(np.zeros((10, 10)), name="unrelated", translate=(0.0, 1000.0))
    viewer.camera.center, viewer.camera.zoom = (150.0, 225.0), 1.0  # as the user left it: on the partner
    mixup = MixupPreviewWidget(viewer)
    mixup.image_combo.set_layer(photo)
    mixup.set_partners(["HRF partner", "small partner"])
    mixup.set_params(samples=2)
    assert mixup.update_preview(notify=True)  # the Preview button
    mix_box = _group_box(viewer, _mixup_layers)
    assert _inside(mix_box, _visible_box(viewer))  # the view went to the tiles
    assert not viewer.layers["HRF partner"].visible  # it covered them: hidden, and the dock says so
    assert not viewer.layers["small partner"].visible  # a partner over the image itself
    assert viewer.layers["unrelated"].visible and photo.visible
    assert "'HRF partner'" in mixup.status.text()

    rest = RestorationPreviewWidget(viewer)
    rest.set_model(tiny_model)
    rest.image_combo.set_layer(photo)
    rest.restore(run_sync=True)
    assert rest.runner.last_outcome == "done"
    rest_box = _group_box(viewer, _restoration_layers)
    assert not _overlaps(rest_box, mix_box)
    assert _inside(rest_box, _visible_box(viewer))
    assert not _overlaps(rest_box, (world_box(photo)[0], world_box(photo)[0] + world_box(photo)[1]))
    # no caption of one preview lies on the other's tiles
    for captions, other in (("restoration captions", mix_box), ("mixup captions: photo", rest_box)):
        for point in viewer.layers[captions].data:
            assert not _inside((point, point), other), (captions, point)
    # a live update (a slider) keeps the place and the user's view
    viewer.camera.zoom = viewer.camera.zoom * 3
    zoom = viewer.camera.zoom
    mixup.set_params(lam=0.1)
    assert mixup.update_preview()
    assert viewer.camera.zoom == zoom
    np.testing.assert_allclose(_group_box(viewer, _mixup_layers)[0], mix_box[0])
