"""Prediction: any 2D size and channel layout, 2.5D volumes, tiling, value ranges, the fast path, no reloads."""

import numpy as np
import pytest
import torch
from torch import nn

from napari_ramseg.core.inference import predictor as infer
from napari_ramseg.core.models.checkpoint import ModelMetadata, save_model
from napari_ramseg.core.config import ModelConfig, PreprocessConfig, TrainConfig
from napari_ramseg.core.labels import OPTIC_DISC_CUP, PROSTATE, VESSELS
from napari_ramseg.core.inference.predictor import Predictor
from napari_ramseg.core.method.model import RamSegNet


def _net(labels=VESSELS, depth=4, seed=0):
    """A tiny (base width 4) network with non-trivial BatchNorm statistics, so that folding matters."""
    torch.manual_seed(seed)
    net = RamSegNet(ModelConfig(base_width=4, depth=depth), labels, num_domains=2)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.3, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.eval()


def _predictor(labels=VESSELS, preprocess=PreprocessConfig(size=32), depth=4, **kwargs):
    config = TrainConfig(labels=labels, model=ModelConfig(base_width=4, depth=depth), preprocess=preprocess)
    return Predictor(_net(labels, depth), ModelMetadata(config, ["a", "b"]), "cpu", **kwargs)


def _image(shape, seed=0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, shape).astype(dtype)


@pytest.mark.parametrize("preprocess", [PreprocessConfig(size=32), PreprocessConfig(size=32, long_side=50)])
@pytest.mark.parametrize("shape", [(37, 53), (37, 53, 3), (40, 29, 4), (16, 16, 3), (33, 97)])
def test_2d_any_size_and_channels(preprocess, shape):
    predictor = _predictor(OPTIC_DISC_CUP, preprocess)
    pred = predictor.predict(_image(shape))
    assert pred.labels.shape == shape[:2] and pred.labels.dtype == np.uint8
    assert pred.probabilities.shape == (2, *shape[:2]) and pred.probabilities.dtype == np.float32
    assert pred.entropy.shape == shape[:2]
    assert pred.channel_names == ["disc", "cup"]
    assert set(np.unique(pred.labels)) <= {0, 1, 2}


def test_grey_float_and_uint16_inputs():
    predictor = _predictor()
    for image in (_image((30, 41)).astype(np.float32) / 7, _image((30, 41)).astype(np.uint16) * 200):
        assert predictor.predict_image(image).labels.shape == (30, 41)


@pytest.mark.parametrize("labels", [VESSELS, OPTIC_DISC_CUP, PROSTATE])
def test_probabilities_and_entropy_in_unit_range(labels):
    pred = _predictor(labels).predict(_image((45, 38, 3)))
    assert np.isfinite(pred.probabilities).all()
    assert pred.probabilities.min() >= 0 and pred.probabilities.max() <= 1
    assert pred.entropy.min() >= 0 and pred.entropy.max() <= 1 + 1e-6
    if labels.kind == "exclusive":
        np.testing.assert_allclose(pred.probabilities.sum(axis=0), 1.0, atol=1e-5)
        assert pred.channel_names == ["background", "prostate"]


def test_volume_25d_shapes_progress_and_cancel():
    predictor = _predictor(PROSTATE, PreprocessConfig(size=24), slice_batch=3)
    volume = _image((7, 30, 26)).astype(np.int16)
    calls = []
    pred = predictor.predict(volume, progress=lambda done, total: calls.append((done, total)))
    assert pred.labels.shape == (7, 30, 26)
    assert pred.probabilities.shape == (2, 7, 30, 26) and pred.probabilities.flags.c_contiguous
    assert pred.entropy.shape == (7, 30, 26)
    assert calls == [(3, 7), (6, 7), (7, 7)]
    with pytest.raises(InterruptedError):
        predictor.predict_volume(volume, cancelled=lambda: True)
    with pytest.raises(Exception):
        predictor.predict_volume(volume[0])


def test_volume_batching_does_not_change_the_result():
    volume = _image((5, 32, 32)).astype(np.float32)
    one = _predictor(preprocess=PreprocessConfig(size=32), slice_batch=1).predict_volume(volume)
    many = _predictor(preprocess=PreprocessConfig(size=32), slice_batch=8).predict_volume(volume)
    np.testing.assert_allclose(one.probabilities, many.probabilities, atol=1e-4)


def test_volume_slice_equals_2d_prediction_of_its_neighbourhood():
    predictor = _predictor(preprocess=PreprocessConfig(size=32))
    volume = _image((4, 32, 32), seed=3).astype(np.float32)
    pred = predictor.predict_volume(volume)
    # slice 2 sees slices (1, 2, 3) as channels, normalised over the whole volume
    lo, hi = np.percentile(volume, (0.5, 99.5))
    x = np.clip((volume - lo) / (hi - lo) * 2 - 1, -1, 1).astype(np.float32)[1:4]
    probs = predictor.predict_prepared(torch.from_numpy(x))
    np.testing.assert_allclose(pred.probabilities[:, 2], probs.numpy(), atol=1e-4)


