"""Talking to ``ramseg serve`` from another machine (napari's docks and ``ramseg`` commands, later).

``ServerClient(url, token)`` sends the image file's bytes and reads the answer back into the same
things the local pipeline gives: the mask as an array (decoded from the PNG or NIfTI the server sent,
by the same readers), the measures, the fit and the refusal. Whatever goes wrong on the way is one
line (``ServerError``, a ``RamsegInputError``, so the CLI and the docks already say it as one): the
server cannot be reached, refuses the token, or refuses the request, with the server's own reason.
Nothing is written on the client's side.
"""

from __future__ import annotations

import base64
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RamsegInputError

TIMEOUT_S = 600.0  # a volume on a busy server may take minutes; connecting fails fast (CONNECT_S)
CONNECT_S = 10.0


class ServerError(RamsegInputError):
    """The server could not be reached, refused the token or refused the request (one line); ``status``:
    the HTTP status of a refusal (401 the token, 400 the request or its case), None when none came."""

    def __init__(self, problem: str, status: int | None = None):
        super().__init__(problem)
        self.status = status


@dataclass
class RemoteCase:
    """A case segmented by a server: ``CaseResult``'s fields, the mask as an array (None when refused),
    the case's ``report.csv`` row as the server made it, and (asked for) the probabilities and entropy."""

    model: str
    task: str
    refusal: str
    mask: np.ndarray | None
    fit: dict | None
    measures: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    disagreement: float | None = None
    descriptor: list | None = None
    reliable: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    maps: dict[str, np.ndarray] | None = field(default=None, repr=False)

    @property
    def refused(self) -> bool:
        return self.mask is None

    @property
    def channel_names(self) -> list[str]:
        return list(self.raw.get("channel_names") or [])

    def row(self, case: str, file: str) -> dict[str, Any]:
        """The case's ``report.csv`` row (``core/review/report.py``), named ``case`` and ``file`` here."""
        row = dict(self.raw.get("row") or {})
        if row.get("descriptor") is not None:
            row["descriptor"] = np.asarray(row["descriptor"], dtype=np.float64)
        return {**row, "case": case, "file": file}

    def case_result(self) -> Any:
        """The local pipeline's ``core.review.pipeline.CaseResult`` of this answer: the same task, fit, measures and
        refusal; the prediction's probabilities and entropy only when the maps were asked for."""
        from ..core.shift.domain_fit import FitResult
        from ..core.inference.predictor import Prediction
        from ..core.review.pipeline import CaseResult
        from ..core.tasks import TASKS

        task = next((t for t in TASKS if t.name == self.task), None)
        if task is None:
            raise ServerError(f"the server segmented the case as a {self.task!r} task, which this client "
                              "does not know; update napari-ramseg here")
        fields = FitResult.__dataclass_fields__
        fit = None if self.fit is None else FitResult(**{k: v for k, v in self.fit.items() if k in fields})
        prediction = None
        if not self.refused:
            maps = self.maps or {}
            prediction = Prediction(self.mask, maps.get("probabilities"), maps.get("entropy"), self.channel_names)
        descriptor = None if self.descriptor is None else np.asarray(self.descriptor, dtype=np.float64)
        # the server's report row: without the maps, the uncertainty could not be measured here
        row = self.row("", "") if self.raw.get("row") else None
        return CaseResult(task, prediction, self.refusal, fit, dict(self.measures), dict(self.extras),
                          self.disagreement, descriptor, report_row=row)


