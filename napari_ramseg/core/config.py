"""The single source of truth for every default: the CLI, the widgets and the checkpoint read these."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

LabelKind = Literal["nested", "exclusive"]


@dataclass(frozen=True)
class LabelScheme:
    """How the integer class values of a mask map onto the network's output channels.

    Masks are class-index images: 0 is background and value ``i`` (1-based) is ``names[i - 1]``.

    - ``nested``: multi-label sigmoid heads for structures that contain each other, ordered from the
      outermost inwards (``["disc", "cup"]``: the disc includes the cup). Channel ``k`` is the
      binary target ``mask >= k + 1``. A single name (``["vessel"]``) is the plain binary case.
    - ``exclusive``: one softmax over background plus ``names``; the target is the class index.
    """

    names: tuple[str, ...] = ("vessel",)
    kind: LabelKind = "nested"

    def __post_init__(self) -> None:
        if not self.names:
            raise ValueError("a label scheme needs at least one foreground label")
        if self.kind not in ("nested", "exclusive"):
            raise ValueError(f"label kind must be 'nested' or 'exclusive', not {self.kind!r}")
        object.__setattr__(self, "names", tuple(self.names))

    @property
    def num_classes(self) -> int:
        """Foreground classes, i.e. the largest valid mask value."""
        return len(self.names)

    @property
    def out_channels(self) -> int:
        """Channels of the segmentation head."""
        return self.num_classes if self.kind == "nested" else self.num_classes + 1

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "kind": self.kind}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LabelScheme":
        return cls(names=tuple(data["names"]), kind=data["kind"])


VESSELS = LabelScheme(("vessel",), "nested")
OPTIC_DISC_CUP = LabelScheme(("disc", "cup"), "nested")
PROSTATE = LabelScheme(("prostate",), "exclusive")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the paper's U-Net and its restoration decoder."""

    in_channels: int = 3
    base_width: int = 16
    depth: int = 5  # levels; depth - 1 downsamplings

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class PreprocessConfig:
    """How an image is brought to the network's scale, shared by training and inference.

    ``long_side=None`` resizes every image to ``size`` x ``size`` (fundus ROIs, prostate slices).
    With ``long_side`` set, images keep their aspect ratio and are scaled so that the longer side is
    ``long_side`` pixels; training then takes random ``size`` crops and inference slides a window.
    This is how domains with very different resolutions (HRF vs STARE) meet at one field-of-view scale.
    """

    size: int = 256
    long_side: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class MethodConfig:
    """The three parts of RAM-DSIR and their weights (METHOD.md); all off gives the ERM baseline."""

    ram: bool = True
    dsir: bool = True
    consistency: bool = True
    window_ratio: float = 0.1  # L: half-width of the mixed low-frequency window, as a fraction of min(H, W)
    lam_mode: Literal["uniform", "discrete"] = "uniform"
    consistency_weight: float = 0.5
    restoration_weight: float = 0.1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; stored in ``model.json``."""

    labels: LabelScheme = VESSELS
    model: ModelConfig = field(default_factory=ModelConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    iterations: int = 1000
    batch: int = 8
    lr: float = 2e-3
    poly_power: float = 0.9
    scale_aug_p: float = 0.5  # with this probability, scale up by U(1, scale_aug_max) in x and y
    scale_aug_max: float = 1.5
    val_fraction: float = 0.2  # of each source domain's cases, held out for validation
    val_every: int = 0  # iterations between validations; 0 picks about 10 over the run
    threshold: float = 0.5  # sigmoid probability for a positive pixel (the paper used 0.75)
    # weight of the soft-clDice term (losses.CenterlineDiceLoss) beside BCE + Dice, on both views;
    # 0 leaves it out (the method as published). 1.0 is clDice's own 1:1 Dice:clDice mix (alpha 0.5).
    cldice_weight: float = 0.0
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # autocast: auto | fp32 | bf16 | fp16 (core.device.PRECISION_CHOICES)
    num_threads: int = 0  # 0 leaves torch's default
    grad_accumulation: int = 1
    sync_batchnorm: bool = False
    # wall-clock seconds between resume states written during training (besides those at each
    # validation and at a stop); 0 writes them only then
    resume_every_s: float = 300.0

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["labels"] = self.labels.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["labels"] = LabelScheme.from_dict(data["labels"])
        kwargs["model"] = ModelConfig(**data.get("model", {}))
        kwargs["preprocess"] = PreprocessConfig(**data.get("preprocess", {}))
        kwargs["method"] = MethodConfig(**data.get("method", {}))
        return cls(**kwargs)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def default(cls, path: str) -> Any:
        """One setting's default, named by its path: ``"batch"``, ``"preprocess.size"``, ``"method.ram"``."""
        value: Any = cls()
        for part in path.split("."):
            value = getattr(value, part)
        return value

    def with_settings(self, settings: dict[str, Any]) -> "TrainConfig":
        """A copy with settings changed, each named by its path (as in :meth:`default`)."""
        top: dict[str, Any] = {}
        nested: dict[str, dict[str, Any]] = {}
        for path, value in settings.items():
            head, _, rest = path.partition(".")
            if rest:
                nested.setdefault(head, {})[rest] = value
            else:
                top[head] = value
        for head, changes in nested.items():
            top[head] = dataclasses.replace(getattr(self, head), **changes)
        return dataclasses.replace(self, **top)


