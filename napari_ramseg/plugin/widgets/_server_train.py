"""The Train dock's run on a ramseg server: ``TrainProcess``'s face over ``client.train`` and its job.

With "server" as the device, the dock names its data folder by the folder's name (the server trains on
a folder of its own ``--data``; a request never names a path) and the run by its output folder's name;
the model stays on the server, offered under that name. ``ServerTraining`` has what the dock asks of a
``TrainProcess`` (``start``, ``poll``, ``is_alive``, ``finished``, ``request_stop``): a helper thread
follows the job, so the UI never waits on the network, and its progress (iteration, loss, validation)
arrives as the child process's events do. Stop cancels the job; the server's round stops at its next step.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from typing import Any

from ...errors import one_line

POLL_S = 1.0


def train_settings(request: Any) -> dict[str, Any]:
    """What of a ``TrainRequest`` a server's training job takes: the data folder and run by name, and the
    settings it accepts by name (``server/jobs.train_request``); never a path or the device."""
    from ...core.training.job import TRAIN_SETTINGS
    from ...server.jobs import NOT_FROM_REQUESTS, TRAIN_PLACES

    allowed = {s.name for s in TRAIN_SETTINGS if s.name not in NOT_FROM_REQUESTS} | set(TRAIN_PLACES)
    values = {k: v for k, v in dataclasses.asdict(request).items() if k in allowed and v is not None}
    return {"data": request.data.name, "name": request.out.name, **values}


class ServerTraining:
    def __init__(self, request: Any):
        self.request = request
        self.history: list[dict[str, Any]] = []
        self.result: dict[str, Any] | None = None
        self.error: str | None = None
        self.traceback: str | None = None
        self.stopped = self.killed = False
        self.run_dir = None  # the run folder is on the server
        self._events: queue.Queue = queue.Queue()
        self._ended = threading.Event()

    def start(self) -> "ServerTraining":
        threading.Thread(target=self._follow, name="ramseg-server-train", daemon=True).start()
        return self

    def is_alive(self) -> bool:
        return not self._ended.is_set()

    @property
    def finished(self) -> bool:
        return self._ended.is_set() and self._events.empty()

    def request_stop(self, timeout: float = 30.0) -> None:
        self.stopped = True

    stop = request_stop

    def last_error_lines(self, n: int = 5) -> list[str]:
        return []

    def poll(self) -> list[dict[str, Any]]:
        events = []
        while not self._events.empty():
            event = self._events.get_nowait()
            if event["type"] == "done":
                self.result = event
            elif event["type"] == "error":
                self.error = event["message"]
            events.append(event)
        return events

    def _follow(self) -> None:
        from ._server import server_client

        try:
            with server_client() as client:
                job = client.train(**train_settings(self.request))
                self._events.put({"type": "log", "message": f"Training on {client.url} as {job['model']} …"})
                state = client.wait(job["id"], on_progress=self._progress, poll_s=POLL_S,
                                    should_stop=lambda: self.stopped)
            self._events.put(self._ending(state, job["model"]))
        except Exception as exc:  # noqa: BLE001  the server out of reach, a refused request: one line
            self._events.put({"type": "error", "message": one_line(exc)})
        finally:
            self._ended.set()

    def _progress(self, state: dict[str, Any]) -> None:
        progress = state.get("progress") or {}
        iteration = progress.get("iteration")
        if iteration is None or (self.history and self.history[-1]["iteration"] == iteration):
            return
        event = {"type": "iteration", "iteration": iteration, "total": progress.get("total") or iteration,
                 "losses": {} if progress.get("loss") is None else {"loss": progress["loss"]},
                 "validation": progress.get("validation")}
        self.history.append(event)
        self._events.put(event)

    def _ending(self, state: dict[str, Any], model: str) -> dict[str, Any]:
        if state["state"] == "failed":
            return {"type": "error", "message": state.get("error") or "the server's training failed"}
        result = state.get("result") or {}
        return {"type": "done", "run_dir": None, "stopped": state["state"] == "cancelled" or bool(result.get("stopped")),
                "iterations_done": result.get("iterations_done", len(self.history)),
                "validation": result.get("validation"), "server_model": result.get("version"), "model": model}
