"""A run folder and every file in it: the one place that names them and says who writes what.

::

    <run>/
      model.json, model.safetensors   the model (format: core/models/checkpoint.py), written at the end of
                                      a run or at a stop; a folder holding model.json is loadable
      metrics.json                    how the model was selected, its validation, the whole history
      train.log                       one JSON record per iteration, appended as training goes
      resume.json, resume.safetensors an unfinished run's state (format: core/training/resume.py); removed
                                      when the run completes

Every file but the log's appends is written atomically (``io.atomic_write``): at any moment a file
holds its last complete version or does not exist. The names are the on-disk format: runs written by
older versions are resumed and loaded by these names, so they never change.

Nothing here imports torch: the Train dock asks a folder whether it can be resumed from napari's process.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...files import atomic_write, atomic_write_json
from ...schema import check, read_json
from ..file_schemas import ResumeStateSchema

WEIGHTS_NAME = "model.safetensors"
METADATA_NAME = "model.json"
METRICS_NAME = "metrics.json"
LOG_NAME = "train.log"
RESUME_STATE = "resume.json"
RESUME_WEIGHTS = "resume.safetensors"
SNAPSHOTS_DIR = "snapshots"  # TrainConfig.snapshot_every: one model folder per kept iteration

NAME_FORMAT = "ramseg-%Y%m%d-%H%M%S"  # a new run's default folder name: its start time
# Where a new run goes when no folder is given: ``ramseg train`` uses the folder it is run from, the
# Train dock (whose working folder is napari's, not one the user chose) the user's home.
CLI_ROOT = Path("runs")
DOCK_ROOT_NAME = "ramseg-runs"  # under the user's home


def default_name(now: _dt.datetime | None = None) -> str:
    return (now or _dt.datetime.now()).strftime(NAME_FORMAT)


def default_run_dir(root: str | Path | None = None) -> Path:
    """``runs/ramseg-<time>`` (``ramseg train``), or ``<root>/ramseg-<time>``."""
    return Path(CLI_ROOT if root is None else root) / default_name()


def dock_run_dir() -> Path:
    """The Train dock's default: ``~/ramseg-runs/ramseg-<time>``."""
    return default_run_dir(Path.home() / DOCK_ROOT_NAME)


@dataclass(frozen=True)
class RunFolder:
    """One run's folder. Paths and reads work on every rank of a distributed job; only the process
    that owns the folder (rank 0: ``Trainer.writer``) calls the writing methods."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @classmethod
    def fresh(cls, path: str | Path | None = None) -> "RunFolder":
        """A folder for a new run (the default name when ``path`` is None); FileExistsError if it holds one."""
        folder = cls(default_run_dir() if path is None else path)
        if folder.holds_run():
            raise FileExistsError(f"{folder.path}: already holds a run; choose another --out, or continue it "
                                  f"with --resume {folder.path}")
        return folder

    # -- the files -------------------------------------------------------------------------------
    @property
    def model_json(self) -> Path:
        return self.path / METADATA_NAME

    @property
    def model_weights(self) -> Path:
        return self.path / WEIGHTS_NAME

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_NAME

    @property
    def log(self) -> Path:
        return self.path / LOG_NAME

    @property
    def resume_state(self) -> Path:
        return self.path / RESUME_STATE

    @property
    def resume_weights(self) -> Path:
        return self.path / RESUME_WEIGHTS

    def snapshot(self, iteration: int) -> "RunFolder":
        """The model folder that keeps the network at ``iteration`` (``TrainConfig.snapshot_every``)."""
        return RunFolder(self.path / SNAPSHOTS_DIR / f"iter_{iteration:07d}")

    def snapshots(self) -> list["RunFolder"]:
        """The snapshot model folders written so far, in order of iteration."""
        return sorted((RunFolder(p) for p in (self.path / SNAPSHOTS_DIR).glob("iter_*") if (p / METADATA_NAME).is_file()),
                      key=lambda f: f.path.name)

    # -- what it holds ---------------------------------------------------------------------------
    def has_model(self) -> bool:
        return self.model_json.exists()

    def has_resume_state(self) -> bool:
        return self.resume_state.is_file()

    def holds_run(self) -> bool:
        return self.has_model() or self.resume_state.exists()

    def saved_iteration(self) -> int | None:
        """The iteration the resume state continues from; None without a readable one. The schema alone
        (``file_schemas.ResumeStateSchema``): the Train dock asks from napari's process, without torch;
        reading the whole state back is ``core/training/resume.py``'s."""
        try:
            return check(ResumeStateSchema, read_json(self.resume_state, "resume state")).iteration
        except ValueError:  # RamsegInputError included
            return None

    # -- writing (the model itself: core/models/checkpoint.save_model) ---------------------------
    def write_metrics(self, metrics: dict[str, Any]) -> None:
        atomic_write_json(self.metrics, metrics)

    def append_log(self, record: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.log, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    def write_log(self, records: Iterable[dict[str, Any]]) -> None:
        """The whole log at once (atomically), e.g. for a model written only when complete."""
        text = "".join(json.dumps(r) + "\n" for r in records)
        atomic_write(self.log, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def truncate_log(self, iteration: int) -> None:
        """Drop log lines past ``iteration``: they are trained again after a resume, and logged again."""
        if not self.log.exists():
            return
        kept = []
        for line in self.log.read_text(encoding="utf-8").splitlines():
            try:
                if int(json.loads(line)["iteration"]) <= iteration:
                    kept.append(line)
            except (ValueError, KeyError, TypeError):  # a line cut short by a kill
                continue
        atomic_write(self.log, lambda tmp: tmp.write_text("".join(k + "\n" for k in kept), encoding="utf-8"))

    def remove_resume_state(self) -> None:
        """A complete run needs no resume state; it is large (optimizer moments), so drop it."""
        for path in (self.resume_state, self.resume_weights):  # JSON first: never leave JSON without weights
            path.unlink(missing_ok=True)
