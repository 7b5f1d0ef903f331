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
    """The server could not be reached, refused the token or refused the request (one line)."""


@dataclass
class RemoteCase:
    """A case segmented by a server: ``CaseResult``'s fields, the mask as an array (None when refused)."""

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

    @property
    def refused(self) -> bool:
        return self.mask is None


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

    def segment(self, image: str | Path, model: str = "default", adapt: str | None = None, review: str | None = None,
                postprocess: bool = False, precision: str = "auto") -> RemoteCase:
        """Segment the image file ``image`` on the server (read here only to be sent)."""
        from ..io import suffix_of

        path = Path(image)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise RamsegInputError(f"cannot read ({exc.strerror or type(exc).__name__})", path) from None
        params = {"model": model, "format": suffix_of(path).lstrip("."), "postprocess": str(bool(postprocess)).lower(),
                  "precision": precision}
        params.update({k: v for k, v in (("adapt", adapt), ("review", review)) if v})
        answer = self._call("POST", "/segment", params=params, content=data,
                            headers={"Content-Type": "application/octet-stream"})
        return RemoteCase(answer["model"], answer["task"], answer["refusal"], decode_mask(answer.get("mask")),
                          answer.get("fit"), answer.get("measures") or {}, answer.get("extras") or {},
                          answer.get("disagreement"), answer.get("descriptor"), bool(answer.get("reliable")), answer)

    def finetune(self, model: str, pairs: list[tuple[str | Path, str | Path]], iterations: int | None = None,
                 precision: str = "auto", seed: int | None = None) -> dict:
        """Start a fine-tune round of ``model`` on (image file, corrected mask file) pairs; the job (its ``id``)."""
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
        body = {"model": model, "cases": cases, "iterations": iterations, "precision": precision, "seed": seed}
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
                              "(the server's and yours must hold the same token)")
        try:
            answer = response.json()
        except ValueError:
            raise ServerError(f"the server at {self.url} answered {response.status_code} without JSON; "
                              "is it a ramseg server?") from None
        if response.status_code != expect:
            detail = answer.get("detail") if isinstance(answer, dict) else None
            raise ServerError(f"the ramseg server at {self.url} refused the request ({response.status_code}): "
                              f"{detail if isinstance(detail, str) else answer}")
        return answer


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