@dataclass(frozen=True)
class FinetuneConfig:
    """A fine-tune round's own settings (``core/finetune.py``); everything else is the base model's
    ``TrainConfig``. ``ramseg finetune`` and the Correct and fine-tune dock take their defaults here.

    Sized so that a round from 3 corrections finishes within 2 minutes on a 2-core CPU with replay on
    (about 50 s with the CPU quiet, 90 s under a load of 7, on AVX-512 BF16 CPUs; 81 s on a quiet 2-core
    AVX2-only CPU in fp32, 55 s of it the 40 steps, ``bench/results/finetune_time.md``; there, with one
    core taken by a training job, 179 s: over the limit), and chosen on one direction
    only (HRF+STARE->CHASE_DB1, 3 random corrections; ``bench/results/finetune_gain_base_s1.md``). The old
    defaults (100 iterations at the base's batch of 8, the whole network, lr x 0.1, half of each
    batch corrections) took 8 minutes on this CPU."""

    iterations: int = 40
    seed: int = 0
    device: str = "auto"
    lr_scale: float = 0.5  # the round's learning rate: the source model's learning rate times this
    correction_share: float = 0.75  # of every batch, drawn from the corrected cases when replaying sources
    batch: int | None = 4  # images per step; None: the base model's batch
    freeze: Literal["none", "encoder"] = "encoder"  # "encoder": only the decoder and head learn (no encoder backward)
    # target-style RAM: with unlabelled scans of the new site, the share of RAM partners drawn from them
    target_style_share: float = 0.5



REVIEW_PRIORITIES = ("uncertainty", "disagreement", "representative", "random")


@dataclass(frozen=True)
class ReviewConfig:
    """Which cases a clinician should look at first (``core/review.py``), for the worklist dock and the
    ``report.csv`` of ``ramseg predict`` on a folder.

    ``priority`` names the score cases are ranked by (highest first): ``"uncertainty"`` (mean predictive
    entropy, free with every prediction), ``"disagreement"`` (variance of the predictions over the scan and
    amplitude-mixed views of it, ``len(domains) x len(lambdas)`` extra network passes), ``"representative"``
    (a set-level order: cases that stand for the rest of the folder, from each case's encoder descriptor,
    one encoder pass per case; ranked once the folder is done) or ``"random"``. The default stays
    ``"uncertainty"``: at k = 3 corrections representative's mean gain was below entropy's (+0.102 vs
    +0.106; random +0.102), at k = 5 above it (+0.114 vs +0.106) but not in every direction, and no
    ranking beat random in every direction (``bench/results/finetune_gain.md``).
    The views are RAM's own transform (``core/ram.py``) with the partner amplitudes taken from the source
    spectra stored in ``model.json`` (``source_profile``): each source domain's mean style, shifted by
    each of ``spreads`` standard deviations, mixed in with each of ``lambdas`` (0: the partner's amplitude
    alone, as RAM's strongest mix)."""

    priority: Literal["uncertainty", "disagreement", "representative", "random"] = "uncertainty"
    lambdas: tuple[float, ...] = (0.0, 0.5)
    spreads: tuple[float, ...] = (0.0,)
    max_slices: int = 8  # volumes: views of this many evenly spaced slices
    seed: int = 0  # the random order
    # "representative": each case's weight in the facility location is its mean uncertainty to this power (0: all
    # alike); chosen on HRF+STARE->CHASE_DB1 only (bench/results/finetune_gain.md)
    uncertainty_power: float = 1.0
    worklist_dir: str = "ramseg-worklist"  # the worklist's folder inside the scans' folder
    report_name: str = "report.csv"
    descriptors_name: str = "descriptors.npz"  # beside report.csv: each case's encoder descriptor (representative)


