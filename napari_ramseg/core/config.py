"""The single source of truth for every default: the CLI, the widgets and the checkpoint read these."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from .device import DEVICE_CHOICES, PRECISION_CHOICES
from .labels import VESSELS, LabelScheme
from .options import option


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the paper's U-Net and its restoration decoder."""

    in_channels: int = 3
    base_width: int = option(16, help="channels of the first U-Net level; the paper's is 16", label="Model width",
                             min=2, max=256)
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

    size: int = option(256, help="training crop / network input side in pixels (a multiple of 16)", label="Size (px)",
                       min=16, max=4096, step=16)
    long_side: int | None = option(
        None, help="keep each image's aspect and scale its longer side to this many pixels (one field-of-view scale "
        "for photographs of different resolutions); training takes --size crops, prediction slides a window",
        label="Long side (px)", min=0, max=8192, step=16, special="off: resize to size x size")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class MethodConfig:
    """The three parts of RAM-DSIR and their weights (Zhou, Qi, Shi, ECCV 2022); all off gives the ERM baseline."""

    ram: bool = option(True, help="random amplitude mixup", label="RAM")
    dsir: bool = option(True, help="domain-specific image restoration", label="DSIR")
    consistency: bool = option(True, help="the semantic-consistency loss", label="Consistency")
    window_ratio: float = option(0.1, help="RAM window ratio L: half-width of the mixed low-frequency window, as a "
                                 "fraction of min(H, W)", label="RAM window", min=0.01, max=0.5, step=0.01, decimals=3)
    lam_mode: Literal["uniform", "discrete"] = option(
        "uniform", help="how RAM draws its mixing weight λ: uniform in [0, 1], or from a few discrete values",
        aliases=("--lam",), label="RAM λ")
    consistency_weight: float = 0.5
    restoration_weight: float = 0.1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


