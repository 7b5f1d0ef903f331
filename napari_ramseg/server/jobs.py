"""Long work on the server, one job at a time in the background: fine-tuning from uploaded corrections.

``JobQueue`` runs jobs in submission order on one worker thread; each has a state (``queued``,
``running``, ``done``, ``failed``, ``cancelled``), its progress (the core's ``FinetuneEvent``: phase,
step, total, message) and, when done, its result. Cancelling a queued job drops it; a running one
stops at its next step (``should_stop``), and ``core/finetune/round.py`` writes a version only when it is
complete, so a cancelled round leaves nothing half-written. Stopping the server cancels every job
and waits for the running one to stop (``JobQueue.stop``).

A fine-tune round (``finetune.job``) saves the uploaded image/mask pairs into the base model's project
on the server, ``<models>/<base>-finetuned/corrections``, and writes the new version beside it as
``<models>/<base>-finetuned/vNNN`` (``core/finetune/job.finetune_from_files``): the base model is only
read, the versions keep their lineage in ``model.json`` and the catalog offers each as ``<base>-finetuned.vNNN``.
Later rounds of the same base learn from every correction uploaded so far, as a local project does.
"""

from __future__ import annotations

import base64
import binascii
import queue
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import RamsegInputError, one_line

FINETUNED = "-finetuned"  # <base><FINETUNED>/: a base model's corrections project and its versions
KEPT_JOBS = 200  # finished jobs remembered for GET /jobs/{id}, the oldest forgotten first


@dataclass
class Job:
    kind: str
    model: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    state: str = "queued"
    progress: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    error: str = ""
    created: float = field(default_factory=time.time)
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "model": self.model, "state": self.state,
                "progress": dict(self.progress), "result": self.result, "error": self.error}


class JobQueue:
    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None

    def submit(self, job: Job, work: Callable[[Job], dict]) -> Job:
        with self._lock:
            self._jobs[job.id] = job
            finished = [j for j in self._jobs.values() if j.state in ("done", "failed", "cancelled")]
            for old in sorted(finished, key=lambda j: j.created)[: max(0, len(self._jobs) - KEPT_JOBS)]:
                del self._jobs[old.id]
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._run, name="ramseg-jobs", daemon=True)
                self._worker.start()
        self._queue.put((job, work))
        return job

    def get(self, job_id: str) -> Job:
        with self._lock:
            if job_id not in self._jobs:
                raise LookupError(f"no job {job_id[:40]!r} on this server")
            return self._jobs[job_id]

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        job.cancel.set()
        if job.state == "queued":
            job.state = "cancelled"
        return job

    def stop(self, timeout: float = 120.0) -> None:
        """Cancel every job and wait (up to ``timeout``) for the running one to stop at its next step, so
        a server that is stopped leaves no round half-done (``core/finetune/round.py`` writes none)."""
        with self._lock:
            jobs, worker = list(self._jobs.values()), self._worker
        for job in jobs:
            job.cancel.set()
            if job.state == "queued":
                job.state = "cancelled"
        if worker is not None and worker.is_alive():
            self._queue.put(None)
            worker.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:  # stop()
                return
            job, work = item
            if job.cancel.is_set():
                job.state = "cancelled"
                continue
            job.state = "running"
            try:
                job.result = work(job)
                job.state = "cancelled" if job.cancel.is_set() and job.result.get("stopped") else "done"
            except RamsegInputError as exc:
                job.state, job.error = "failed", exc.problem
            except Exception as exc:  # noqa: BLE001  a failed job is reported, and the queue goes on
                job.state, job.error = "failed", one_line(exc)


def decode_cases(cases: list[dict], folder: Path, prefix: str) -> tuple[list[Path], list[Path]]:
    """The uploaded image/mask pairs written as ``<prefix>-NNN.<ending>`` files in ``folder``."""
    from .cases import upload_suffixes

    images, masks = [], []
    for i, case in enumerate(cases, 1):
        for kind, out in (("image", images), ("mask", masks)):
            suffix = "." + str(case.get(f"{kind}_format", "")).lower().lstrip(".")
            if suffix not in upload_suffixes():
                allowed = ", ".join(upload_suffixes())
                raise RamsegInputError(f"case {i}: {kind}_format {suffix!r} is not one of {allowed}")
            try:
                data = base64.b64decode(str(case.get(kind, "")), validate=True)
            except (binascii.Error, ValueError):
                raise RamsegInputError(f"case {i}: the {kind} is not base64") from None
            if not data:
                raise RamsegInputError(f"case {i}: the {kind} is empty")
            path = folder / kind / f"{prefix}-{i:03d}{suffix}"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(data)
            out.append(path)
    return images, masks


