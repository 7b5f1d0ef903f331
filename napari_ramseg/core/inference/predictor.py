"""Prediction for 2D images of any size and 3D volumes (2.5D, slice by slice), with uncertainty.

A ``Predictor`` sets its model up once, so repeated calls pay no setup cost: eval mode, an inference
copy of the segmentation path with BatchNorm folded into the convolutions (``fastpath.py``), in
channels_last, autocast where reduced precision is faster (CUDA; CPUs with native bf16), and
``torch.inference_mode`` around every network pass. Volume slices and large-image tiles go through
the network in batches sized for the device (``Predictor.batch_for``). BatchNorm always runs in eval mode: test-time statistics would quietly adapt to the
target domain, which the method's protocol forbids unless it is asked for (``--adapt``) and reported.

The model handed in is put in eval mode and moved to the device but otherwise left alone (the
trainer passes its live network for validation); the folded copy is a snapshot of its weights at
construction, so build a new Predictor after the weights change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import RamsegInputError
from ..models.checkpoint import MAX_SIDE, ModelMetadata, load_model
from ..shift.domain_fit import FitResult, fit_score
from ..labels import LabelScheme
from ..device import autocast, autocast_dtype, resolve_device
from .fastpath import CompiledModule, build_fast_model, compile_requested, tune_cpu_allocator
from ..method.model import RamSegNet
from ..data.preprocess import to_model_channels, volume_to_slices_25d
from ..data.geometry import resize_image, working_shape

ProgressCallback = Callable[[int, int], None]  # (done, total)
Forward = Callable[[torch.Tensor], torch.Tensor]  # the network pass: a batch of inputs -> their logits
CPU_BATCH_PIXELS = 2**17  # on a CPU, slices per pass = this // (pixels per slice), clamped to 1..8


@dataclass
class Prediction:
    """labels: class-index map of the input's spatial shape; probabilities: (C, *spatial) float32."""

    labels: np.ndarray
    probabilities: np.ndarray
    entropy: np.ndarray
    channel_names: list[str]