class ServerClient:
    def __init__(self, url: str, token: str | None = None, transport: Any = None, timeout: float = TIMEOUT_S,
                 verify: bool | str | Path = True):
        """``verify``: check an https server's certificate against the system's authorities (True), or
        against this CA or self-signed certificate file (a department's own); never switched off here."""
        import ssl

        import httpx

        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        kwargs: dict[str, Any] = {"transport": transport} if transport is not None else {}
        if not isinstance(verify, bool):
            try:
                kwargs["verify"] = ssl.create_default_context(cafile=str(verify))
            except (OSError, ssl.SSLError) as exc:
                raise RamsegInputError(f"cannot use this certificate file ({exc})", verify) from None
        self._http = httpx.Client(base_url=self.url, headers=headers,
                                  timeout=httpx.Timeout(timeout, connect=CONNECT_S), **kwargs)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "ServerClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def health(self) -> dict:
        return self._call("GET", "/health")

    def models(self) -> list[dict]:
        return self._call("GET", "/models")["models"]

    def segment(self, image: Any, model: str = "default", adapt: str | None = None, review: str | None = None,
                postprocess: bool = False, precision: str = "auto", maps: bool = False) -> RemoteCase:
        """Segment ``image`` on the server: an image file (read here only to be sent), or an ``io.ImageData``
        (a dock's layer), sent as a lossless TIFF (2D) or NIfTI (a volume, with its spacing and affine)."""
        from ..io import ImageData, suffix_of

        with tempfile.TemporaryDirectory(prefix="ramseg-upload-") as folder:
            path = encode_image(image, Path(folder)) if isinstance(image, ImageData) else Path(image)
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise RamsegInputError(f"cannot read ({exc.strerror or type(exc).__name__})", path) from None
        params = {"model": model, "format": suffix_of(path).lstrip("."), "postprocess": _flag(postprocess),
                  "precision": precision, "maps": _flag(maps)}
        params.update({k: v for k, v in (("adapt", adapt), ("review", review)) if v})
        answer = self._call("POST", "/segment", params=params, content=data,
                            headers={"Content-Type": "application/octet-stream"})
        return RemoteCase(answer["model"], answer["task"], answer["refusal"], decode_mask(answer.get("mask")),
                          answer.get("fit"), answer.get("measures") or {}, answer.get("extras") or {},
                          answer.get("disagreement"), answer.get("descriptor"), bool(answer.get("reliable")), answer,
                          decode_maps(answer.get("maps")))

    def model(self, name: str) -> dict:
        """``GET /models``' entry of ``name`` (a bundled model's alias too), or the one line why not."""
        from ..models import canonical_name

        models = {m["name"]: m for m in self.models()}
        found = models.get(canonical_name(name) or name) or models.get(name)
        if found is None:
            raise ServerError(f"the ramseg server at {self.url} has no model named {name!r}; "
                              f"it serves: {', '.join(models) or 'none'}")
        if not found.get("usable", True):
            raise ServerError(f"the model {name!r} on {self.url} cannot be used: {found.get('problem')}")
        return found

    def finetune(self, model: str, pairs: list[tuple[str | Path, str | Path]], iterations: int | None = None,
                 precision: str = "auto", seed: int | None = None, **settings: Any) -> dict:
        """Start a fine-tune round of ``model`` on (image file, corrected mask file) pairs; the job (its ``id``).
        ``settings``: other FinetuneConfig settings by name (``lr_scale=0.25``, ``freeze="encoder"``)."""
        from ..io import suffix_of

        cases = []
        for image, mask in pairs:
            case = {}
            for kind, path in (("image", Path(image)), ("mask", Path(mask))):
                try:
                    case[kind] = base64.b64encode(path.read_bytes()).decode("ascii")
                except OSError as exc:
                    raise RamsegInputError(f"cannot read ({exc.strerror or type(exc).__name__})", path) from None
                case[f"{kind}_format"] = suffix_of(path)
            cases.append(case)
        body = {"model": model, "cases": cases, "iterations": iterations, "precision": precision, "seed": seed,
                **settings}
        return self._call("POST", "/jobs/finetune", json=body, expect=202)

    def train(self, data: str, name: str | None = None, **settings: Any) -> dict:
        """Start training on the server's data folder ``data`` (by name) into the model ``name``; the job.
        ``settings``: TrainConfig settings by name (``iterations=2000``, ``size=384``, ...)."""
        return self._call("POST", "/jobs/train", json={"data": data, "name": name, **settings}, expect=202)

    def job(self, job_id: str) -> dict:
        return self._call("GET", f"/jobs/{job_id}")

    def cancel(self, job_id: str) -> dict:
        return self._call("POST", f"/jobs/{job_id}/cancel")

    def wait(self, job_id: str, on_progress: Any = None, poll_s: float = 1.0, should_stop: Any = None) -> dict:
        """The job once it has ended (done, failed or cancelled); ``on_progress(job)`` after each poll;
        ``should_stop()`` true cancels it on the server."""
        import time

        while True:
            job = self.job(job_id)
            if on_progress is not None:
                on_progress(job)
            if job["state"] in ("done", "failed", "cancelled"):
                return job
            if should_stop is not None and should_stop():
                self.cancel(job_id)
            time.sleep(poll_s)

    def _call(self, method: str, route: str, expect: int = 200, **kwargs: Any) -> dict:
        import httpx

        try:
            response = self._http.request(method, route, **kwargs)
        except httpx.TimeoutException:
            raise ServerError(f"the ramseg server at {self.url} did not answer in time") from None
        except httpx.ConnectError as exc:
            if "CERTIFICATE" in str(exc).upper():
                raise ServerError(f"the server at {self.url} showed a certificate this client does not trust "
                                  f"({_why(exc)}); give its CA or certificate file (verify=...)") from None
            raise ServerError(f"cannot reach the ramseg server at {self.url} ({_why(exc)}); "
                              "is `ramseg serve` running there, and is the address right?") from None
        except httpx.TransportError as exc:
            raise ServerError(f"cannot reach the ramseg server at {self.url} ({_why(exc)}); "
                              "is `ramseg serve` running there, and is the address right?") from None
        if response.status_code == 401:
            raise ServerError(f"the ramseg server at {self.url} refused the token; check the token file "
                              "(the server's and yours must hold the same token)", 401)
        try:
            answer = response.json()
        except ValueError:
            raise ServerError(f"the server at {self.url} answered {response.status_code} without JSON; "
                              "is it a ramseg server?") from None
        if response.status_code != expect:
            detail = answer.get("detail") if isinstance(answer, dict) else None
            raise ServerError(f"the ramseg server at {self.url} refused the request ({response.status_code}): "
                              f"{detail if isinstance(detail, str) else answer}", response.status_code)
        return answer


