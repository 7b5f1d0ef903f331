"""Plain helpers the tests (and bench scripts) import: ``from helpers import make_synthetic_domains``.

Fixtures live in ``conftest.py``, which pytest loads itself; a test never imports ``conftest``.
"""

from __future__ import annotations

from pathlib import Path


def make_synthetic_domains(root: Path, domains=("siteA", "siteB"), cases: int = 4, size: int = 48,
                           seed: int = 0) -> Path:
    """A tiny domain-folder dataset: bright discs on a textured background, each domain its own "style"."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for d, domain in enumerate(domains):
        (root / domain / "images").mkdir(parents=True, exist_ok=True)
        (root / domain / "labels").mkdir(parents=True, exist_ok=True)
        tint = np.array([1.0, 0.6 + 0.3 * d, 0.4 + 0.5 * d])
        for i in range(cases):
            cy, cx, r = rng.integers(size // 4, 3 * size // 4, 2).tolist() + [int(rng.integers(size // 8, size // 4))]
            mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)
            base = 60 + 120 * mask + rng.normal(0, 15, (size, size))
            image = np.clip(base[..., None] * tint, 0, 255).astype(np.uint8)
            Image.fromarray(image).save(root / domain / "images" / f"case{i}.png")
            Image.fromarray(mask).save(root / domain / "labels" / f"case{i}.png")
    return root


def write_dicom_series(folder: Path, volume, affine, order=None, series_uid: str | None = None,
                       description: str = "T2 AX", number: int = 3, names: str = "slice{:03d}.dcm") -> list[Path]:
    """A ``(Z, Y, X)`` integer volume with a NIfTI (RAS) ``affine`` written as one MR DICOM file per slice.

    ``order``: the order the slices are written and numbered in (file ``i`` holds slice ``order[i]``),
    so that neither file names nor InstanceNumber give the slices' order. Geometry follows DICOM's
    LPS patient frame: ImagePositionPatient of slice k is the world position of voxel (0, 0, k)."""
    import numpy as np
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import MRImageStorage, ExplicitVRLittleEndian, generate_uid

    volume = np.asarray(volume)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine, dtype=np.float64)
    dc, dr = np.linalg.norm(lps[:3, 0]), np.linalg.norm(lps[:3, 1])
    rows, cols = lps[:3, 0] / dc, lps[:3, 1] / dr
    series_uid = series_uid or generate_uid()
    study_uid, frame_uid = generate_uid(), generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    order = list(range(len(volume))) if order is None else list(order)
    written = []
    for i, k in enumerate(order):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.Modality, ds.SeriesDescription, ds.SeriesNumber, ds.InstanceNumber = "MR", description, number, i + 1
        ds.PatientName, ds.PatientID = "Test^Phantom", "TEST0001"
        ds.PatientBirthDate = ds.PatientSex = ds.AccessionNumber = ds.ReferringPhysicianName = ""  # type 2: present
        ds.StudyDate, ds.StudyTime, ds.StudyID = "20260101", "120000", "1"
        ds.ImageOrientationPatient = [f"{v:.10g}" for v in (*rows, *cols)]
        ds.ImagePositionPatient = [f"{v:.10g}" for v in (lps[:3, 3] + k * lps[:3, 2])]
        ds.PixelSpacing = [f"{dr:.10g}", f"{dc:.10g}"]
        ds.SliceThickness = f"{np.linalg.norm(lps[:3, 2]):.10g}"
        ds.Rows, ds.Columns = volume.shape[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit, ds.PixelRepresentation = 15, int(volume.dtype.kind == "i")
        stored = np.int16 if volume.dtype.kind == "i" else np.uint16
        ds.PixelData = np.ascontiguousarray(volume[k], dtype=stored).tobytes()
        path = folder / names.format(i)
        ds.save_as(path, enforce_file_format=True)
        written.append(path)
    return written


def synthetic_fundus(shape=(400, 600), disc=(150, 420), radius=40, seed=0):
    """A dark-cornered circular field of view with a bright disc and noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    fov = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 <= (0.48 * w) ** 2
    image = np.zeros((h, w, 3), np.float32)
    image[fov] = (150, 70, 30)
    blob = np.exp(-((yy - disc[0]) ** 2 + (xx - disc[1]) ** 2) / (2 * (radius / 1.5) ** 2))
    image += blob[..., None] * np.array([100, 120, 80])
    image += rng.normal(0, 6, image.shape)
    image[~fov] = rng.normal(4, 2, (int((~fov).sum()), 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def square_samples(domains=("A", "B", "C"), n=3, size=40, seed=0):
    """In-memory training samples per domain: a bright 10x10 square on noise, its mask the square."""
    import numpy as np

    from napari_ramseg.core.data.dataset import Sample

    rng = np.random.default_rng(seed)
    out = {}
    for d in domains:
        out[d] = []
        for i in range(n):
            mask = np.zeros((size, size), np.uint8)
            y, x = rng.integers(5, size - 15, 2)
            mask[y:y + 10, x:x + 10] = 1
            image = np.repeat((mask * 1.2 - 0.6 + rng.normal(0, 0.2, mask.shape))[None], 3, 0).astype(np.float32)
            out[d].append(Sample(image, mask, d, f"{d}{i}"))
    return out


def import_bench(name: str):
    """Import ``bench.<name>`` (``"speed.timing"`` is bench/speed/timing.py). The bench package lies in the
    repository root, which is on ``sys.path`` while the module loads, and only then."""
    import importlib
    import sys

    root = str(Path(__file__).resolve().parents[1])
    sys.path.insert(0, root)
    try:
        return importlib.import_module(f"bench.{name}")
    finally:
        sys.path.remove(root)


class BrightDiscModel:
    """A stand-in disc/cup Predictor for DiscPredictor tests, with a package "disc" block: the disc is
    what is ``margin`` brighter than the median of ``channel`` (None: the mean of R, G, B). ``calls``
    records the shape of every image it was asked to segment."""

    def __init__(self, disc=None, margin=40, channel=1):
        from napari_ramseg.core.labels import OPTIC_DISC_CUP

        self.labels = OPTIC_DISC_CUP
        self.metadata = type("Metadata", (), {"disc": disc})()
        self.margin, self.channel = margin, channel
        self.calls = []

    def predict_image(self, image, postprocess=False):
        import numpy as np

        from napari_ramseg.core.inference.predictor import Prediction

        self.calls.append(image.shape)
        g = image[..., :3].astype(np.float32).mean(-1) if self.channel is None else image[..., self.channel].astype(np.float32)
        disc = g > np.median(g) + self.margin
        probs = np.stack([np.where(disc, 0.95, 0.05), np.full(g.shape, 0.05)]).astype(np.float32)
        return Prediction(disc.astype(np.uint8), probs, np.zeros(g.shape, np.float32), ["disc", "cup"])


def serve_on_loopback(app, **options):
    """``app`` (an ASGI app: ``ramseg serve``'s) on a real uvicorn on a free loopback port, in a thread, once it
    listens: (server, thread, url). ``options``: uvicorn's (the TLS files). Stop it with ``stop_server``."""
    import socket
    import threading
    import time

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, **options))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    scheme = "https" if options.get("ssl_certfile") else "http"
    return server, thread, f"{scheme}://127.0.0.1:{sock.getsockname()[1]}"


def serve_model_on_loopback(model: Path, folder: Path, token: str):
    """``ramseg serve`` on loopback (``serve_on_loopback``), on the CPU, whose models folder (``folder``/models)
    offers ``model`` under its folder's name: (server, thread, url, models folder)."""
    from napari_ramseg.server.app import ServerSettings, create_app

    models = folder / "models"
    models.mkdir()
    (models / model.name).symlink_to(model, target_is_directory=True)
    server, thread, url = serve_on_loopback(create_app(ServerSettings(token=token, models_dir=models, device="cpu")))
    return server, thread, url, models


def stop_server(server, thread, seconds: float = 120) -> None:
    server.should_exit = True
    thread.join(seconds)
