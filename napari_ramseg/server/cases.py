"""One uploaded case through the per-case pipeline (``core/review/pipeline.segment_case``), as JSON.

The upload is written to a fresh temporary folder as ``case<ending>`` (never the client's file name)
and read by ``io.read_image``, so the readers' own checks and size limits apply (images over
``io.MAX_IMAGE_BYTES`` decoded are refused from their header) and the image is the one ``ramseg
predict`` would read from the same file. The folder is gone when the answer is sent.

The answer holds what ``CaseResult`` holds: the refusal (``""`` when segmented), the fit, the measures,
what the task's path adds (the optic disc's ROI), the review score asked for, what adapting to the scan
did (``adaptation``: the method, the fit before and after, seconds), the case's ``report.csv`` row as
``CaseResult.row`` makes it (``case`` and ``file`` left for the client to fill), and the mask: a 2D case's
as PNG, a volume's as NIfTI (``.nii.gz``, the scan's own affine), written by ``io.write_labels`` and
sent as base64 under ``mask.data``. With ``maps`` the probabilities and the entropy come too, as one
``.npz`` (float32, as the local ``Prediction`` holds them), for a dock that shows them. NaN and infinite
numbers become ``null``.
"""

from __future__ import annotations

import base64
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RamsegInputError

REVIEW_SCORES = ("disagreement", "descriptor")


def upload_suffixes() -> tuple[str, ...]:
    """The file endings an upload may have: every reader's, except DICOM (a series is a folder)."""
    from ..io import SUPPORTED_IMAGE_SUFFIXES
    from ..io._dicom import DICOM_SUFFIXES

    return tuple(s for s in SUPPORTED_IMAGE_SUFFIXES if s not in DICOM_SUFFIXES)


@dataclass(frozen=True)
class SegmentRequest:
    """A segment request's options, checked once here (a ``RamsegInputError``, one line, otherwise)."""

    model: str = "default"
    format: str = ".png"  # the upload's file ending
    adapt: str | None = None  # a core/inference/adapt method, None: no adaptation
    review: str | None = None  # "disagreement" or "descriptor", None: no review score
    postprocess: bool = False
    precision: str = "auto"
    maps: bool = False  # also send the probabilities and the entropy (the Segment dock's layers)

    def __post_init__(self) -> None:
        from ..core.config import ADAPT_METHODS
        from ..core.device import PRECISION_CHOICES

        suffix = "." + self.format.lower().lstrip(".")
        object.__setattr__(self, "format", suffix)
        for value, allowed, what in ((suffix, upload_suffixes(), "format"), (self.adapt, ADAPT_METHODS, "adapt"),
                                     (self.review, REVIEW_SCORES, "review"),
                                     (self.precision, PRECISION_CHOICES, "precision")):
            if value is not None and value not in allowed:
                raise RamsegInputError(f"{what} {str(value)[:40]!r} is not one of {', '.join(allowed)}")


def segment_upload(predictor: Any, body: Path, request: SegmentRequest) -> dict[str, Any]:
    """Read the uploaded file ``body`` as a ``request.format`` file, segment it and answer in JSON."""
    from ..core.review.pipeline import CaseOptions, segment_case

    with tempfile.TemporaryDirectory(prefix="ramseg-case-") as folder:
        path = Path(folder) / f"case{request.format}"
        body.replace(path)
        image = read_upload(path)
        segmenter = predictor
        if request.adapt is not None:
            from ..core.inference.adapt import AdaptedPredictor

            segmenter = AdaptedPredictor(predictor, request.adapt)
        options = CaseOptions(postprocess=request.postprocess, review=request.review)
        result = segment_case(predictor, image, options, segmenter=segmenter)
        mask = None if result.refused else encode_mask(result.prediction.labels, image, Path(folder))
        row = result.row("", "", predictor.labels, predictor.channel_names, image.spatial_shape, image.spacing)
    return {
        "task": result.task.name,
        "refused": result.refused,
        "refusal": result.refusal,
        "reliable": result.reliable,
        "fit": jsonable(None if result.fit is None else result.fit.to_dict()),
        "measures": jsonable(result.measures),
        "extras": jsonable(result.extras),
        "disagreement": jsonable(result.disagreement),
        "descriptor": jsonable(result.descriptor),
        "channel_names": list(predictor.channel_names),
        "labels": predictor.labels.to_dict(),
        "shape": list(image.spatial_shape),
        "spacing": jsonable(image.spacing),
        "mask": mask,
        "adaptation": jsonable(getattr(segmenter, "last", None)),  # core.inference.adapt's AdaptReport; None without
        "row": jsonable(row),
        "maps": encode_maps(result.prediction) if request.maps and not result.refused else None,
    }


def encode_maps(prediction: Any) -> dict[str, Any]:
    """The probabilities and the entropy, float32, as one compressed ``.npz`` in base64."""
    import io

    buffer = io.BytesIO()
    np.savez_compressed(buffer, probabilities=np.asarray(prediction.probabilities, np.float32),
                        entropy=np.asarray(prediction.entropy, np.float32))
    return {"format": ".npz", "encoding": "base64", "data": base64.b64encode(buffer.getvalue()).decode("ascii")}


def read_upload(path: Path) -> Any:
    """The uploaded image, as ``read_image`` reads it; its problems without the temporary path."""
    from ..io import read_image

    try:
        return read_image(path)
    except RamsegInputError as exc:
        raise RamsegInputError(f"the uploaded {path.suffix or 'file'} cannot be read: {exc.problem}") from None
    except OSError as exc:
        raise RamsegInputError(f"the uploaded file cannot be read ({type(exc).__name__})") from None


def encode_mask(labels: np.ndarray, image: Any, folder: Path) -> dict[str, Any]:
    """The mask as the bytes of the file ``ramseg predict`` writes (PNG for 2D, NIfTI for a volume)."""
    from ..io import write_labels

    suffix = ".nii.gz" if image.is_volume else ".png"
    path = write_labels(folder / f"mask{suffix}", labels, like=image)
    return {"format": suffix, "encoding": "base64", "shape": list(labels.shape), "dtype": str(labels.dtype),
            "data": base64.b64encode(path.read_bytes()).decode("ascii")}


def jsonable(value: Any) -> Any:
    """Numpy scalars and arrays as plain numbers and lists; NaN and infinities as None."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if hasattr(value, "to_dict"):
        return jsonable(value.to_dict())
    return str(value)
