"""Prediction for 2D images of any size and 3D volumes (2.5D, slice by slice), with uncertainty.

A ``Predictor`` holds the model on its device, set up once (eval mode, channels_last, autocast), so
repeated calls pay no setup cost. BatchNorm always runs in eval mode: test-time statistics would
quietly adapt to the target domain, which METHOD.md forbids unless requested and reported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import RamsegInputError
from .checkpoint import ModelMetadata, load_model
from .config import LabelScheme
from .device import autocast, autocast_dtype, resolve_device
from .model import RamSegNet
from .preprocess import to_model_channels, volume_to_slices_25d
from .sampling import resize_image, working_shape

ProgressCallback = Callable[[int, int], None]  # (done, total)


@dataclass
class Prediction:
    """labels: class-index map of the input's spatial shape; probabilities: (C, *spatial) float32."""

    labels: np.ndarray
    probabilities: np.ndarray
    entropy: np.ndarray
    channel_names: list[str]


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
    above = (p > threshold).to(torch.uint8)
    return torch.cumprod(above, dim=0).sum(dim=0).to(torch.uint8).numpy()


def entropy_map(probs: torch.Tensor, labels: LabelScheme) -> torch.Tensor:
    """Predictive entropy normalised to [0, 1] (mean Bernoulli entropy, or categorical / log C)."""
    p = probs.float().clamp(1e-6, 1 - 1e-6)
    if labels.kind == "nested":
        h = -(p * p.log() + (1 - p) * (1 - p).log()) / np.log(2.0)
        return h.mean(dim=0)
    return -(p * p.log()).sum(dim=0) / np.log(p.shape[0])


class Predictor:
    """A loaded model ready to segment; build it once and call it many times."""

    def __init__(self, model: RamSegNet, metadata: ModelMetadata, device: str | torch.device = "auto",
                 tile: int = 512, tile_overlap: float = 0.25, slice_batch: int = 8):
        self.device = resolve_device(str(device)) if not isinstance(device, torch.device) else device
        self.metadata = metadata
        self.labels = metadata.config.labels
        self.preprocess = metadata.config.preprocess
        self.threshold = metadata.config.threshold
        self.dtype = autocast_dtype(self.device)
        self.tile = tile
        self.tile_overlap = tile_overlap
        self.slice_batch = slice_batch
        self.model = model.to(self.device).eval()
        if self.device.type in ("cpu", "cuda"):
            self.model = self.model.to(memory_format=torch.channels_last)

    @classmethod
    def from_path(cls, path: str | Path, device: str = "auto", **kwargs) -> "Predictor":
        resolved = resolve_device(device)
        model, metadata = load_model(path, resolved)
        return cls(model, metadata, resolved, **kwargs)

    @property
    def domains(self) -> list[str]:
        return list(self.metadata.domains)

    @property
    def channel_names(self) -> list[str]:
        names = list(self.labels.names)
        return names if self.labels.kind == "nested" else ["background", *names]

    # -- network passes -------------------------------------------------------------------------
    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.device.type in ("cpu", "cuda") else x

    def _padded_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch whose sides are padded up to the network's stride, then cropped back."""
        stride = self.model.stride
        h, w = x.shape[-2:]
        ph, pw = (-h) % stride, (-w) % stride
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        with autocast(self.device, self.dtype):
            logits = self.model(self._to_device(x))
        return logits[..., :h, :w].float()

    @torch.inference_mode()
    def _probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, h, w) normalised input at the working scale -> (N, C, h, w) probabilities on the CPU."""
        h, w = x.shape[-2:]
        if h * w <= (2 * self.tile) ** 2:
            logits = self._padded_logits(x)
        else:
            # Large images: overlapping tiles with Gaussian blending keep memory bounded.
            from monai.inferers import sliding_window_inference

            logits = sliding_window_inference(
                x, roi_size=(self.tile, self.tile), sw_batch_size=2, predictor=self._padded_logits,
                overlap=self.tile_overlap, mode="gaussian", sw_device=self.device, device=torch.device("cpu"),
            )
        return probabilities_from_logits(logits, self.labels).cpu()

    # -- public API ------------------------------------------------------------------------------
    def predict_image(self, image: np.ndarray, postprocess: bool = False) -> Prediction:
        """Segment a 2D image: (H, W) grey or (H, W, 3/4) colour, any dtype, any size."""
        probs = self.predict_prepared(torch.from_numpy(self._channels(image)))
        return self._finish(probs, postprocess)

    def predict_prepared(self, x: torch.Tensor) -> torch.Tensor:
        """(C, H, W) image already in the model's channels and range -> (C_out, H, W) probabilities."""
        height, width = x.shape[-2:]
        x = resize_image(x, working_shape(height, width, self.preprocess))[None]
        probs = self._probabilities(x)
        return F.interpolate(probs, size=(height, width), mode="bilinear", align_corners=False)[0]

    def predict_volume(self, volume: np.ndarray, postprocess: bool = False,
                       progress: ProgressCallback | None = None,
                       cancelled: Callable[[], bool] | None = None) -> Prediction:
        """Segment a (Z, Y, X) volume slice by slice, each slice seeing (j-1, j, j+1) as channels."""
        if volume.ndim != 3:
            raise RamsegInputError(f"expected a 3D volume (Z, Y, X), got shape {volume.shape}")
        slices = torch.from_numpy(self._checked(volume_to_slices_25d, volume))
        depth, _, height, width = slices.shape
        shape = working_shape(height, width, self.preprocess)
        out = torch.empty((depth, self.labels.out_channels, height, width), dtype=torch.float32)
        for start in range(0, depth, self.slice_batch):
            if cancelled is not None and cancelled():
                raise InterruptedError("prediction cancelled")
            chunk = resize_image(slices[start:start + self.slice_batch], shape)
            probs = self._probabilities(chunk)
            out[start:start + len(chunk)] = F.interpolate(probs, size=(height, width), mode="bilinear", align_corners=False)
            if progress is not None:
                progress(min(start + self.slice_batch, depth), depth)
        return self._finish(out.permute(1, 0, 2, 3), postprocess)

    def predict(self, array: np.ndarray, postprocess: bool = False, is_volume: bool | None = None, **kwargs) -> Prediction:
        """2D image or 3D volume; a 3D array whose last axis has 3 or 4 entries is taken as RGB(A)."""
        if is_volume is None:
            is_volume = array.ndim == 3 and array.shape[-1] not in (3, 4)
        if is_volume:
            return self.predict_volume(array, postprocess, **kwargs)
        return self.predict_image(array, postprocess)

    @torch.inference_mode()
    def restore(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """The DSIR decoder's (3, H, W) image in [-1, 1] for each source domain, at the working scale."""
        x = torch.from_numpy(self._channels(image))
        x = resize_image(x, working_shape(*x.shape[-2:], self.preprocess))[None]
        h, w = x.shape[-2:]
        stride = self.model.stride
        x = F.pad(x, (0, (-w) % stride, 0, (-h) % stride), mode="replicate")
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