def pad_to_stride(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Pad the last two sides up to a multiple of the network's stride by repeating the edge, as every
    forward pass needs; the caller crops the output back with ``[..., :h, :w]``."""
    ph, pw = (-x.shape[-2]) % stride, (-x.shape[-1]) % stride
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


def probabilities_from_logits(logits: torch.Tensor, labels: LabelScheme) -> torch.Tensor:
    """Sigmoid per channel for nested heads, softmax over classes for exclusive heads."""
    logits = logits.float()
    return torch.sigmoid(logits) if labels.kind == "nested" else torch.softmax(logits, dim=1)


def labels_from_probabilities(probs: np.ndarray | torch.Tensor, labels: LabelScheme, threshold: float = 0.5) -> np.ndarray:
    """(C, ...) probabilities -> class-index map.

    Nested: a pixel gets class k+1 when channels 0..k are all above the threshold, so an inner
    structure never leaks outside its parent. Exclusive: argmax.
    """
    p = torch.as_tensor(probs)
    if labels.kind == "exclusive":
        return p.argmax(dim=0).to(torch.uint8).numpy()
    if p.shape[0] == 1:  # the binary case: one comparison, no cumulative product
        return (p[0] > threshold).to(torch.uint8).numpy()
    above = (p > threshold).to(torch.uint8)
    return torch.cumprod(above, dim=0).sum(dim=0).to(torch.uint8).numpy()


def entropy_map(probs: torch.Tensor, labels: LabelScheme) -> torch.Tensor:
    """Predictive entropy normalised to [0, 1] (mean Bernoulli entropy, or categorical / log C).

    ``xlogy`` gives 0 * log 0 = 0 exactly, so no clamping is needed; the passes run in place.
    """
    p = torch.as_tensor(probs).float()
    if labels.kind == "nested":
        h = torch.special.xlogy(p, p)
        q = torch.sub(1.0, p)
        h.add_(torch.special.xlogy(q, q, out=q))
        h = h.mean(dim=0) if h.shape[0] > 1 else h[0]
        return h.mul_(-1.0 / np.log(2.0)).clamp_(0.0, 1.0)
    h = torch.special.xlogy(p, p).sum(dim=0)
    return h.mul_(-1.0 / np.log(p.shape[0])).clamp_(0.0, 1.0)


class Predictor:
    """A loaded model ready to segment; build it once and call it many times."""

    def __init__(self, model: RamSegNet, metadata: ModelMetadata, device: str | torch.device = "auto",
                 tile: int = 512, tile_overlap: float = 0.25, slice_batch: int | None = None,
                 fast: bool = True, compile: bool | None = None, precision: str = "auto"):
        self.device = resolve_device(str(device)) if not isinstance(device, torch.device) else device
        self.metadata = metadata
        self.labels = metadata.config.labels
        self.preprocess = metadata.config.preprocess
        self.threshold = metadata.config.threshold
        self.dtype = autocast_dtype(self.device, precision)
        self.tile = tile
        self.tile_overlap = tile_overlap
        self.slice_batch = None if slice_batch is None else max(1, int(slice_batch))  # None: auto
        self.channels_last = self.device.type in ("cpu", "cuda")
        self.model = model.to(self.device).eval()
        if self.device.type == "cpu":
            tune_cpu_allocator()  # once per process; RAMSEG_MALLOC_TUNE=0 opts out
        # The segmentation network actually run: the folded copy when the model's layout allows it.
        self.fast_model = build_fast_model(self.model, self.device, self.channels_last) if fast else None
        self._net = self.fast_model if self.fast_model is not None else self.model
        if compile is None:
            compile = compile_requested()
        self._forward = CompiledModule(self._net) if compile else self._net

    def route_forward(self, wrap: Callable[[Forward], Forward]) -> None:
        """Send every network pass through ``wrap(forward)`` from now on: ``ramseg serve`` batches the
        passes of cases that arrive together (``server/batching.py``); the results are the same."""
        self._forward = wrap(self._forward)

    def batch_for(self, height: int, width: int) -> int:
        """Slices (or tiles) per forward pass at this working size.

        On a GPU, 8. On a CPU, batching only pays while a batch's feature maps stay cache-sized: at
        384x384 and above one slice per pass is fastest (measured: 8 per pass costs ~35 % more per
        slice, the level-0 maps no longer fit in L3), at 256x256 two, at 128x128 eight.
        """
        if self.slice_batch is not None:
            return self.slice_batch
        if self.device.type != "cpu":
            return 8
        return int(min(8, max(1, CPU_BATCH_PIXELS // max(1, height * width))))

    @property
    def fast(self) -> bool:
        """Whether the folded fast path is in use."""
        return self.fast_model is not None

    @classmethod
    def from_path(cls, path: str | Path, device: str = "auto", **kwargs) -> "Predictor":
        resolved = resolve_device(device)
        model, metadata = load_model(path, resolved)
        return cls(model, metadata, resolved, **kwargs)

    @property
    def domains(self) -> list[str]:
        return list(self.metadata.domains)

    def check_fit(self, image: np.ndarray, is_volume: bool | None = None) -> FitResult:
        """Whether ``image`` looks like the model's source domains (``core/shift/domain_fit.py``)."""
        return fit_score(self.metadata, image, is_volume)

    @property
    def channel_names(self) -> list[str]:
        names = list(self.labels.names)
        return names if self.labels.kind == "nested" else ["background", *names]

    # -- network passes -------------------------------------------------------------------------
    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _padded_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch whose sides are padded up to the network's stride, then cropped back."""
        h, w = x.shape[-2:]
        x = pad_to_stride(x, self.model.stride)
        with autocast(self.device, self.dtype):
            logits = self._forward(self._to_device(x))
        return logits[..., :h, :w].float()

    @torch.no_grad()
    def _probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, h, w) normalised input at the working scale -> (N, C, h, w) probabilities on the CPU."""
        h, w = x.shape[-2:]
        with torch.inference_mode():
            if h * w <= (2 * self.tile) ** 2:
                logits = self._padded_logits(x)
            else:
                # Large images: overlapping tiles with Gaussian blending keep memory bounded.
                from monai.inferers import sliding_window_inference

                logits = sliding_window_inference(
                    x, roi_size=(self.tile, self.tile), sw_batch_size=self.batch_for(self.tile, self.tile),
                    predictor=self._padded_logits,
                    overlap=self.tile_overlap, mode="gaussian", sw_device=self.device, device=torch.device("cpu"),
                )
        # Outside inference mode on purpose: what callers get back is an ordinary tensor. contiguous()
        # is free for one output channel (channels_last and NCHW coincide) and one copy otherwise.
        return probabilities_from_logits(logits, self.labels).cpu().contiguous()

    @staticmethod
    def _to_size(probs: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Back to the input's size; no work when the working scale already is the input's."""
        if tuple(probs.shape[-2:]) == (height, width):
            return probs
        return F.interpolate(probs, size=(height, width), mode="bilinear", align_corners=False)

    # -- the network's input ---------------------------------------------------------------------
    def prepare(self, image: np.ndarray, slice_index: int | None = None) -> torch.Tensor:
        """The network's input, ``(C, H, W)`` float32 in [-1, 1]: a 2D image in the model's channels,
        or (``slice_index`` given) that slice of a ``(Z, Y, X)`` volume with its 2.5D neighbours as
        channels, normalised over the whole volume, exactly as :meth:`predict_volume` sees it.

        Hand the same tensor to :meth:`predict_prepared` and :meth:`restore_prepared` and both see
        one input; neither normalises again."""
        if slice_index is None:
            return torch.from_numpy(self._channels(image))
        if np.ndim(image) != 3:
            raise RamsegInputError(f"expected a 3D volume (Z, Y, X), got shape {np.shape(image)}")
        return torch.from_numpy(self._checked(volume_to_slices_25d, image, [int(slice_index)])[0])

    def input_shape(self, height: int, width: int, volume: bool = False,
                    spacing: tuple[float, ...] | None = None) -> tuple[int, int]:
        """The size the network sees a 2D image at (the working scale), or a volume's slices at
        (:meth:`volume_shape`)."""
        if volume:
            return self.volume_shape(height, width, spacing)
        return working_shape(height, width, self.preprocess)

    # -- public API ------------------------------------------------------------------------------
    def predict_image(self, image: np.ndarray, postprocess: bool = False) -> Prediction:
        """Segment a 2D image: (H, W) grey or (H, W, 3/4) colour, any dtype, any size."""
        probs = self.predict_prepared(self.prepare(image))
        return self._finish(probs, postprocess)

    @torch.no_grad()
    def predict_prepared(self, x: torch.Tensor, shape: tuple[int, int] | None = None) -> torch.Tensor:
        """(C, H, W) image already in the model's channels and range -> (C_out, H, W) probabilities.

        ``shape``: the size the network sees it at (default: a 2D image's working scale)."""
        height, width = x.shape[-2:]
        x = resize_image(x, shape or working_shape(height, width, self.preprocess))[None]
        return self._to_size(self._probabilities(x), height, width)[0]

    def predict_slice(self, volume: np.ndarray, index: int, postprocess: bool = False,
                      spacing: tuple[float, ...] | None = None) -> Prediction:
        """Segment one slice of a (Z, Y, X) volume as :meth:`predict_volume` does (its 2.5D
        neighbours, the volume's normalisation, the volume's working size): (Y, X) outputs."""
        x = self.prepare(volume, index)
        probs = self.predict_prepared(x, self.input_shape(*x.shape[-2:], volume=True, spacing=spacing))
        return self._finish(probs, postprocess)

    def volume_shape(self, height: int, width: int, spacing: tuple[float, ...] | None = None) -> tuple[int, int]:
        """The in-plane size a volume's slices are segmented at.

        At the voxel spacing the model was trained at (``source_profile.spacing`` in model.json, as
        nnU-Net records its target spacing) when both it and the volume's ``spacing`` ((z, y, x) or
        (y, x)) are known; otherwise the volume's own size. Never the 2D field-of-view scale
        (``preprocess.long_side``), which is a photograph's.
        """
        profile = self.metadata.source_profile
        trained = None if profile is None else profile.spacing
        if trained is None or spacing is None or len(spacing) < 2:
            return height, width
        sy, sx = float(spacing[-2]), float(spacing[-1])
        if not (np.isfinite(sy) and np.isfinite(sx) and sy > 0 and sx > 0):
            return height, width
        return (int(min(MAX_SIDE, max(1, round(height * sy / trained[0])))),
                int(min(MAX_SIDE, max(1, round(width * sx / trained[1])))))

    def predict_volume(self, volume: np.ndarray, postprocess: bool = False,
                       progress: ProgressCallback | None = None,
                       cancelled: Callable[[], bool] | None = None,
                       spacing: tuple[float, ...] | None = None) -> Prediction:
        """Segment a (Z, Y, X) volume slice by slice, each slice seeing (j-1, j, j+1) as channels
        (``preprocess.volume_to_slices_25d``, as :meth:`prepare` does for one slice).

        ``spacing``: the volume's (z, y, x) voxel spacing, if known (see :meth:`volume_shape`).
        """
        if volume.ndim != 3:
            raise RamsegInputError(f"expected a 3D volume (Z, Y, X), got shape {volume.shape}")
        slices = torch.from_numpy(self._checked(volume_to_slices_25d, volume))
        depth, _, height, width = slices.shape
        shape = self.volume_shape(height, width, spacing)
        # (C, Z, Y, X) from the start: the caller gets contiguous arrays, no final transpose copy.
        out = torch.empty((self.labels.out_channels, depth, height, width), dtype=torch.float32)
        step = self.batch_for(*shape)
        with torch.no_grad():
            for start in range(0, depth, step):
                if cancelled is not None and cancelled():
                    raise InterruptedError("prediction cancelled")
                chunk = resize_image(slices[start:start + step], shape)
                probs = self._to_size(self._probabilities(chunk), height, width)
                out[:, start:start + len(chunk)] = probs.transpose(0, 1)
                if progress is not None:
                    progress(min(start + step, depth), depth)
        return self._finish(out, postprocess)

    def predict(self, array: np.ndarray, postprocess: bool = False, is_volume: bool | None = None, **kwargs) -> Prediction:
        """2D image or 3D volume; a 3D array whose last axis has 3 or 4 entries is taken as RGB(A).

        ``kwargs`` (progress, cancelled, spacing) are for volumes; a 2D image ignores them."""
        if is_volume is None:
            is_volume = array.ndim == 3 and array.shape[-1] not in (3, 4)
        if is_volume:
            return self.predict_volume(array, postprocess, **kwargs)
        return self.predict_image(array, postprocess)

    def restore(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """The DSIR decoder's (3, H, W) image in [-1, 1] for each source domain, at the working scale."""
        return self.restore_prepared(self.prepare(image))

    def restore_slice(self, volume: np.ndarray, index: int,
                      spacing: tuple[float, ...] | None = None) -> dict[str, np.ndarray]:
        """:meth:`restore` for one slice of a (Z, Y, X) volume, from the input :meth:`predict_slice` sees."""
        x = self.prepare(volume, index)
        return self.restore_prepared(x, self.input_shape(*x.shape[-2:], volume=True, spacing=spacing))

    @torch.inference_mode()
    def restore_prepared(self, x: torch.Tensor, shape: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
        """:meth:`restore` for a (C, H, W) input already prepared (:meth:`prepare`), seen at ``shape``
        (default: a 2D image's working scale); the outputs are at ``shape``."""
        x = resize_image(x, shape or working_shape(*x.shape[-2:], self.preprocess))[None]
        h, w = x.shape[-2:]
        x = pad_to_stride(x, self.model.stride)
        with autocast(self.device, self.dtype):
            bottleneck = self.model.encode(self._to_device(x))[-1]
            outputs = {
                name: self.model.restore(bottleneck, k, size=tuple(x.shape[-2:]))[0, :, :h, :w].float().cpu().numpy()
                for k, name in enumerate(self.metadata.domains)
            }
        return outputs

    # -- helpers ---------------------------------------------------------------------------------
    def _channels(self, image: np.ndarray) -> np.ndarray:
        if image.ndim not in (2, 3):
            raise RamsegInputError(f"expected a 2D image, got shape {image.shape}")
        return self._checked(to_model_channels, image, self.metadata.config.model.in_channels)

    @staticmethod
    def _checked(fn, *args):
        try:
            return fn(*args)
        except ValueError as exc:
            raise RamsegInputError(str(exc)) from None

    def _finish(self, probs: torch.Tensor, postprocess: bool) -> Prediction:
        labels = labels_from_probabilities(probs, self.labels, self.threshold)
        if postprocess:
            from .postprocess import postprocess_labels

            labels = postprocess_labels(labels, self.labels)
        return Prediction(labels=labels, probabilities=probs.numpy(), entropy=entropy_map(probs, self.labels).numpy(),
                          channel_names=self.channel_names)
