"""``ramseg predict``: segment an image, a volume or a folder of them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core.config import REVIEW_PRIORITIES, ReviewConfig
from ..errors import RamsegInputError, naming
from ._common import add_adapt, add_device, adapt_line, adapt_predictor, progress_bar, stderr
from ._remote import add_server_options, refuse_local_options

REVIEW = ReviewConfig()


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="segment images or volumes")
    p.add_argument("--model", default="default",
                   help="a bundled model's name (default, vessels, optic-disc), a run folder, a .safetensors file, "
                        "or a BioImage.IO .zip package exported by ramseg export (default: default)")
    p.add_argument("--input", required=True, type=Path,
                   help="image/volume file, a folder of them, or a DICOM series (its folder or one of its files)")
    p.add_argument("--output", required=True, type=Path, help="mask file, or a folder for folder input")
    p.add_argument("--series", default=None,
                   help="DICOM input: the series to segment (SeriesInstanceUID or SeriesNumber) when the folder "
                        "holds several")
    p.add_argument("--dicom-seg", type=Path, default=None, metavar="FILE.dcm",
                   help="DICOM input: also write the labels as DICOM-SEG (needs highdicom)")
    p.add_argument("--postprocess", action="store_true", help="largest component per structure and hole filling")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--verbose", action="store_true",
                   help="also print the model's task settings (the optic disc's two-stage settings)")
    _add_review(p)
    add_adapt(p)
    add_device(p)
    add_server_options(p)


def run(args: argparse.Namespace) -> int:
    from ..core.review.pipeline import UNREADABLE, CaseOptions, read_case, unreadable_row
    from ..core.review.priority import NEEDS

    refuse_local_options(args, {"--device": "auto", "--verbose": False})
    cases = _RemoteCases(args) if args.server else _LocalCases(args)
    pairs = _prediction_pairs(args.input, args.output)  # (scan, mask, case name)
    dicom = _is_dicom(args.input)
    if (args.series is not None or args.dicom_seg is not None) and not dicom:
        raise RamsegInputError("--series and --dicom-seg are for DICOM input", args.input)
    if dicom and args.server:
        raise RamsegInputError("--server takes image files (PNG, JPEG, TIFF, NIfTI); segment a DICOM series here, "
                               "or convert it to NIfTI first", args.input)
    folder = args.input.is_dir() and not dicom  # report.csv, one row per case
    if args.verbose:  # a task's own settings (the optic disc's two stages): developers' words, on request
        cases.settings_line(dicom)
    options = CaseOptions(postprocess=args.postprocess, review=NEEDS.get(args.review) if folder else None)
    rows = []
    with progress_bar(len(pairs), "predict", quiet=len(pairs) == 1) as bar:
        for source, target, case in pairs:
            image, unreadable = (_read_dicom(source, args.series), "") if dicom else read_case(source)
            if image is None:  # one bad file does not cost the folder its other masks and its report
                if len(pairs) == 1:  # the one file named: the reader's own words
                    raise RamsegInputError(unreadable.removeprefix(UNREADABLE), source)
                bar.write(f"ramseg: warning: {source}: {unreadable}; no mask written", file=sys.stderr)
                rows.append(unreadable_row(case, source.name, unreadable))
                bar.update(1)
                continue
            result, row = cases.segment(source, image, options, case if folder else None)
            if result.refused:
                if len(pairs) == 1:
                    raise RamsegInputError(result.refusal, source)
                # listed in the report, first for review, with the reason (as in the worklist); no mask
                bar.write(f"ramseg: warning: {source}: {result.refusal}; no mask written", file=sys.stderr)
                rows += [row] if row else []
                bar.update(1)
                continue
            if not result.reliable:  # the mask is still written (report.csv marks its measures): the user decides
                bar.write(f"ramseg: warning: {source}: {result.fit.differs}", file=sys.stderr)
            if args.adapt:
                bar.write(f"ramseg: {source.name}: {cases.adapt_line()}", file=sys.stderr)
            written = _write_masks(args, target, result.prediction.labels, image, cases.labels)
            rows += [row] if row else []
            bar.update(1)
            if len(pairs) == 1:
                shape = result.prediction.labels.shape
                stderr(f"wrote {written} ({', '.join(cases.channel_names)}; shape {shape})")
                summary = result.task.summary_line(result)
                if summary:
                    stderr(summary + ("" if result.reliable else "; unreliable: the scan does not fit the model"))
    if rows:
        _write_report(args, rows)
    return 0


class _LocalCases:
    """Cases segmented here: the model loaded once, ``core.review.pipeline.segment_case`` per case."""

    def __init__(self, args: argparse.Namespace):
        from ..core.inference.predictor import Predictor
        from ..models import resolve_model

        with naming(f"--model {args.model}"):  # a bad model is the option's fault, not the scan's
            self.predictor = Predictor.from_path(resolve_model(args.model), device=args.device,
                                                 precision=args.precision)
        with naming(f"--adapt {args.adapt}"):
            self.segmenter = adapt_predictor(self.predictor, args.adapt)
        if args.adapt:
            stderr(f"ramseg: {self.segmenter.settings_line()}")
        self.labels, self.channel_names = self.predictor.labels, self.predictor.channel_names
        self._rois = 0

    def settings_line(self, dicom: bool) -> None:
        from ..core.tasks import task_for

        line = task_for(self.labels, dicom).settings_line(self.segmenter)
        if line:
            stderr(line)

    def segment(self, source: Path, image, options, case: str | None):
        """(the ``CaseResult``, its report row when ``case`` names it)."""
        from ..core.review.pipeline import segment_case

        adapted_before = getattr(self.segmenter, "fits", 0)
        with naming(source):
            result = segment_case(self.predictor, image, options, segmenter=self.segmenter)
        self._rois = getattr(self.segmenter, "fits", 0) - adapted_before
        row = None if case is None else result.row(case, source.name, self.labels, self.channel_names,
                                                    image.spatial_shape, image.spacing)
        return result, row

    def adapt_line(self) -> str:
        where = f" (the last of {self._rois} ROIs adapted)" if self._rois > 1 else ""  # the disc adapts each ROI
        return adapt_line(self.segmenter.last) + where


class _RemoteCases:
    """Cases segmented by ``--server``: each scan file sent as it is, the answer the same ``CaseResult``
    and report row (``server/client.py``); the masks are written here, against the scan read here."""

    def __init__(self, args: argparse.Namespace):
        from ..core.labels import LabelScheme
        from ._remote import connect

        self.client, self.args = connect(args), args
        entry = self.client.model(args.model)
        self.model, self.labels = entry["name"], LabelScheme.from_dict(entry["labels"])
        self.channel_names = list(entry["channel_names"])
        self._last: dict | None = None

    def settings_line(self, dicom: bool) -> None:
        pass  # refused with --server (refuse_local_options)

    def segment(self, source: Path, image, options, case: str | None):
        """As ``_LocalCases.segment``; a server out of reach is said as itself, a case it refuses names the scan."""
        from ..server.client import ServerError

        try:
            remote = self.client.segment(source, model=self.model, adapt=self.args.adapt, review=options.review,
                                         postprocess=options.postprocess, precision=self.args.precision)
        except ServerError as exc:
            if exc.status not in (400, 413):
                raise
            raise RamsegInputError(exc.problem, source) from None
        self._last = remote.raw.get("adaptation")
        return remote.case_result(), None if case is None else remote.row(case, source.name)

    def adapt_line(self) -> str:
        def score(fit) -> str:
            return "n/a" if not fit or fit.get("score") is None else f"{fit['score']:.2f}"

        last = self._last or {}
        return (f"adapted ({last.get('method')}) on the server: fit {score(last.get('fit_before'))} -> "
                f"{score(last.get('fit_after'))}, {last.get('seconds') or 0:.2f} s")


def _write_masks(args: argparse.Namespace, target: Path, labels, image, scheme) -> Path:
    """The mask file, and the DICOM-SEG when asked for (``scheme``: the model's labels)."""
    from ..io import write_labels

    written = write_labels(target, labels, like=image, overwrite=args.overwrite)
    if args.dicom_seg is not None:
        stderr(f"wrote {_write_seg(args.dicom_seg, labels, image, scheme, args.overwrite)} (DICOM-SEG)")
    return written


def _write_report(args: argparse.Namespace, rows: list[dict]) -> None:
    from ..core.review.report import descriptors_path, write_report

    report = write_report(args.output / REVIEW.report_name, rows, args.review)
    stderr(f"wrote {report} ({len(rows)} cases, review_priority by {args.review})")
    if args.review == "representative":
        stderr(f"wrote {descriptors_path(report)} (each case's encoder descriptor, the ranking's input)")


def _add_review(p: argparse.ArgumentParser) -> None:
    p.add_argument("--review", default=REVIEW.priority, choices=REVIEW_PRIORITIES,
                   help="folder input: how report.csv ranks the cases for review (disagreement costs "
                        "extra network passes per case; representative an encoder pass per case, its "
                        f"descriptors kept in {REVIEW.descriptors_name} beside the report)")


def _is_dicom(source: Path) -> bool:
    """A DICOM series: a ``.dcm`` file, or a folder holding DICOM files (below it too) and no other images."""
    from ..io import _dicom, is_supported, suffix_of

    if source.is_dir():
        images = any(p.is_file() and is_supported(p) for p in source.iterdir())
        return not images and _dicom.holds_dicom(source)
    return suffix_of(source) in _dicom.DICOM_SUFFIXES


def _read_dicom(source: Path, series: str | None):
    """A DICOM series: the folder's one series, the one ``--series`` names, or the series of a given file."""
    from ..io import _dicom, read_image

    return _dicom.read_series(source, series=series) if source.is_dir() else read_image(source)


def _write_seg(path: Path, labels, image, scheme, overwrite: bool) -> Path:
    from ..files import atomic_write
    from ..io._dicom_seg import write_segmentation

    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists")
    atomic_write(path, lambda tmp: write_segmentation(tmp, labels, image, list(scheme.names)), suffix=".dcm")
    return path


def _prediction_pairs(source: Path, target: Path) -> list[tuple[Path, Path, str]]:
    """(input, output, case name) triples; a folder input maps every readable file to
    ``<output>/<case>.<ext>``, its case name (``io.case_names``) being its stem unless another scan shares
    it (``a.png`` and ``a.tif``: masks ``a.png.png`` and ``a.tif.tif``), so no mask replaces another. The
    input folder itself is refused as the output folder: its masks would be read as scans next time.

    A DICOM series (a folder holding DICOM files, or one of its files) is one volume: its mask is
    ``target``, or ``<target>/<folder name>.nii.gz`` when ``target`` is a folder or has no ending."""
    from ..io import case_names, is_supported, stem_of, suffix_of

    if not source.exists():
        raise RamsegInputError("input not found", source)
    if _is_dicom(source):
        name = (source if source.is_dir() else source.parent).resolve().name
        if target.is_dir() or not suffix_of(target):
            target = target / f"{name}.nii.gz"
        return [(source, target, name)]
    if source.is_file():
        if target.is_dir():
            target = target / f"{stem_of(source)}{'.nii.gz' if suffix_of(source) in ('.nii', '.nii.gz') else '.png'}"
        if target.resolve() == source.resolve():
            raise RamsegInputError("the mask would replace the input scan; choose another output", target)
        return [(source, target, stem_of(source))]
    if target.suffix and not target.is_dir():  # out.png would become a folder of masks named out.png
        raise RamsegInputError(f"a folder input writes one mask per scan into a folder; --output {target} "
                               "names a file. Give a folder (it is made if missing)", target)
    if target.resolve() == source.resolve():  # a.jpg's mask a.png would be read as a scan by the next run
        raise RamsegInputError("the masks would land among the input scans and be read as scans next time; "
                               "choose another output folder", target)
    files = sorted(p for p in source.iterdir() if p.is_file() and is_supported(p))
    if not files:
        raise RamsegInputError("no readable images (PNG, JPEG, TIFF, NIfTI) in this folder", source)
    cases = case_names(files)
    pairs = []
    for path in files:
        suffix = suffix_of(path)
        out_suffix = ".nii.gz" if suffix in (".nii", ".nii.gz") else (".tif" if suffix in (".tif", ".tiff") else ".png")
        pairs.append((path, target / f"{cases[path.name]}{out_suffix}", cases[path.name]))
    scans = {p.resolve() for p in files}
    if any(mask.resolve() in scans for _, mask, _ in pairs):
        raise RamsegInputError("the output folder would put masks over the input scans; choose another one", target)
    target.mkdir(parents=True, exist_ok=True)
    return pairs