def test_one_slice_is_prepared_predicted_and_restored_as_the_volume_sees_it():
    """Predictor owns 2.5D slicing: prepare(volume, j) is slice j of predict_volume's input (normalised
    over the volume, once), predict_slice gives predict_volume's slice j, and restore_slice restores
    from that same input."""
    from napari_ramseg.core.data.preprocess import volume_to_slices_25d

    predictor = _predictor(preprocess=PreprocessConfig(size=24), slice_batch=1, precision="fp32")
    volume = (_image((5, 28, 36), seed=4).astype(np.float32) * np.arange(1, 6)[:, None, None])  # slices differ in range
    x = predictor.prepare(volume, 0)
    np.testing.assert_array_equal(x.numpy(), volume_to_slices_25d(volume)[0])
    np.testing.assert_array_equal(x[0].numpy(), x[1].numpy())  # the edge repeats itself
    whole = predictor.predict_volume(volume)
    for j in (0, 2, 4):
        one = predictor.predict_slice(volume, j)
        np.testing.assert_allclose(one.probabilities, whole.probabilities[:, j], atol=1e-5)
        np.testing.assert_array_equal(one.labels, whole.labels[j])
    # the volume's own in-plane size (no trained spacing), not the 2D working scale (24 x 24)
    assert predictor.input_shape(28, 36, volume=True) == (28, 36) and predictor.input_shape(28, 36) == (24, 24)
    restored = predictor.restore_slice(volume, 2)
    expected = predictor.restore_prepared(torch.from_numpy(volume_to_slices_25d(volume)[2]), (28, 36))
    assert set(restored) == {"a", "b"} and restored["a"].shape == (3, 28, 36)
    for name in restored:
        np.testing.assert_array_equal(restored[name], expected[name])
    with pytest.raises(Exception, match="outside"):
        predictor.prepare(volume, 5)


def test_tiled_path_matches_direct_path():
    # working scale 96x96 with tile 16: 96*96 > (2*16)^2, so the sliding window runs
    preprocess = PreprocessConfig(size=96)
    image = _image((96, 96, 3), seed=5)
    tiled = _predictor(preprocess=preprocess, depth=3, tile=32, tile_overlap=0.5)
    direct = _predictor(preprocess=preprocess, depth=3, tile=512)
    calls = []
    original = tiled._padded_logits
    tiled._padded_logits = lambda x: (calls.append(tuple(x.shape[-2:])), original(x))[1]
    a, b = tiled.predict_image(image), direct.predict_image(image)
    assert calls and all(c == (32, 32) for c in calls)
    diff = np.abs(a.probabilities - b.probabilities)
    # tiles see less context at their borders; Gaussian blending keeps the disagreement small
    assert diff.mean() < 0.02 and diff.max() < 0.3
    assert (a.labels == b.labels).mean() > 0.97


@pytest.mark.parametrize("labels", [VESSELS, OPTIC_DISC_CUP, PROSTATE])
def test_fast_path_matches_plain_eager_model(labels):
    # fp32 on every CPU: this checks that folding and channels_last change nothing (bf16 autocast,
    # on by default on CPUs with native bf16, is tested on its own in test_precision.py)
    fast = _predictor(labels, PreprocessConfig(size=48), precision="fp32")
    plain = _predictor(labels, PreprocessConfig(size=48), fast=False, precision="fp32")
    assert fast.fast and not plain.fast
    image = _image((61, 47, 3), seed=2)
    a, b = fast.predict_image(image), plain.predict_image(image)
    np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-4)
    assert (a.labels == b.labels).mean() >= 0.999
    # and against a hand-written plain fp32 pass of the original network (NCHW, no folding)
    x = torch.from_numpy(fast._channels(image))
    x = infer.resize_image(x, (48, 48))[None]
    with torch.no_grad():
        ref = infer.probabilities_from_logits(_net(labels)(x), labels)
        ref = torch.nn.functional.interpolate(ref, size=(61, 47), mode="bilinear", align_corners=False)[0]
    np.testing.assert_allclose(a.probabilities, ref.numpy(), atol=1e-4)


def test_outputs_are_ordinary_tensors_and_model_is_left_alone():
    net = _net()
    config = TrainConfig(model=ModelConfig(base_width=4, depth=4), preprocess=PreprocessConfig(size=32))
    predictor = Predictor(net, ModelMetadata(config, ["a"]), "cpu")
    probs = predictor.predict_prepared(torch.zeros(3, 32, 32))
    assert not probs.is_inference()
    probs += 0  # callers may change what they get back
    assert net.encoder[0][0].weight.is_contiguous()  # the caller's model keeps its memory layout


def test_restore_still_uses_domain_batchnorm():
    predictor = _predictor(preprocess=PreprocessConfig(size=32))
    out = predictor.restore(_image((30, 40, 3)))
    assert set(out) == {"a", "b"}
    assert out["a"].shape == (3, 32, 32) and np.abs(out["a"]).max() <= 1  # at the working scale
    assert not np.allclose(out["a"], out["b"])  # each domain's own BatchNorm


def test_no_model_reload_or_setup_per_call(tmp_path, monkeypatch):
    config = TrainConfig(model=ModelConfig(base_width=4, depth=4), preprocess=PreprocessConfig(size=32))
    save_model(_net(), ModelMetadata(config, ["a", "b"]), tmp_path / "run")
    predictor = Predictor.from_path(tmp_path / "run", device="cpu")
    net = predictor._net

    def forbidden(*_args, **_kwargs):
        raise AssertionError("model reloaded or rebuilt during a call")

    monkeypatch.setattr(infer, "load_model", forbidden)
    monkeypatch.setattr(infer, "build_fast_model", forbidden)
    monkeypatch.setattr("napari_ramseg.core.models.checkpoint.load_model", forbidden)
    monkeypatch.setattr("napari_ramseg.core.inference.fastpath.FoldedSegNet.__init__", forbidden)
    for shape in ((40, 40, 3), (33, 21), (3, 20, 20)):
        predictor.predict(_image(shape))
    assert predictor._net is net and predictor.fast


def test_batch_size_is_sized_for_the_cpu_cache():
    auto = _predictor()
    assert auto.batch_for(384, 384) == 1 and auto.batch_for(512, 512) == 1
    assert auto.batch_for(256, 256) == 2 and auto.batch_for(128, 128) == 8 and auto.batch_for(8, 8) == 8
    assert _predictor(slice_batch=3).batch_for(512, 512) == 3
