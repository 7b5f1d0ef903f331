"""Export a model as a BioImage.IO model package (spec 0.5), the format micro-sam and plantseg share.

The package (a zip) holds:

- weights as ONNX (``onnx_export``) and TorchScript, both of the inference network the Predictor
  runs (folded segmentation path, fp32; the restoration decoder is training-only and left out);
- ``model.json`` and ``model.safetensors`` as attachments, which is what napari-ramseg itself loads
  (``package.py``): they cannot run code, the TorchScript and ONNX files are for other tools;
- a test input (what the network sees of a sample image: at the model's working scale, cropped to the
  network's stride; for an optic disc model the disc-centred ROI its two stages cut from a photograph)
  and the output napari-ramseg's own pipeline gives for it, which ``bioimageio test`` reproduces from
  the weights and the pre/postprocessing written in the spec's terms; the same pair as TIFF sample
  tensors, for people and viewers;
- a cover image, the model card as documentation, citations (the method and the training data with
  their terms) and ``config.napari-ramseg`` naming the attachments.

Pre/postprocessing in spec terms: ``scale_range`` over (channel, y, x) between the 0.5 and 99.5
percentiles, ``scale_linear`` to [-1, 1] and ``clip``, as ``core/data/preprocess.normalize_intensity``
does; then ``sigmoid`` (nested labels) or ``softmax`` (exclusive). What the spec cannot say is in
the card: the resize to the working scale, that a volume is normalised as a whole and seen as
2.5D slices, and the threshold that turns probabilities into labels.

The authors are the user's (``--author``; there is no default). No author gets a ``github_user`` and
every reference is a DOI: validating the package then needs no network. The TorchScript weights are
the original entry, the ONNX weights name it their ``parent``.
"""

from __future__ import annotations

import shutil
import string
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import tifffile
import torch

from .. import __version__
from ..core.models.checkpoint import ModelMetadata, load_model, resolve_model_path
from ..core.config import NORMALIZATION
from ..core.inference.predictor import Predictor, probabilities_from_logits
from ..core.data.preprocess import normalize_intensity
from ..core.data.geometry import resize_image, working_shape
from ..errors import RamsegInputError
from ..files import atomic_write
from .citations import METHOD, training_data, training_data_markdown
from .onnx_export import OPSET, export_onnx, inference_network

CONFIG_KEY = "napari-ramseg"
PACKAGE_FORMAT = 1
DEFAULT_LICENSE = "CC-BY-4.0"
INPUT_ID, OUTPUT_ID = "raw", "probabilities"
WEIGHTS_ONNX, WEIGHTS_TORCHSCRIPT = "weights.onnx", "weights_torchscript.pt"
MODEL_JSON, MODEL_WEIGHTS = "model.json", "model.safetensors"
SAMPLE_INPUT, SAMPLE_OUTPUT = "sample_input.tif", "sample_output.tif"
MAX_TEST_SIDE = 512  # a test tensor larger than this is centre-cropped: bioimageio test runs it several times


def sample_tensor(image: np.ndarray, is_volume: bool, metadata: ModelMetadata, stride: int) -> np.ndarray:
    """The package's test input ``(1, 3, H, W)`` float32: raw intensities at the working scale.

    A 2D image in the model's channels (grey repeated); a volume's middle slice with its neighbours
    as channels (the 2.5D input). Resized as the Predictor resizes, then centre-cropped to a
    multiple of the network's stride (the package's input size rule)."""
    array = np.asarray(image)
    if is_volume:
        j = array.shape[0] // 2
        raw = np.stack([array[max(j - 1, 0)], array[j], array[min(j + 1, array.shape[0] - 1)]])
        shape = tuple(raw.shape[-2:])  # volumes keep their size unless a spacing is known
    else:
        raw = array[..., :3] if array.ndim == 3 else array
        raw = np.moveaxis(raw, -1, 0) if raw.ndim == 3 else np.broadcast_to(raw, (3, *raw.shape))
        if raw.shape[0] == 1:
            raw = np.broadcast_to(raw, (3, *raw.shape[1:]))
        shape = working_shape(*raw.shape[-2:], metadata.config.preprocess)
    x = resize_image(torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float32)), shape)
    h, w = (min(MAX_TEST_SIDE, s - s % stride) for s in x.shape[-2:])
    if h < stride or w < stride:
        raise RamsegInputError(f"the sample is too small for this network ({tuple(x.shape[-2:])} at the working "
                               f"scale; at least {stride} x {stride})")
    top, left = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
    return np.ascontiguousarray(x[None, :, top:top + h, left:left + w].numpy(), dtype=np.float32)


