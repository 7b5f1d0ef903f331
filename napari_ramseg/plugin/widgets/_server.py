"""A ramseg server as a device: its settings dialog, and the Segment dock's job through it.

"server" sits beside auto/cpu/cuda/mps in a dock's device list (``DeviceCombo(server=True)``). Its
address and token are set once in the settings dialog (``ServerSettingsDialog``: the device list's
context menu, or the first time "server" is chosen) and remembered by ``server/connection.py`` (the
token in a 0600 file, never shown again or logged). A job through the server is the local job's twin:
the case goes to ``ServerClient.segment`` and comes back as the same ``CaseResult``; it reports that it
is busy, and Stop drops the answer at once (the server finishes that one case and forgets it). The
Correct dock's round (``server_finetune_job``) sends the project's corrections and follows the job;
its Stop cancels the round on the server. The Worklist dock's job (``server_worklist_job``) sends its
scans one by one; Stop drops the answer of the scan on its way, which stays pending.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qtpy.QtWidgets import (QDialog, QDialogButtonBox, QFormLayout, QLabel, QLineEdit, QPushButton, QVBoxLayout,
                            QWidget)

from ...errors import RamsegInputError

SERVER = "server"  # the device list's entry
POLL_S = 0.2  # how often a job waiting on the server looks at Stop


def saved_connection() -> Any:
    from ...server.connection import saved

    return saved()


def remembered_server_text() -> str:
    connection = saved_connection()
    return f"a ramseg server: {connection.url}" if connection else "a ramseg server (not set yet)"


class ServerSettingsDialog(QDialog):
    """The server's address, its token (typed once, kept in a 0600 file) and an https server's own CA."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("napari-ramseg: server")
        connection = saved_connection()
        self.url_edit = QLineEdit(connection.url if connection else "")
        self.url_edit.setPlaceholderText("http://gpu-host:8765")
        self.token_edit = QLineEdit()
        self.token_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.token_edit.setPlaceholderText("saved; type to replace it" if connection and connection.token_file
                                           else "the token the server was started with")
        self.ca_edit = QLineEdit(str(connection.ca_file) if connection and connection.ca_file else "")
        self.ca_edit.setPlaceholderText("https only: the server's own certificate (PEM), if self-signed")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.test_button = QPushButton("Test")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        form = QFormLayout()
        form.addRow("address", self.url_edit)
        form.addRow("token", self.token_edit)
        form.addRow("certificate", self.ca_edit)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.test_button)
        layout.addWidget(self.status)
        layout.addWidget(buttons)
        self.test_button.clicked.connect(self.test)
        buttons.accepted.connect(self.save)
        buttons.rejected.connect(self.reject)

    def save(self) -> bool:
        """Remember the settings; on bad input say why and stay open."""
        from ...server.connection import save

        try:
            save(self.url_edit.text(), self.token_edit.text() or None, self.ca_edit.text().strip() or None)
        except RamsegInputError as exc:
            self.status.setText(f"⚠ {exc}")
            return False
        self.token_edit.clear()
        self.accept()
        return True

    def test(self) -> str:
        """Save, then ask the server for its health: the answer, or the one line why not."""
        from ...server.connection import save

        try:
            connection = save(self.url_edit.text(), self.token_edit.text() or None, self.ca_edit.text().strip() or None)
            self.token_edit.clear()
            with connection.client() as client:
                health = client.health()
            text = f"✓ connected: napari-ramseg {health.get('version')} on {health.get('device')}"
        except ImportError as exc:
            text = f"⚠ the server extra is missing here ({exc.name}): pip install 'napari-ramseg[server]'"
        except RamsegInputError as exc:
            text = f"⚠ {exc}"
        self.status.setText(text)
        return text


def server_client() -> Any:
    """The remembered server's client, or the one line saying how to set it."""
    connection = saved_connection()
    if connection is None:
        raise RamsegInputError("no server set: right-click the device list and choose 'Server settings…' "
                               "(its address and token)")
    try:
        return connection.client()
    except ImportError as exc:
        raise RamsegInputError(f"a server needs the server extra here ({exc.name} is missing): "
                               "pip install 'napari-ramseg[server]'") from None