DISC_PICKS = ("first", "confident")  # DiscConfig.pick's choices


@dataclass(frozen=True)
class DiscConfig:
    """The optic disc's two stages (``core/disc/``): the coarse locator and the disc-centred ROI.

    These are the defaults: a model package carries the settings its benchmark rows were measured
    with (model.json's ``"disc"`` block, chosen by bench/optic_disc_settings.py) and DiscPredictor lays
    them over these. The settings search breaks its ties towards these values, so they stay the first
    version's: a shipped model's choice (which saw every fundus set) here would steer the search of a
    direction whose unseen domain it saw."""

    coarse_long_side: int = 256  # pixels on the longer side where stage one looks for the disc
    fov_threshold: float = 0.4  # field of view: smoothed luminance above this fraction of the median
    corner_fraction: float = 0.06  # corner patches' side, as a fraction of the shorter side
    corner_dark: float = 0.45  # a corner darker than this fraction of the median is outside the field of view
    dark_corners: int = 3  # of 4 corners outside the field of view: a whole photograph, else a crop
    disc_fov_ratio: float = 0.17  # expected disc diameter / field-of-view width (about 1.8 of 12 mm at 45°)
    candidates: int = 3  # stage-one peaks each checked with the segmentation model
    # which checked candidate wins: "first" (stage one ranks, the model only vetoes) or "confident"
    # (the model's most confident plausible candidate); chosen on source photographs (bench/optic_disc_settings.py)
    pick: str = "first"
    roi_ratio: float = 1.34  # ROI side / disc diameter: the median Drishti-GS packaging (bench/tasks.py)
    refine: int = 1  # re-centre and re-scale the ROI on the predicted disc this many times
    refine_crops: int = 0  # the same for a disc-centred crop (0: segmented as it is)
    # how far a photograph's re-scale may go: the refined disc diameter stays within this factor (either
    # way: 0.8 reads as 1.25) of stage one's estimate (from the field of view); 1 re-centres only; 0:
    # unbounded. A model trained on discs that fill its ROI finds a disc that fills any ROI it is
    # given, so an over-segmented first pass grows the ROI, which grows the disc, pass after pass. A
    # crop's refinement is not bounded: its side says nothing of its disc's size.
    max_rescale: float = 0.0
    min_disc_fraction: float = 0.05  # a disc covering less of its ROI than this is no disc
    max_disc_fraction: float = 0.9  # nor one filling it (a bright patch, not a disc)
    min_confidence: float = 0.6  # mean disc probability inside the predicted disc needed to accept it
    # "not a colour fundus image" (core/disc/fundus.py): mean R / (R + G + B) - 1/3 inside the field of
    # view must reach this (grey 0; 0 turns the check off). Chosen on fundus images only, never on the
    # images it is meant to refuse: 0.8 (FitConfig.margin's convention) x the lowest red excess of every
    # photograph and crop of the project's fundus sets, HRF, STARE, CHASE_DB1, Drishti-GS, DRIONS-DB and
    # the DoFE samples (0.105, a DRIONS-DB slide; bench/optic_disc_settings.py --fundus-check ->
    # bench/results/fundus_check.json, which also holds each benchmark direction's own threshold)
    min_red_excess: float = 0.084


@dataclass(frozen=True)
class DiscRoiSampling:
    """How a labelled fundus image becomes training ROIs of the optic disc model (``core/disc/roi.py``):
    the training folders of the shipped models (``bench/optic_disc_data.py``) and a fine-tune round's
    corrected photographs are cut alike, so a round trains on what stage two sees."""

    size: int = 256  # each ROI is resized to size x size
    jitter: int = 2  # copies per case besides the ground-truth ROI, each with a small locator-like error
    shift: float = 0.12  # a copy's centre moves by up to this many disc diameters along each axis
    ratio_range: tuple[float, float] = (1.2, 1.6)  # a copy's (and a negative's) ROI side / disc diameter
    negatives: int = 1  # ROIs without the disc per whole photograph, empty masks (the model's veto)
    negative_distance: float = 1.5  # a negative's centre lies at least this many disc diameters from the disc


