"""What every request to ``ramseg serve`` passes first: the token, the size limit and the log line.

``Guard`` is a plain ASGI middleware around the whole app, so no route can forget it:

- the ``Authorization: Bearer <token>`` header is checked (``security.bearer_matches``, constant time)
  before anything is read; a missing or wrong token gets 401 and nothing else happens;
- a body declared larger than the limit (``Content-Length``) gets 413 before it is read, and one sent
  without a length (chunked) is counted as it arrives and stopped at the limit (413);
- one log line per request, when it is answered: client address, method, route, status, seconds and
  bytes. No query string, no file name, no pixel data: the route is logged as its template
  (``/jobs/{id}``), and a path the server does not know as ``-``, since a path could hold anything.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from starlette.exceptions import HTTPException

from .security import bearer_matches

LOG = logging.getLogger("napari_ramseg.server")


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"the request is larger than this server's limit of {_size(limit)}")


def _size(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n} bytes"


class Guard:
    def __init__(self, app: Any, token: str | None, max_body: int, routes: tuple[str, ...]):
        self.app, self.token, self.max_body, self.routes = app, token, int(max_body), routes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, seen = time.perf_counter(), {"status": 0, "in": 0, "out": 0}

        async def counted_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
            elif message["type"] == "http.response.body":
                seen["out"] += len(message.get("body", b""))
            await send(message)

        async def counted_receive() -> dict:
            message = await receive()
            if message["type"] == "http.request":
                seen["in"] += len(message.get("body", b""))
                if seen["in"] > self.max_body:
                    raise BodyTooLarge(self.max_body)
            return message

        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                await _answer(counted_send, *refusal)
            else:
                await self.app(scope, counted_receive, counted_send)
        finally:
            self._log(scope, seen, time.perf_counter() - start)

    def _refusal(self, scope: dict) -> tuple[int, str, list] | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.token is not None and not bearer_matches(headers.get("authorization"), self.token):
            why = "a wrong token" if "authorization" in headers else "no token"
            return 401, f"this server needs its token (Authorization: Bearer <token>); the request had {why}", \
                [(b"www-authenticate", b"Bearer")]
        length = headers.get("content-length", "0").strip()
        if not length.isdigit():
            return 400, "the Content-Length header is not a number", []
        if int(length) > self.max_body:
            return 413, BodyTooLarge(self.max_body).detail, []
        return None

    def _log(self, scope: dict, seen: dict, seconds: float) -> None:
        client = scope.get("client") or ("-", 0)
        path = scope.get("path", "")
        route = next((template for template in self.routes if _matches(template, path)), "-")
        LOG.info("%s %s %s %d %.3f s, %d B in, %d B out", client[0], scope.get("method", "-"), route,
                 seen["status"], seconds, seen["in"], seen["out"])


def _matches(template: str, path: str) -> bool:
    """``/jobs/{id}`` matches ``/jobs/0123abcd4567``: a ``{...}`` part is one path segment of letters and digits."""
    want, got = template.split("/"), path.split("/")
    return len(want) == len(got) and all(w == g or (w.startswith("{") and g.isalnum()) for w, g in zip(want, got))


async def _answer(send: Any, status: int, detail: str, headers: list) -> None:
    body = json.dumps({"detail": detail}).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})