def _in_background(call: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """``call()`` started on a helper thread; its value or error lands in the box."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # noqa: BLE001  handed to the job, which says it in one line
            box["error"] = exc

    thread = threading.Thread(target=run, name="ramseg-server-call", daemon=True)
    thread.start()
    return thread, box


def _answer(box: dict[str, Any]) -> Any:
    if "error" in box:
        raise box["error"]
    return box["value"]


def wait_for(call: Any, control: Any, text: str):
    """Run ``call()`` on a helper thread, yielding busy progress; Stop ends the wait at once."""
    from ._jobs import Progress

    thread, box = _in_background(call)
    while thread.is_alive():
        if control.cancelled():
            raise InterruptedError("stopped; the server's answer is dropped")
        yield Progress(0, 0, text)
        thread.join(POLL_S)
    return _answer(box)


def stoppable(function: Any, control: Any) -> Any:
    """``function`` whose wait for the server Stop ends at once, for a core loop that calls it and cannot
    yield (the Worklist's ``iter_segment``): the call runs on a helper thread; on Stop it raises
    ``InterruptedError`` and the server's answer, when it comes, is dropped."""

    def call(*args: Any, **kwargs: Any) -> Any:
        thread, box = _in_background(lambda: function(*args, **kwargs))
        while thread.is_alive():
            if control.cancelled():
                raise InterruptedError("stopped; the server's answer is dropped")
            thread.join(POLL_S)
        return _answer(box)

    return call


def remote_model_name(model: Path, bundled: str | None) -> str:
    """What the server calls the chosen model: a bundled model's name, or a run folder's (file's) name."""
    if bundled:
        return bundled
    return model.name if model.is_dir() or not model.suffix else model.stem


@dataclass
class ServerRound:
    """A fine-tune round a server ran: its version stays there, under ``version`` (None: stopped)."""

    version: str | None
    round: int | None = None
    before_dice: float | None = None
    after_dice: float | None = None
    worse: bool = False
    on_server: str = ""  # the server's address

    @property
    def stopped(self) -> bool:
        return self.version is None

    def line(self) -> str:
        if self.stopped:
            return "Fine-tuning on the server stopped; no new version was written there."
        dice = "" if self.before_dice is None else \
            f"; held-out Dice {self.before_dice:.3f} → {self.after_dice:.3f}"
        worse = " It is worse on the held-out corrections than its parent: keep the parent." if self.worse else ""
        return (f"New model {self.version} (round {self.round}) on {self.on_server}{dice}: segment with it there "
                f"by that name.{worse}")


def server_finetune_job(model_name: str, project: Path, settings: Any):
    """The Correct dock's round on the server: the project's latest corrections (image, final mask) are sent
    with the round's settings; progress as the server reports it; Stop cancels the round there."""
    from ...core.finetune.correction_case import read_provenance
    from ...core.finetune.corrections import CorrectionStore
    from ...core.options import settings_of
    from ._jobs import Progress

    def job(control: Any):
        yield Progress(0, 0, "connecting to the server…")
        client = server_client()
        store = CorrectionStore(project)
        pairs = []
        for case_id in store.latest_cases():
            folder = store.case_dir(case_id)
            files = read_provenance(folder)["files"]
            pairs.append((folder / files["image"], folder / files["final"]))
        sent = {s.name: getattr(settings, s.name) for s in settings_of(type(settings)) if s.name != "device"}
        yield Progress(0, 0, f"sending {len(pairs)} corrections to {client.url}…")
        started = client.finetune(model_name, pairs, **sent)
        cancelled, total = False, settings.iterations
        while (state := client.job(started["id"]))["state"] not in ("done", "failed", "cancelled"):
            if control.cancelled() and not cancelled:
                client.cancel(started["id"])
                cancelled = True
            progress = state.get("progress") or {}
            yield Progress(int(progress.get("iteration") or 0), int(progress.get("total") or total),
                           f"fine-tuning on the server: {progress.get('message') or progress.get('phase') or '…'}")
            time.sleep(POLL_S * 5)
        if state["state"] == "failed":
            raise RamsegInputError(f"the server's fine-tune round failed: {state['error']}")
        result = state.get("result") or {}
        return ServerRound(result.get("version"), result.get("round"), result.get("before_dice"),
                           result.get("after_dice"), bool(result.get("worse")), client.url)

    return job


def server_worklist_job(worklist: Any, model: Path, model_name: str):
    """The Worklist dock's job through the server: every pending scan of ``worklist`` sent (losslessly, as
    the Segment dock sends a layer) to ``core.review.worklist.Worklist.iter_segment``'s server twins, so each case
    gets the same ``CaseResult`` and report row, and the masks are written here. ``model`` names the model
    in the worklist's state, as a local run does (the same model, so the same masks); ``model_name``: its
    name on the server."""
    from ...server.client import RemotePredictor, review_score_remotely, segment_case_remotely
    from ._jobs import Progress

    def job(control: Any):
        yield Progress(0, 0, "connecting to the server…")
        client = server_client()
        try:  # the client's connections are closed however the job ends
            predictor = yield from wait_for(lambda: RemotePredictor(client, model_name), control,
                                            f"asking {client.url} for {model_name}…")
            pending = worklist.pending(str(model))
            yield Progress(0, len(pending), f"segmenting {len(pending)} scan(s) on {client.url}…")
            steps = worklist.iter_segment(predictor, str(model), cancelled=control.cancelled,
                                          segment=stoppable(segment_case_remotely, control),
                                          score=stoppable(review_score_remotely, control))
            for done, total, name in steps:
                yield Progress(done, total, f"segmented {name} on the server ({done}/{total})")
        finally:
            client.close()
        return worklist

    return job
