"""The ``ramseg serve`` application: FastAPI routes over the core's per-case pipeline.

Routes (every one behind ``guard.Guard``: token, size limit, one log line):

- ``GET /health``: ``{"status": "ok", "version", "device"}``;
- ``GET /models``: each model by name with its label scheme, source domains and model card;
- ``POST /segment?model=NAME&format=ENDING[&adapt=METHOD][&review=disagreement|descriptor]
  [&postprocess=true][&precision=fp32][&maps=true]``: the body is the image file itself (its bytes, any reader's
  ending but DICOM); the answer is ``cases.segment_upload``'s JSON. A refusal (an MRI slice for the
  optic disc model) is an answer (200, ``refused: true``), as in ``ramseg predict`` on a folder;
- ``POST /jobs/finetune`` (JSON: ``model``, ``cases``: ``[{image, image_format, mask, mask_format}]``
  with the files' bytes in base64, FinetuneConfig settings by name: ``iterations``, ``seed``, ``precision``,
  ...): 202 and the job
  (``jobs.py``); ``POST /jobs/train`` (JSON: ``data``, a folder of ``--data`` by name; ``name``, the new
  model's; TrainConfig settings by name): 202 and the job; ``GET /jobs/{id}``: its state, progress and
  result; ``POST /jobs/{id}/cancel``.

Errors are ``{"detail": "<one line>"}``: 400 bad options or an unreadable upload, 401 no or a wrong
token, 404 no such model or job, 409 no --models folder to keep versions in (or no --data), 413 too large, 503 the
model cannot be loaded or the machine ran out of memory.
Cases run side by side, each on its own thread; their network passes are batched when they arrive
together (``batching.py``), and a case that adapts to its scan has the device to itself (``DeviceGate``).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from .. import __version__
from ..errors import RamsegInputError, one_line
from .batching import DeviceGate
from .catalog import Catalog
from .cases import SegmentRequest, segment_upload
from .guard import LOG, Guard
from .jobs import Job, JobQueue, finetune_job, train_job, train_request

ROUTES = ("/health", "/models", "/segment", "/jobs/finetune", "/jobs/train", "/jobs/{id}", "/jobs/{id}/cancel")


@dataclass
class ServerSettings:
    """What one server was started with (``ramseg serve``'s options, checked there)."""

    token: str | None = None
    models_dir: Path | None = None
    device: str = "auto"
    max_upload_bytes: int | None = None  # None: io.MAX_IMAGE_BYTES, the largest image the readers decode
    data_dir: Path | None = None  # datasets a training job may name (its folders, by name)
    batch: int | None = None  # cases per network pass at most (None: the predictor's own rule; 1: unbatched)


async def _json_body(request: Request, shape: str) -> Any:
    """A job request's JSON body, or the 400 answer saying what it should have been."""
    try:
        return await request.json()
    except (ValueError, UnicodeDecodeError):
        return _problem(400, f"the body must be JSON: {shape}")
    except ClientDisconnect:
        return _problem(400, "the client went away before the upload ended")


def _start_job(jobs: Any, kind: str, build: Any, missing_folder: bool) -> JSONResponse:
    """Queue the job ``build()`` names and makes (name, work), or answer why not: 409 where the server
    was started without the folder the job needs, 400 for a bad request, 404 for an unknown name."""
    try:
        name, work = build()
    except RamsegInputError as exc:
        return _problem(409 if missing_folder else 400, exc.problem)
    except LookupError as exc:
        return _problem(404, exc.args[0])
    return JSONResponse(jobs.submit(Job(kind, name), work).to_dict(), status_code=202)


def _problem(status: int, detail: object) -> JSONResponse:
    return JSONResponse({"detail": one_line(detail, 500, typed=False)}, status_code=status)


def create_app(settings: ServerSettings) -> Any:
    """The ASGI app: FastAPI's routes inside the guard (returned), so every request passes it."""
    from ..io import MAX_IMAGE_BYTES

    catalog = Catalog(settings.models_dir, settings.device, settings.batch)
    gate = DeviceGate()
    jobs = JobQueue()

    @contextlib.asynccontextmanager
    async def lifespan(_: Any):
        yield
        await run_in_threadpool(jobs.stop)  # a stopped server leaves no round half-done

    api = FastAPI(title="napari-ramseg server", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url=None, lifespan=lifespan)
    api.state.catalog, api.state.jobs = catalog, jobs  # for the tests and the load benchmark to look at

    _add_info_routes(api, settings, catalog)
    _add_segment_route(api, catalog, gate)
    _add_job_routes(api, settings, catalog, jobs)
    max_body = MAX_IMAGE_BYTES if settings.max_upload_bytes is None else settings.max_upload_bytes
    return Guard(api, settings.token, max_body, ROUTES)


def _add_info_routes(api: FastAPI, settings: ServerSettings, catalog: Catalog) -> None:
    """``GET /health`` and ``GET /models``."""
    @api.get("/health")
    def health() -> dict:
        from ..core.device import resolve_device

        return {"status": "ok", "version": __version__, "device": str(resolve_device(settings.device))}

    @api.get("/models")
    def models() -> dict:
        return {"models": [catalog.describe(entry) for entry in catalog.entries().values()]}


def _add_segment_route(api: FastAPI, catalog: Catalog, gate: DeviceGate) -> None:
    """``POST /segment``: one uploaded image, segmented on a pool thread."""
    @api.post("/segment")
    async def segment(request: Request, model: str = "default", format: str = "png", adapt: str | None = None,
                      review: str | None = None, postprocess: bool = False, precision: str = "auto",
                      maps: bool = False):
        try:
            options = SegmentRequest(model, format, adapt or None, review or None, postprocess, precision, maps)
            catalog.entry(model)  # an unknown name is refused before the upload is read
        except RamsegInputError as exc:
            return _problem(400, exc)
        except LookupError as exc:
            return _problem(404, exc.args[0])
        with tempfile.TemporaryDirectory(prefix="ramseg-upload-") as folder:
            body = Path(folder) / "body"
            try:
                size = await _receive(request, body)
            except ClientDisconnect:
                return _problem(400, "the client went away before the upload ended")
            if size == 0:
                return _problem(400, "the request has no image: send the image file's bytes as the body")
            return await run_in_threadpool(_segment, catalog, gate, body, options)


def _add_job_routes(api: FastAPI, settings: ServerSettings, catalog: Catalog, jobs: JobQueue) -> None:
    """``POST /jobs/finetune``, ``POST /jobs/train``, ``GET /jobs/{id}`` and ``POST /jobs/{id}/cancel``."""
    @api.post("/jobs/finetune")
    async def start_finetune(request: Request):
        body = await _json_body(request, "{\"model\", \"cases\": [...], \"iterations\", \"precision\"}")
        if isinstance(body, JSONResponse):
            return body

        def build():
            base, cases, round_settings = _finetune_request(catalog, body)
            return base.name, finetune_job(catalog, base, cases, round_settings)

        return _start_job(jobs, "finetune", build, missing_folder=catalog.models_dir is None)

    @api.post("/jobs/train")
    async def start_training(request: Request):
        body = await _json_body(request, "{\"data\": FOLDER NAME, \"iterations\", ...}")
        if isinstance(body, JSONResponse):
            return body

        def build():
            name, train = train_request(settings.data_dir, catalog.models_dir, body)
            return name, train_job(train, settings.device)

        return _start_job(jobs, "train", build,
                          missing_folder=settings.data_dir is None or catalog.models_dir is None)

    @api.get("/jobs/{job_id}")
    def job_state(job_id: str):
        try:
            return jobs.get(job_id).to_dict()
        except LookupError as exc:
            return _problem(404, exc.args[0])

    @api.post("/jobs/{job_id}/cancel")
    def cancel_job(job_id: str):
        try:
            return jobs.cancel(job_id).to_dict()
        except LookupError as exc:
            return _problem(404, exc.args[0])


async def _receive(request: Request, target: Path) -> int:
    """Write the request body to ``target`` as it arrives; its size (the guard stops it at the limit)."""
    size = 0
    with open(target, "wb") as out:
        async for chunk in request.stream():
            out.write(chunk)
            size += len(chunk)
    return size


def _segment(catalog: Catalog, gate: DeviceGate, body: Path, options: SegmentRequest) -> JSONResponse:
    try:
        entry, predictor = catalog.predictor(options.model, options.precision)
    except LookupError as exc:  # removed from the models folder while the upload arrived
        return _problem(404, exc.args[0])
    except (RamsegInputError, OSError) as exc:
        return _problem(503, f"the model {options.model!r} cannot be loaded on this server: "
                             f"{getattr(exc, 'problem', None) or exc}")
    try:
        with gate.exclusive() if options.adapt else gate.shared():  # adapting changes the network
            answer = segment_upload(predictor, body, options)
    except RamsegInputError as exc:
        return _problem(400, exc.problem)
    except MemoryError:
        return _problem(503, "the server ran out of memory on this case")
    except RuntimeError as exc:
        if "out of memory" not in str(exc).lower():
            raise
        return _problem(503, "the server's device ran out of memory on this case")
    return JSONResponse({"model": entry.name, **answer})


def _finetune_request(catalog: Catalog, body: Any) -> tuple[Any, list[dict], dict]:
    """(the base model's entry, the uploaded cases, FinetuneConfig fields) of a fine-tune request: any
    FinetuneConfig setting by name (``iterations``, ``seed``, ``precision``, ``lr_scale``, ...), checked
    against its declared bounds; never ``device``, which is the server's."""
    from ..core.config import FinetuneConfig
    from ..core.options import check_settings, settings_of

    if catalog.models_dir is None:
        raise RamsegInputError("this server keeps no model versions: start it with --models DIR to fine-tune")
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        raise RamsegInputError("the request must be a JSON object naming a \"model\"")
    cases = body.get("cases")
    if not isinstance(cases, list) or not cases or not all(isinstance(c, dict) for c in cases):
        raise RamsegInputError("\"cases\" must list at least one {image, image_format, mask, mask_format}")
    allowed = {s.name: s for s in settings_of(FinetuneConfig) if s.name != "device"}
    unknown = sorted(set(body) - set(allowed) - {"model", "cases"})
    if unknown:
        raise RamsegInputError(f"unknown fine-tuning settings: {', '.join(unknown)[:200]}")
    settings = {name: value for name, value in body.items() if name in allowed and value is not None}
    try:
        check_settings(FinetuneConfig(**settings))
    except (TypeError, ValueError) as exc:
        raise RamsegInputError(f"bad fine-tuning settings: {getattr(exc, 'problem', None) or exc}") from None
    return catalog.entry(body["model"]), cases, settings


def serve(settings: ServerSettings, host: str, port: int, ssl_keyfile: str | None = None,
          ssl_certfile: str | None = None) -> None:
    """Run the server until it is stopped (uvicorn; its own access log is off: ``Guard`` logs)."""
    import uvicorn

    if not LOG.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s ramseg serve: %(message)s"))
        LOG.addHandler(handler)
        LOG.setLevel(logging.INFO)
    uvicorn.run(create_app(settings), host=host, port=port, ssl_keyfile=ssl_keyfile, ssl_certfile=ssl_certfile,
                access_log=False, log_level="warning", server_header=False)