def _flag(value: bool) -> str:
    return str(bool(value)).lower()


def encode_image(image: Any, folder: Path) -> Path:
    """A lossless file of ``image`` (an ``io.ImageData``) that ``io.read_image`` reads back as the same
    array: TIFF for a 2D image, NIfTI for a volume (its spacing and affine kept)."""
    from ..io import write_image

    return write_image(folder / ("case.nii.gz" if image.is_volume else "case.tif"),
                       image if image.is_volume else image.array)


def decode_maps(maps: dict | None) -> dict[str, np.ndarray] | None:
    """The probabilities and entropy of a ``maps`` answer (a base64 ``.npz``)."""
    import io

    if maps is None:
        return None
    with np.load(io.BytesIO(base64.b64decode(maps["data"])), allow_pickle=False) as archive:
        return {name: archive[name] for name in ("probabilities", "entropy")}


def _why(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text[:120] if text else type(exc).__name__


def decode_mask(mask: dict | None) -> np.ndarray | None:
    """The mask array of a ``mask`` answer (PNG or NIfTI bytes, base64), read by ``io.read_mask``."""
    from ..io import read_mask

    if mask is None:
        return None
    if mask.get("format") not in (".png", ".nii.gz") or mask.get("encoding") != "base64":
        raise ServerError(f"the server sent a mask as {mask.get('format')!r} {mask.get('encoding')!r}; "
                          "this client reads base64 PNG or NIfTI")
    with tempfile.TemporaryDirectory(prefix="ramseg-mask-") as folder:
        path = Path(folder) / f"mask{mask['format']}"
        path.write_bytes(base64.b64decode(mask["data"]))
        return read_mask(path)


class RemotePredictor:
    """What ``core.evaluation.evaluate.evaluate_domain`` asks of a ``Predictor`` (``predict``, ``labels``, ``threshold``),
    each case segmented on the server through its per-case pipeline (``ramseg evaluate --server``)."""

    def __init__(self, client: ServerClient, model: str, precision: str = "auto", adapt: str | None = None):
        from ..core.labels import LabelScheme

        entry = client.model(model)
        self.client, self.model, self.precision, self.adapt = client, entry["name"], precision, adapt
        self.labels = LabelScheme.from_dict(entry["labels"])
        self.channel_names = list(entry.get("channel_names") or [])
        self.threshold = entry.get("threshold")

    def predict(self, array: np.ndarray, postprocess: bool = False, is_volume: bool | None = None,
                **_: Any) -> Any:
        from ..io import ImageData

        if is_volume is None:
            is_volume = array.ndim == 3 and array.shape[-1] not in (3, 4)
        axes = "ZYX" if is_volume else ("YXC" if array.ndim == 3 else "YX")
        case = self.client.segment(ImageData(np.asarray(array), axes=axes), model=self.model, adapt=self.adapt,
                                   postprocess=postprocess, precision=self.precision)
        if case.refused:
            raise RamsegInputError(case.refusal)
        return case.case_result().prediction


def segment_case_remotely(predictor: RemotePredictor, image: Any, options: Any) -> Any:
    """``core.review.pipeline.segment_case``'s twin (the Worklist dock's "server" device): ``image`` (an
    ``io.ImageData``) segmented by ``predictor``'s server with ``options``' post-processing and review
    score; the same ``CaseResult``, its report row the server's."""
    case = predictor.client.segment(image, model=predictor.model, adapt=predictor.adapt, review=options.review,
                                    postprocess=options.postprocess, precision=predictor.precision)
    return case.case_result()


def review_score_remotely(predictor: RemotePredictor, image: Any, need: str) -> Any:
    """``core.review.pipeline.review_score``'s twin: the server segments the case again and takes ``need``
    (``"disagreement"`` or ``"descriptor"``) beside it, as a local review score looks at the prediction."""
    from ..core.review.pipeline import CaseOptions

    return getattr(segment_case_remotely(predictor, image, CaseOptions(review=need)), need)