def expected_output(net: torch.nn.Module, metadata: ModelMetadata, x: np.ndarray) -> np.ndarray:
    """napari-ramseg's probabilities for a raw test input (its normalisation, its network)."""
    normed = np.stack([normalize_intensity(sample) for sample in x])
    with torch.no_grad():
        logits = net(torch.from_numpy(normed))
    return probabilities_from_logits(logits, metadata.config.labels).numpy().astype(np.float32)


def cover_image(x: np.ndarray, probabilities: np.ndarray, path: Path) -> None:
    """Input beside its prediction (the first channel's probability in red), as a PNG."""
    from PIL import Image

    raw = np.moveaxis(normalize_intensity(x[0]), 0, -1)
    rgb = ((raw + 1) * 127.5).clip(0, 255).astype(np.uint8)
    p = probabilities[0, 0 if probabilities.shape[1] == 1 else 1]
    overlay = rgb.astype(np.float32) * 0.5
    overlay[..., 0] += 127.5 * p
    side = np.concatenate([rgb, overlay.clip(0, 255).astype(np.uint8)], axis=1)
    atomic_write(path, lambda tmp: Image.fromarray(side).save(tmp, format="PNG"))


def channel_names(metadata: ModelMetadata) -> tuple[list[str], list[str]]:
    labels = metadata.config.labels
    out = list(labels.names) if labels.kind == "nested" else ["background", *labels.names]
    volume = metadata.source_profile is not None and getattr(metadata.source_profile, "spacing", None) is not None
    return (["slice_before", "slice", "slice_after"] if volume else ["red", "green", "blue"]), out


def card_text(model_path: Path, metadata: ModelMetadata, card: Path | None, stride: int) -> str:
    """The package's documentation: the model card (or what model.json says) and how to use the package."""
    labels = metadata.config.labels
    if card is not None:
        text = card.read_text(encoding="utf-8").rstrip()
    else:
        metrics = metadata.metrics.get("validation", {}) if isinstance(metadata.metrics, dict) else {}
        text = "\n".join([
            f"# Model card: {model_path.name}", "",
            "No model card was written for this model; this is what its model.json records.", "",
            f"- Labels: {', '.join(labels.names)} ({labels.kind})",
            f"- Source domains: {', '.join(metadata.domains)}",
            f"- Source-validation Dice: {metrics.get('dice', 'not recorded')}",
            f"- Training command: `{metadata.extra.get('command', 'not recorded')}`",
        ])
    activation = "a sigmoid per channel" if labels.kind == "nested" else "a softmax over the channels"
    rule = (f"a pixel gets label k when channels 1..k are all above {metadata.config.threshold}"
            if labels.kind == "nested" else "each pixel takes the most probable channel")
    usage = "\n".join([
        "", "## Using this package", "",
        f"Made by napari-ramseg {__version__} (RAM-DSIR). napari-ramseg loads it directly "
        f"(`ramseg predict --model this.zip`, or the Segment dock's model field) from `{MODEL_JSON}` and "
        f"`{MODEL_WEIGHTS}`, which cannot run code. The ONNX and TorchScript weights are the same network for "
        "other tools.", "",
        f"- Input `{INPUT_ID}`: (batch, 3, y, x) float32, y and x multiples of {stride}. A photograph in RGB at the "
        f"working scale ({_scale_words(metadata)}); for a volume, slices j-1, j, j+1 as the three channels.",
        f"- Preprocessing (written in the package): percentile min-max between the {NORMALIZATION['low_percentile']} "
        f"and {NORMALIZATION['high_percentile']} percentiles over all channels, mapped to [-1, 1] and clipped. "
        "napari-ramseg normalises a volume over the whole volume, not slice by slice.",
        f"- Output `{OUTPUT_ID}`: (batch, {labels.out_channels}, y, x), {activation} of the logits "
        f"(channels: {', '.join(channel_names(metadata)[1])}).",
        f"- Labels: {rule} (the threshold was chosen on source validation).",
        "", "## Validation", "", _validation_words(metadata),
        "", training_data_markdown(metadata.domains),
        "", "## Method", "", f"{METHOD.text}, doi:{METHOD.doi}.",
    ])
    return text + "\n" + usage + "\n"