def finetune_job(catalog: Any, base: Any, cases: list[dict], settings: dict) -> Callable[[Job], dict]:
    """The work of one fine-tune round of the catalog entry ``base`` on the uploaded ``cases``."""
    from ..core.config import FinetuneConfig
    from ..core.finetune.job import finetune_from_files

    family = base.path.parent  # a version fine-tuned here: its round goes beside it, its lineage grows
    served = family.name.endswith(FINETUNED) and family.parent == catalog.models_dir
    out = family if served else catalog.models_dir / f"{base.name}{FINETUNED}"

    def work(job: Job) -> dict:
        def on_event(event: Any) -> None:
            job.progress = {"phase": event.phase, "iteration": event.iteration, "total": event.total,
                            "message": event.message}

        with tempfile.TemporaryDirectory(prefix="ramseg-job-") as folder:
            images, masks = decode_cases(cases, Path(folder), job.id)
            config = FinetuneConfig(device=catalog.device, **settings)
            result = finetune_from_files(base.path, out, config, images=images, masks=masks, on_event=on_event,
                                         should_stop=job.cancel.is_set, command="ramseg serve: POST /jobs/finetune")
        if result.stopped or result.version is None:
            return {"stopped": True, "version": None}
        return {"stopped": False, "version": f"{out.name}.{result.version}", "base": base.name,
                "round": result.round, "before_dice": result.before_dice, "after_dice": result.after_dice,
                "worse": result.worse, "train_cases": len(result.train_cases), "val_cases": len(result.val_cases)}

    return work


TRAIN_PLACES = ("format", "domains", "target", "labels", "label_kind", "epochs")  # besides TrainConfig's settings
NOT_FROM_REQUESTS = ("device", "data", "out", "resume", "partners", "command", "extra")  # the server's, or paths


def train_request(data_root: Path | None, models_dir: Path | None, body: Any) -> tuple[str, Any]:
    """(the run's name, a checked ``core.training.job.TrainRequest``) for ``POST /jobs/train``: ``data`` names a
    folder in the server's ``--data`` folder, ``name`` the new model (default ``<data>-<time>``), and the
    other keys are TrainConfig settings by name (``iterations``, ``size``, ...) or the layout's choices."""
    import datetime as dt

    from ..core.training.job import TRAIN_SETTINGS, TrainRequest
    from .catalog import NAME

    if data_root is None or models_dir is None:
        raise RamsegInputError("this server trains on no data: start it with --data DIR and --models DIR")
    if not isinstance(body, dict) or not isinstance(body.get("data"), str):
        raise RamsegInputError("the request must be a JSON object naming a \"data\" folder of the server's --data")
    folders = sorted(p.name for p in data_root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if body["data"] not in folders:
        raise LookupError(f"no data folder named {body['data'][:80]!r} on this server; data folders: "
                          f"{', '.join(folders) or 'none'}. A request names a folder, never a path")
    name = body.get("name") or f"{body['data']}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    if not isinstance(name, str) or not NAME.match(name) or name.endswith(FINETUNED) or (models_dir / name).exists():
        raise RamsegInputError(f"\"name\" {str(name)[:80]!r} must be a new model's name (letters, digits, . _ -)")
    allowed = {s.name for s in TRAIN_SETTINGS if s.name not in NOT_FROM_REQUESTS} | set(TRAIN_PLACES)
    unknown = sorted(set(body) - allowed - {"data", "name"})
    if unknown:
        raise RamsegInputError(f"unknown training settings: {', '.join(unknown)[:200]}")
    settings = {k: v for k, v in body.items() if k in allowed}
    try:
        return name, TrainRequest(data=data_root / body["data"], out=models_dir / name, **settings)
    except (TypeError, ValueError) as exc:
        raise RamsegInputError(f"bad training settings: {getattr(exc, 'problem', None) or exc}") from None


def train_job(request: Any, device: str) -> Callable[[Job], dict]:
    """The work of one training run on the server's data (``core.training.job.run_training``)."""
    import dataclasses

    from ..core.training.job import run_training

    def work(job: Job) -> dict:
        def on_event(event: Any) -> None:
            job.progress = {"phase": "train", "iteration": event.iteration, "total": event.total, "message": "",
                            "loss": event.losses.get("loss"), "validation": _plain(event.validation)}

        result = run_training(dataclasses.replace(request, device=device), on_event=on_event,
                              should_stop=job.cancel.is_set)
        done = not result.stopped and result.run_dir is not None
        return {"stopped": not done, "version": request.out.name if done else None,
                "iterations_done": result.iterations_done, "validation": _plain(result.validation)}

    return work


def _plain(value: Any) -> Any:
    from .cases import jsonable

    return jsonable(value)
