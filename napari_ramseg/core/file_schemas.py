"""The schemas of the JSON files napari-ramseg reads back (``napari_ramseg/schema.py`` says how).

Each file has one reader that applies its schema: ``model.json`` in ``checkpoint.ModelMetadata.from_dict``,
``resume.json`` in ``resume.read_resume_state``, a correction's ``provenance.json`` in
``correction_case.read_provenance``. A schema states what the code that uses the file relies on (types,
ranges, finite numbers); keys it does not name pass through unchanged, so files written by older and
newer versions still load. The training settings (``config``, in model.json and resume.json) have
one schema, :class:`ConfigSchema`, which a request's config passes too (``check_config``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from ..schema import Count, Finite, Schema
from .device import PRECISION_CHOICES

__all__ = ["ConfigSchema", "ModelJsonSchema", "FinetuneRecordSchema", "ResumeStateSchema", "ProvenanceSchema",
           "SplitSchema", "MAX_LR", "MAX_BATCH"]

MAX_LR = 1.0  # Adam: far above any rate that trains; 1e30 only diverges at the first step
MAX_BATCH = 4096
MAX_STEPS = 10**9  # iterations, positions in a run


def _between(lo: float, hi: float) -> Any:
    return Annotated[float, Field(ge=lo, le=hi, allow_inf_nan=False)]


def _whole(lo: int, hi: int) -> Any:
    return Annotated[int, Field(ge=lo, le=hi)]


class LabelsSchema(Schema):
    names: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1, max_length=255)]
    kind: Literal["nested", "exclusive"]


class MethodSchema(Schema):
    ram: bool = True
    dsir: bool = True
    consistency: bool = True
    window_ratio: _between(0.0, 0.5) = 0.1
    lam_mode: Literal["uniform", "discrete"] = "uniform"
    consistency_weight: _between(0.0, 1e3) = 0.5
    restoration_weight: _between(0.0, 1e3) = 0.1


class ConfigSchema(Schema):
    """TrainConfig as stored (``TrainConfig.to_dict``); the network's size limits are ``check_config``'s."""

    labels: LabelsSchema
    model: dict[str, Any] = {}
    preprocess: dict[str, Any] = {}
    method: MethodSchema = MethodSchema()
    iterations: _whole(1, MAX_STEPS) = 1000
    batch: _whole(1, MAX_BATCH) = 8
    lr: Annotated[float, Field(gt=0.0, le=MAX_LR, allow_inf_nan=False)] = 2e-3
    poly_power: _between(0.0, 100.0) = 0.9
    scale_aug_p: _between(0.0, 1.0) = 0.5
    scale_aug_max: _between(1.0, 8.0) = 1.5
    photometric: _between(0.0, 1.0) = 0.0
    partner_share: _between(0.0, 1.0) = 0.5
    val_fraction: Annotated[float, Field(ge=0.0, lt=1.0, allow_inf_nan=False)] = 0.2
    val_every: _whole(0, MAX_STEPS) = 0
    # strictly inside (0, 1), NaN refused: check_config says so in its own words
    threshold: Annotated[float, Field(allow_inf_nan=True)] = 0.5
    cldice_weight: _between(0.0, 1e3) = 0.0
    seed: _whole(0, 2**63 - 1) = 0
    device: Annotated[str, Field(max_length=64)] = "auto"
    precision: Literal[PRECISION_CHOICES] = "auto"  # type: ignore[valid-type]
    num_threads: _whole(0, 4096) = 0
    grad_accumulation: _whole(1, 4096) = 1
    sync_batchnorm: bool = False
    resume_every_s: _between(0.0, 1e9) = 300.0


class FinetuneRecordSchema(Schema):
    """model.json's ``finetune`` block: what a later round reads of its parent."""

    round: _whole(0, 10**6) = 0
    version: str | None = None
    parent_version: str | None = None
    lineage: list[str] = []
    source_lr: Annotated[float, Field(gt=0.0, le=MAX_LR, allow_inf_nan=False)] = 2e-3
    before_dice: Finite | None = None
    after_dice: Finite | None = None


class ModelJsonSchema(Schema):
    architecture: Literal["RamSegNet"]
    format_version: _whole(0, 10**6) = 0
    config: ConfigSchema
    source_domains: Annotated[list[str], Field(min_length=1, max_length=64)]
    metrics: dict[str, Any] = {}
    finetune: FinetuneRecordSchema | None = None
    command: str = ""
    resumed_with: list[str] = []
    unannotated_labels: dict[str, list[str]] = {}
    data: dict[str, Any] | None = None


class ResumeProvenanceSchema(Schema):
    command: str = ""
    resumed_with: list[str] = []


class ResumeDataSchema(Schema):
    """Which data a run trained on (``training.job.load_training_data``'s description, by content)."""

    name: str = ""
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    files: Count = 0
    format: str = ""
    source_domains: list[str] = []


class ResumeStateSchema(Schema):
    iteration: Count
    config: ConfigSchema
    domains: Annotated[list[str], Field(min_length=1, max_length=64)]
    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    pool_rng: dict[str, Any]
    pool_orders: list[list[Count]]
    provenance: ResumeProvenanceSchema = ResumeProvenanceSchema()
    grad_scaler: dict[str, Any] | None = None
    data: ResumeDataSchema | None = None  # None in states written before it was recorded


Digest = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
FileName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$", max_length=120)]
Shape = Annotated[list[_whole(1, 1 << 20)], Field(min_length=2, max_length=4)]


class CaseFilesSchema(Schema):
    """A case's files: plain names inside its own folder, never a path out of it."""

    image: FileName
    original: FileName
    final: FileName
    strokes: FileName | None = None  # a stroke-refined correction's strokes (core/review/refine.py's format)


class ProvenanceSchema(Schema):
    case_id: str
    seq: _whole(1, MAX_STEPS)
    revision: _whole(1, MAX_STEPS) = 1
    split: Literal["train", "val"]
    image_sha256: Digest
    image_order: _whole(0, MAX_STEPS) = 0
    image_name: str = ""
    files: CaseFilesSchema
    image_shape: Shape
    mask_shape: Shape
    is_volume: bool = False
    is_rgb: bool = False
    image_meta: dict[str, Any] = {}
    model: dict[str, Any] | None = None
    labels: LabelsSchema | None = None


class SplitEntrySchema(Schema):
    split: Literal["train", "val"]
    order: _whole(0, MAX_STEPS) = 0
    name: str = ""


class SplitSchema(Schema):
    images: dict[Digest, SplitEntrySchema]
    cases: dict[str, Literal["train", "val"]]