def _validation_words(metadata: ModelMetadata) -> str:
    validation = metadata.metrics.get("validation") if isinstance(metadata.metrics, dict) else None
    dice = validation.get("dice") if isinstance(validation, dict) else None
    if not isinstance(dice, (int, float)):
        return "No source-validation score is recorded in model.json."
    by_domain = validation.get("dice_by_domain") or {}
    parts = ", ".join(f"{d} {v:.3f}" for d, v in by_domain.items() if isinstance(v, (int, float)))
    return (f"Source-validation Dice {dice:.3f}" + (f" ({parts})" if parts else "")
            + ", on held-out cases of the training domains only; a domain the model has not seen may score lower.")


def _scale_words(metadata: ModelMetadata) -> str:
    prep = metadata.config.preprocess
    if prep.long_side is not None:
        return f"the longer side brought to {prep.long_side} px"
    return f"{prep.size} x {prep.size} px"


NAME_CHARACTERS = frozenset(string.ascii_letters + string.digits + "_+- ()")  # what the spec allows in a name
MAX_NAME = 64  # the spec's advice


def model_name(model_path: Path, metadata: ModelMetadata) -> str:
    """The package's name, within the spec's characters (no commas) and length: ``napari-ramseg disc and
    cup (optic-disc)``."""
    def allowed(text: str) -> str:
        return "".join(c if c in NAME_CHARACTERS else "-" for c in text)

    labels = " and ".join(allowed(n) for n in metadata.config.labels.names)
    folder = allowed(model_path.stem if model_path.is_file() else model_path.name)
    name = f"napari-ramseg {labels}"[:MAX_NAME - len(folder) - 3].rstrip()
    return f"{name} ({folder})" if len(folder) <= MAX_NAME // 2 else name


def network_input(predictor: Predictor, sample: np.ndarray, is_volume: bool) -> np.ndarray:
    """What the network sees of a sample: its task's region (``core/tasks``; for an optic disc model the
    disc-centred ROI its two stages cut from a photograph), the sample itself for other models."""
    from ..core.tasks import task_for

    task = task_for(predictor.labels, is_volume)
    return np.asarray(task.review_region(predictor, SimpleNamespace(array=sample, is_volume=is_volume), None))