# Intensity handling, documented once: every image (or MRI volume) is scaled per image to [-1, 1]
# with a robust min-max between these percentiles, over all its channels together.
NORMALIZATION = {"method": "percentile_minmax", "low_percentile": 0.5, "high_percentile": 99.5, "range": [-1.0, 1.0]}


@dataclass(frozen=True)
class FitConfig:
    """The check that a scan looks like a model's source domains (``core/domain_fit.py``).

    Every image is brought to ``style_side`` x ``style_side`` after the usual normalisation; its style
    is the log-amplitude spectrum inside RAM's low-frequency window (``window_ratio`` of the model).
    The score is ``1 / (1 + D)``, D being the RMS distance, in source standard deviations, to the
    nearest source domain's mean style and intensity statistics: 1 is a source domain's mean, 0.5 one
    standard deviation away. A model's threshold is calibrated at training on its source-validation
    cases only: ``margin`` times the lowest of their scores.
    """

    style_side: int = 160  # pixels; with window_ratio 0.1 the stored spectra are 3 x 33 x 33
    max_slices: int = 32  # slices of a volume looked at (evenly spaced)
    margin: float = 0.8  # threshold = margin * lowest source-validation score
    default_threshold: float = 0.2  # a model without source-validation cases (D = 4 standard deviations)
    spectrum_sd_floor: float = 0.1  # log-amplitude units: no bin is trusted to be more stable than this
    intensity_sd_floor: float = 0.02  # normalised intensity units ([-1, 1])
    colour_tolerance: float = 0.02  # mean channel difference (normalised units) above which an image is colour


FIT = FitConfig()


@dataclass(frozen=True)
class AdaptConfig:
    """Test-time adaptation to the scan in front of the model (``core/adapt/``): off unless asked for
    (``ramseg predict|evaluate --adapt [METHOD]``, the Segment dock's "adapt to this scan").

    Windows are in frequency bins of the model's stored source spectra (``source_profile``, whose
    side is ``FitConfig.style_side``): ``window`` x that side bins either side of zero frequency, i.e.
    cycles per image, so one setting means the same style at every image size.

    These are the defaults: a model package may carry settings per method chosen on its own source
    domains (model.json's ``"adapt"`` block, e.g. the bundled models' align window and strength, by
    bench/adaptation_settings.py), which ``AdaptedPredictor`` lays over these unless given a config.
    """

    # what a bare --adapt runs, one of ADAPT_METHODS, chosen on source domains only: the cheapest method
    # that is safe on held-out sources (align, 1.3x plain); checked apart on the unseen domains: better
    # in 5 of 5 LODO directions, mean +0.025 (bench/results/adaptation.md)
    method: str = "align"
    window: float = 0.05  # half-width of the adapted window, fraction of the profile side (<= its window)
    strength: float = 0.5  # align: how far towards the source amplitude (RAM's 1 - lambda)
    towards: Literal["nearest", "all"] = "nearest"  # the nearest source domain's spectrum, or all of theirs
    prompt_steps: int = 3  # learned prompt: optimiser steps per scan
    prompt_lr: float = 0.05  # Adam, on the log-amplitude prompt
    memory_size: int = 8  # recent prompts kept to warm-start the next scan
    memory_neighbours: int = 3  # of them, the nearest in style averaged for the start
    tent_steps: int = 1
    tent_lr: float = 1e-3  # Adam, on the BatchNorm affine parameters
    crop: int = 256  # learned methods fit on crops this size (the training crop) of the working-scale scan
    max_slices: int = 8  # a volume adapts once, on this many evenly spaced slices
    seed: int = 0  # crop positions


ADAPT = AdaptConfig()
# The registry's names (core/adapt/), here so the CLI and the docks list them without importing torch;
# tests/core/test_adapt.py checks the two agree.
ADAPT_METHODS = ("align", "prompt", "adabn", "tent")
