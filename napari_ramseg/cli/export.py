"""``ramseg export``: a model as a BioImage.IO package (zip) or as ONNX, for other tools and runtimes."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from ..errors import RamsegInputError
from ._common import stderr

FORMATS = ("bioimageio", "onnx")


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="write a model as a BioImage.IO package or as ONNX")
    p.add_argument("--model", default="default",
                   help="a bundled model's name (default, vessels, optic-disc), a run folder or a .safetensors file "
                        "(default: default)")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--out", required=True, type=Path, help="the .zip (bioimageio) or .onnx file to write")
    p.add_argument("--sample", type=Path, default=None,
                   help="bioimageio: the image (or volume, or DICOM series) the test tensors and cover are made from; "
                        "a bundled model (vessels, optic-disc) has its own. An optic disc model's package is tested "
                        "on the disc-centred ROI its two stages cut from the sample photograph")
    p.add_argument("--author", action="append", default=None,
                   help="bioimageio: the name of a person who made the model (repeatable; required)")
    p.add_argument("--license", default=None, help="bioimageio: SPDX licence of the weights (default CC-BY-4.0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")


def _sample_for(model: Path, sample: Path | None) -> Path:
    from ..models import BUNDLED_ROOT
    from ..plugin.sample import FUNDUS_IMAGE

    # the plugin's sample photograph shows vessels and an optic disc: both bundled models' kind of scan
    bundled_samples = {"vessels": FUNDUS_IMAGE, "optic-disc": FUNDUS_IMAGE}
    if sample is not None:
        return sample
    if model.resolve().parent == BUNDLED_ROOT.resolve() and model.name in bundled_samples:
        return bundled_samples[model.name]
    raise RamsegInputError("give --sample IMAGE: an image like the ones this model segments, for the package's "
                           "test tensors and cover", model)


EXTRA_MODULES = {"onnx": ("onnx",), "bioimageio": ("onnx", "bioimageio.spec")}


def _check_extra(fmt: str) -> None:
    """One line naming the extra to install when the export's libraries are missing (exit 2, no traceback)."""
    for module in EXTRA_MODULES[fmt]:
        try:
            importlib.import_module(module)
        except ImportError:
            raise RamsegInputError(f"--format {fmt} needs the {module.split('.')[0]} package; install napari-ramseg's "
                                   f"interchange extra: pip install 'napari-ramseg[interchange]'") from None


def run(args: argparse.Namespace) -> int:
    from ..core.models.checkpoint import load_model, resolve_model_path
    from ..models import model_card, resolve_model

    _check_extra(args.format)
    model = resolve_model(args.model)
    resolve_model_path(model)  # a missing or broken model is the first thing said
    out = Path(args.out)
    suffix = ".zip" if args.format == "bioimageio" else ".onnx"
    if out.suffix.lower() != suffix:
        raise RamsegInputError(f"--format {args.format} writes a {suffix} file; give --out NAME{suffix}", out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")
    if args.format == "onnx":
        from ..interchange.onnx_export import export_onnx

        network, metadata = load_model(model, "cpu")
        export_onnx(network, metadata, out)
        stderr(f"wrote {out} (ONNX: normalised (N, 3, H, W) in, logits out; see its metadata_props)")
        return 0
    from ..interchange.bioimageio import DEFAULT_LICENSE, export_bioimageio
    from ..io import read_image

    sample = read_image(_sample_for(model, args.sample))
    if not args.author:
        raise RamsegInputError("a BioImage.IO package names who made the model: give --author NAME (repeatable)")
    export_bioimageio(model, out, sample.array, sample.is_volume, card=model_card(model), authors=args.author,
                      license=args.license or DEFAULT_LICENSE)
    stderr(f"wrote {out} (BioImage.IO package; check it with: bioimageio test {out})")
    return 0