def export_bioimageio(model_path: str | Path, out: str | Path, sample: np.ndarray, is_volume: bool = False,
                      card: Path | None = None, authors: list[str] | None = None,
                      license: str = DEFAULT_LICENSE, name: str | None = None) -> Path:
    """Write a BioImage.IO model package (a .zip) for the model at ``model_path``; returns its path.

    ``sample`` is the image the test tensors, the sample tensors and the cover are made from (as
    ``io.read_image`` returns it; a whole fundus photograph for an optic disc model, whose ROI is cut
    as its two stages cut it); ``card`` the model card (Markdown) to ship as its documentation;
    ``authors`` who made the model (required: a package names its authors)."""
    from bioimageio.spec import save_bioimageio_package

    model_path, out = Path(model_path), Path(out)
    if out.suffix.lower() != ".zip":
        raise RamsegInputError("a BioImage.IO package is written as a .zip file; give a name ending in .zip", out)
    authors = [a.strip() for a in authors or () if a and a.strip()]
    if not authors:
        raise RamsegInputError("a BioImage.IO package names who made the model: give --author NAME (repeatable)")
    weights_file, json_file = resolve_model_path(model_path)
    model, metadata = load_model(model_path, "cpu")
    region = network_input(Predictor(model, metadata, "cpu", precision="fp32"), sample, is_volume)
    net = inference_network(model)
    stride = model.stride
    x = sample_tensor(region, is_volume, metadata, stride)
    y = expected_output(net, metadata, x)
    with tempfile.TemporaryDirectory(prefix="ramseg-bioimageio-") as tmp:
        stage = Path(tmp)
        _write_files(stage, model, net, metadata, x, y, model_path, card)
        shutil.copyfile(weights_file, stage / MODEL_WEIGHTS)
        shutil.copyfile(json_file, stage / MODEL_JSON)
        descr = _model_descr(stage, metadata, stride, name or model_name(model_path, metadata), authors, license)
        atomic_write(out, lambda t: save_bioimageio_package(descr, output_path=t), suffix=".zip")
    return out


def _write_files(stage: Path, model: Any, net: torch.nn.Module, metadata: ModelMetadata, x: np.ndarray,
                 y: np.ndarray, model_path: Path, card: Path | None) -> None:
    """The package's generated files in ``stage``: both weights formats, the test and sample tensors, the
    cover and the documentation."""
    stride = model.stride
    export_onnx(model, metadata, stage / WEIGHTS_ONNX)
    _export_torchscript(net, x, stage / WEIGHTS_TORCHSCRIPT)
    for name_, array in (("test_input.npy", x), ("test_output.npy", y)):
        atomic_write(stage / name_, lambda t, a=array: np.save(t, a), suffix=".npy")
    for name_, array in ((SAMPLE_INPUT, x[0]), (SAMPLE_OUTPUT, y[0])):  # (channel, y, x), for people and viewers
        atomic_write(stage / name_, lambda t, a=array: tifffile.imwrite(t, a, photometric="minisblack"),
                     suffix=".tif")
    cover_image(x, y, stage / "cover.png")
    atomic_write(stage / "README.md", lambda t: t.write_text(card_text(model_path, metadata, card, stride),
                                                             encoding="utf-8"), suffix=".md")