MIN_AUTO_VAL_INTERVAL = 50  # val_every 0: no closer than this (30 steps at 96 px validated 10 times took 165 s)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; stored in ``model.json``."""

    labels: LabelScheme = VESSELS
    model: ModelConfig = field(default_factory=ModelConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    iterations: int = option(1000, help="training steps", min=1, max=10_000_000)
    batch: int = option(8, help="images per optimizer step (under torchrun: the global batch)", min=1, max=1024)
    lr: float = option(2e-3, help="learning rate (Adam, polynomial decay)", label="Learning rate", min=1e-6, max=1.0,
                       step=1e-4, decimals=6)
    poly_power: float = 0.9
    scale_aug_p: float = 0.5  # with this probability, scale up by U(1, scale_aug_max) in x and y
    scale_aug_max: float = 1.5
    # issue 28's recipe options beside RAM (core/data/photometric.py, --partners): both off by default
    photometric: float = option(
        0.0, help="with this probability, each training image gets a random brightness, contrast, gamma, colour "
        "balance, blur and noise change beside RAM (0: off)", label="Photometric aug.", min=0.0, max=1.0, step=0.05,
        decimals=2, special="off")
    partner_share: float = option(
        0.5, help="with --partners, the share of RAM partners drawn from those unlabelled images instead of the other "
        "source domains", label="Partner share", min=0.0, max=1.0, step=0.05, decimals=2, dock=False)
    val_fraction: float = option(0.2, help="of each source domain's cases, the share held out for validation",
                                 label="Validation share", min=0.0, max=0.9, step=0.05, decimals=2)
    val_every: int = option(0, help="iterations between validations (0: about 10 over the run, at most one every "
                            "50 iterations)", label="Validate every", min=0, max=10_000_000,
                            special="auto (about 10 per run)")
    threshold: float = 0.5  # sigmoid probability for a positive pixel (the paper used 0.75)
    # weight of the soft-clDice term (losses.CenterlineDiceLoss) beside BCE + Dice, on both views;
    # 0 leaves it out (the method as published). 1.0 is clDice's own 1:1 Dice:clDice mix (alpha 0.5).
    cldice_weight: float = option(
        0.0, help="weight of a soft-clDice (skeleton) term beside BCE + Dice (0: off; 1 is clDice's own mix). It trades: "
        "more thin-vessel recall for slightly lower Dice on source validation (at 1: thin-vessel recall +0.04-0.05, "
        "Dice -0.01; bench/results/thin_vessels.md)", metavar="W", label="clDice weight", min=0.0, max=10.0, step=0.1,
        decimals=2, special="off")
    seed: int = option(0, help="random seed (split, initialisation, sampling)", min=0, max=2**31 - 1)
    device: str = option("auto", help="auto picks CUDA, then MPS, then CPU", choices=DEVICE_CHOICES, dock=False)
    precision: str = option("auto", help="autocast: auto is bf16 where it is faster (GPUs, CPUs with native bf16), "
                            "else fp32", choices=PRECISION_CHOICES, dock=False)
    num_threads: int = option(0, help="CPU threads for torch (0: torch's default)", aliases=("--threads",),
                              label="CPU threads", min=0, max=1024, special="torch's default")
    grad_accumulation: int = option(1, help="micro-batches of --batch per optimizer step (gradients are summed; under "
                                    "torchrun they are reduced across processes only after the last one)",
                                    label="Accumulation", min=1, max=1024)
    sync_batchnorm: bool = option(False, help="under torchrun, every BatchNorm (the per-domain ones too) uses the "
                                  "statistics of the global batch; --batch is always the global batch, split evenly "
                                  "over the processes", dock=False)
    # besides those at each validation and at a stop
    resume_every_s: float = option(
        300.0, help="also write a resume state every SECONDS of training, so that a crash costs minutes (0: only at "
        "each validation and at a stop). Ctrl-C or SIGTERM ends a run after the current step with a resume state "
        "(exit 130 or 143); a second signal stops at once", flag="--resume-every", metavar="SECONDS",
        label="Resume state every", min=0, max=7 * 24 * 3600, step=60, decimals=0, suffix=" s",
        special="only at validation and Stop")
    # one run gives a held-out score against iterations (bench/recipes/budget_curve.py) without a run per budget
    snapshot_every: int = option(
        0, help="also keep the network every N iterations as a model folder of its own under snapshots/ (the state "
        "at that iteration, not the best; 0: none)", flag="--snapshot-every", metavar="N", label="Snapshot every",
        min=0, max=10_000_000, dock=False)

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

    def validation_interval(self) -> int:
        """Iterations between validations: ``val_every``, or for 0 about 10 over the run but never more
        often than every ``MIN_AUTO_VAL_INTERVAL`` (a short run validates at its end only: a validation
        may cost as much as dozens of steps)."""
        return self.val_every or max(MIN_AUTO_VAL_INTERVAL, self.iterations // 10)

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
    """A fine-tune round's own settings (``core/finetune/round.py``); everything else is the base model's
    ``TrainConfig``. ``ramseg finetune`` and the Correct and fine-tune dock take their defaults here.

    Sized so that a round from 3 corrections finishes within 2 minutes on a 2-core CPU with replay on
    (about 50 s with the CPU quiet, 90 s under a load of 7, on AVX-512 BF16 CPUs; 81 s on a quiet 2-core
    AVX2-only CPU in fp32, 55 s of it the 40 steps, ``bench/results/finetune_time.md``; there, with one
    core taken by a training job, 179 s: over the limit), and chosen on one direction
    only (HRF+STARE->CHASE_DB1, 3 random corrections; ``bench/results/finetune_gain_base_s1.md``). The old
    defaults (100 iterations at the base's batch of 8, the whole network, lr x 0.1, half of each
    batch corrections) took 8 minutes on this CPU."""

    iterations: int = option(40, help="the round's training steps", min=1, max=1_000_000)
    seed: int = option(0, help="random seed (ROI jitter, sampling)", min=0, max=2**31 - 1)
    device: str = option("auto", help="auto picks CUDA, then MPS, then CPU", choices=DEVICE_CHOICES, dock=False)
    precision: str = option("auto", help="autocast for the round: auto is bf16 where it is faster (GPUs, CPUs with "
                            "native bf16), else fp32", choices=PRECISION_CHOICES, dock=False)
    lr_scale: float = option(0.5, help="the round's learning rate: the source model's learning rate times this",
                             label="Learning rate x", min=1e-4, max=10.0, step=0.05, decimals=4)
    correction_share: float = option(0.75, help="with --replay, the share of every batch drawn from the corrected "
                                     "cases", label="Correction share", min=0.0, max=1.0, step=0.05, decimals=2)
    batch: int | None = option(4, help="images per step", min=0, max=1024, special="the base model's batch")
    freeze: Literal["none", "encoder"] = option(
        "encoder", help="encoder: only the decoder and head learn (no encoder backward, about half the step); "
        "none: the whole network learns")
    target_style_share: float = option(0.5, help="with --target-style, the share of RAM partners drawn from the new "
                                       "site's scans", label="Target-style share", min=0.0, max=1.0, step=0.05,
                                       decimals=2)


REVIEW_PRIORITIES = ("uncertainty", "disagreement", "representative", "random")


@dataclass(frozen=True)
class ReviewConfig:
    """Which cases a clinician should look at first (``core/review/priority.py``), for the worklist dock and the
    ``report.csv`` of ``ramseg predict`` on a folder.

    ``priority`` names the score cases are ranked by (highest first): ``"uncertainty"`` (mean predictive
    entropy, free with every prediction), ``"disagreement"`` (variance of the predictions over the scan and
    amplitude-mixed views of it, ``len(domains) x len(lambdas)`` extra network passes), ``"representative"``
    (a set-level order: cases that stand for the rest of the folder, from each case's encoder descriptor,
    one encoder pass per case; ranked once the folder is done) or ``"random"``. The default stays
    ``"uncertainty"``: at k = 3 corrections representative's mean gain was below entropy's (+0.102 vs
    +0.106; random +0.102), at k = 5 above it (+0.114 vs +0.106) but not in every direction, and no
    ranking beat random in every direction (``bench/results/finetune_gain.md``).
    The views are RAM's own transform (``core/method/ram.py``) with the partner amplitudes taken from the source
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
    """The optic disc's two stages (``core/tasks/disc/``): the coarse locator and the disc-centred ROI.

    These are the defaults: a model package carries the settings its benchmark rows were measured
    with (model.json's ``"disc"`` block, chosen by bench/recipes/optic_disc_settings.py) and DiscPredictor lays
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
    # (the model's most confident plausible candidate); chosen on source photographs
    # (bench/recipes/optic_disc_settings.py)
    pick: str = "first"
    roi_ratio: float = 1.34  # ROI side / disc diameter: the median Drishti-GS packaging (bench/common/tasks.py)
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
    # "not a colour fundus image" (core/tasks/disc/fundus.py): mean R / (R + G + B) - 1/3 inside the field of
    # view must reach this (grey 0; 0 turns the check off). Chosen on fundus images only, never on the
    # images it is meant to refuse: 0.8 (FitConfig.margin's convention) x the lowest red excess of every
    # photograph and crop of the project's fundus sets, HRF, STARE, CHASE_DB1, Drishti-GS, DRIONS-DB and
    # the DoFE samples (0.105, a DRIONS-DB slide; bench/recipes/optic_disc_settings.py --fundus-check ->
    # bench/results/fundus_check.json, which also holds each benchmark direction's own threshold)
    min_red_excess: float = 0.084


@dataclass(frozen=True)
class DiscRoiSampling:
    """How a labelled fundus image becomes training ROIs of the optic disc model (``core/tasks/disc/roi.py``):
    the training folders of the shipped models (``bench/recipes/optic_disc_data.py``) and a fine-tune round's
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
    """The check that a scan looks like a model's source domains (``core/shift/domain_fit.py``).

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
    """Test-time adaptation to the scan in front of the model (``core/inference/adapt/``): off unless asked for
    (``ramseg predict|evaluate --adapt [METHOD]``, the Segment dock's "adapt to this scan").

    Windows are in frequency bins of the model's stored source spectra (``source_profile``, whose
    side is ``FitConfig.style_side``): ``window`` x that side bins either side of zero frequency, i.e.
    cycles per image, so one setting means the same style at every image size.

    These are the defaults: a model package may carry settings per method chosen on its own source
    domains (model.json's ``"adapt"`` block, e.g. the bundled models' align window and strength, by
    bench/recipes/adaptation_settings.py), which ``AdaptedPredictor`` lays over these unless given a config.
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
# The registry's names (core/inference/adapt/), here so the CLI and the docks list them without importing torch;
# tests/core/inference/test_adapt.py checks the two agree.
ADAPT_METHODS = ("align", "prompt", "adabn", "tent")


@dataclass(frozen=True)
class RefineConfig:
    """How a mask follows a clinician's strokes (``core/review/refine.py``). The method and its settings were
    chosen by bench/strokes/benchmark.py on leave-one-camera-out directions (bench/results/strokes/README.md)."""

    # head, reach 200, hidden 32, consistency 0.1: the best mean Dice after 5 strokes over the three vessel
    # directions (0.755; the threshold move at reach 15, the default before: 0.724)
    method: Literal["threshold", "random_walker", "head"] = option(
        "head", help="how a mask follows the strokes: a per-scan head on the network's features (head), or the "
        "network's probabilities alone (threshold, random_walker)", label="Refinement")
    reach: int = option(200, help="pixels around a stroke that it may change, counted at the model's working scale "
                        "(a photograph's 768 px long side, a disc ROI's 256 px)", label="Stroke reach", min=1, max=512)
    slices: int = option(2, help="in a volume, the slices above and below a stroked slice that its strokes refine too",
                         label="Stroke slices", min=0, max=64)
    quantile: float = 0.1  # threshold: a stroke's faint end, the share of its pixels it may leave out
    floor: float = 0.2  # threshold: a positive stroke never takes pixels the network gives less than this
    ceiling: float = 0.8  # threshold: a negative stroke never removes pixels the network gives more than this
    beta: float = 130.0  # random walker: how strongly probability edges stop the walk
    head_steps: int = 50  # head: Adam steps of the per-scan correction (core/review/refine_head.py)
    head_hidden: int = 32  # head: 0, a linear correction of the logit; n, one hidden layer of n
    head_consistency: float = 0.1  # head: what an unstroked pixel's "stay as the mask is" weighs against a stroked one
    # head: within head_near px of a stroke (working scale) the head's word stands; beyond, only components of
    # head_min_size px it flips past the cut by head_margin (logit): no specks or ragged edges far from a stroke.
    # -1: every change within the reach (the first head, which did both)
    head_near: int = 10
    head_margin: float = 1.0
    head_min_size: int = 30
    # head: its correction of the logit is smoothed (Gaussian, px at the working scale) before the cut, against a
    # ragged rim along a stroke. 0 (chosen, bench/results/strokes round 4): no smoothing
    head_smooth: float = 0.0
    # a "not" stroke also clears the foreground connected to it within this band (px, working scale): the rim a narrow
    # stroke leaves along a false branch. 0: measured and not chosen (bench/results/strokes/README.md, round 5)
    negative_band: int = 0