def _model_descr(stage: Path, metadata: ModelMetadata, stride: int, name: str, authors: list[str],
                 license: str) -> Any:
    """The package's description (its rdf.yaml), naming the files ``_write_files`` put in ``stage``."""
    from bioimageio.spec.model import v0_5 as spec

    in_names, out_names = channel_names(metadata)
    space = [spec.SpaceInputAxis(id=spec.AxisId(a), size=spec.ParameterizedSize(min=stride, step=stride))
             for a in ("y", "x")]
    out_space = [spec.SpaceOutputAxis(id=spec.AxisId(a), size=spec.SizeReference(
        tensor_id=spec.TensorId(INPUT_ID), axis_id=spec.AxisId(a))) for a in ("y", "x")]
    labels = metadata.config.labels
    post = ([spec.SigmoidDescr()] if labels.kind == "nested"
            else [spec.SoftmaxDescr(kwargs=spec.SoftmaxKwargs(axis=spec.AxisId("channel")))])
    known, _ = training_data(metadata.domains)
    return spec.ModelDescr(
        name=name,
        description=(f"RAM-DSIR segmentation of {', '.join(labels.names)}, trained on the source domains "
                     f"{', '.join(metadata.domains)} (napari-ramseg)")[:1024],
        authors=[spec.Author(name=a) for a in authors],
        cite=[spec.CiteEntry(text=METHOD.text, doi=spec.Doi(METHOD.doi))]
        + [spec.CiteEntry(text=f"{c.text}; training data ({names}), terms: {c.licence}", doi=spec.Doi(c.doi))
           for names, c in known],
        license=spec.LicenseId(license),
        tags=["segmentation", "domain-generalization", "ram-dsir", "napari-ramseg", *labels.names],
        documentation=spec.FileDescr(source=stage / "README.md"),
        covers=[spec.FileDescr(source=stage / "cover.png")],
        attachments=[spec.FileDescr(source=stage / MODEL_JSON), spec.FileDescr(source=stage / MODEL_WEIGHTS)],
        inputs=[spec.InputTensorDescr(
            id=spec.TensorId(INPUT_ID),
            description="RGB photograph, or three neighbouring slices, at the working scale",
            axes=[spec.BatchAxis(), spec.ChannelAxis(channel_names=in_names), *space],
            test_tensor=spec.FileDescr(source=stage / "test_input.npy"),
            sample_tensor=spec.FileDescr(source=stage / SAMPLE_INPUT),
            data=spec.IntervalOrRatioDataDescr(type="float32"),
            preprocessing=[
                spec.ScaleRangeDescr(kwargs=spec.ScaleRangeKwargs(
                    axes=[spec.AxisId("channel"), spec.AxisId("y"), spec.AxisId("x")],
                    min_percentile=NORMALIZATION["low_percentile"],
                    max_percentile=NORMALIZATION["high_percentile"])),
                spec.ScaleLinearDescr(kwargs=spec.ScaleLinearKwargs(gain=2.0, offset=-1.0)),
                spec.ClipDescr(kwargs=spec.ClipKwargs(min=-1.0, max=1.0)),
            ])],
        outputs=[spec.OutputTensorDescr(
            id=spec.TensorId(OUTPUT_ID),
            description=f"per-channel probabilities; labels by threshold {metadata.config.threshold}",
            axes=[spec.BatchAxis(), spec.ChannelAxis(channel_names=out_names), *out_space],
            test_tensor=spec.FileDescr(source=stage / "test_output.npy"),
            sample_tensor=spec.FileDescr(source=stage / SAMPLE_OUTPUT),
            data=spec.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
            postprocessing=post)],
        weights=spec.WeightsDescr(
            # both come from napari-ramseg's network (model.safetensors): TorchScript traced from it, the
            # original here; ONNX exported from the same network, so it names TorchScript its parent
            onnx=spec.OnnxWeightsDescr(source=stage / WEIGHTS_ONNX, opset_version=OPSET, parent="torchscript",
                                       comment=f"exported by napari-ramseg {__version__} from the network "
                                               f"in {MODEL_WEIGHTS}, as the TorchScript weights were traced"),
            torchscript=spec.TorchscriptWeightsDescr(
                source=stage / WEIGHTS_TORCHSCRIPT, pytorch_version=spec.Version(torch.__version__.split("+")[0]),
                comment=f"traced by napari-ramseg {__version__} from the network in {MODEL_WEIGHTS}"),
        ),
        config={CONFIG_KEY: {"package_format": PACKAGE_FORMAT, "package_version": __version__,
                             "model_json": MODEL_JSON, "weights": MODEL_WEIGHTS,
                             "threshold": metadata.config.threshold}},
    )


def _export_torchscript(net: torch.nn.Module, x: np.ndarray, path: Path) -> None:
    """A traced copy of the inference network (the package's PyTorch-format weights)."""
    import warnings

    example = torch.from_numpy(np.clip(x / max(float(np.abs(x).max()), 1.0), -1, 1))
    with warnings.catch_warnings():  # tracing warns about shape arithmetic; sizes stay symbolic in the trace
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net, example, check_trace=False)
    atomic_write(path, lambda t: torch.jit.save(traced, str(t)), suffix=".pt")


__all__ = ["export_bioimageio", "sample_tensor", "expected_output", "model_name", "network_input", "CONFIG_KEY"]
