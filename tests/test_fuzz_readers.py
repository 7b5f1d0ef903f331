"""Property tests for the image readers on hostile bytes.

For random bytes and for mutated real files (bit flips, byte overwrites, truncation, insertion,
deletion, splices) of small PNG, JPEG, TIFF and NIfTI files, ``read_image`` and ``read_mask`` may
only return a well-formed ``ImageData`` / index array, or raise ``RamsegInputError`` naming the
file in one line. Any other exception, or a read that takes longer than ``HANG_SECONDS``, fails.

``bench/readers/fuzz.py`` reuses the seeds and strategies here to run the same check at volume.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import gzip
import io
import signal
import struct
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from napari_ramseg import io as rio
from napari_ramseg.core.data.preprocess import to_model_channels, volume_to_slices_25d
from napari_ramseg.errors import RamsegInputError

FORMATS = ("png", "jpg", "tif", "nii", "nii.gz")
HANG_SECONDS = 10
MAGIC = {
    "png": b"\x89PNG\r\n\x1a\n",
    "jpg": b"\xff\xd8\xff\xe0",
    "tif": b"II*\x00",
    "nii": struct.pack("<i", 348),
    "nii.gz": b"",  # gzip is applied to the whole payload instead
}
INTERESTING = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)


class ReaderHang(BaseException):
    """Raised by the alarm; a BaseException so that the readers' ``except Exception`` cannot swallow it."""


@contextlib.contextmanager
def hang_guard(seconds: int = HANG_SECONDS):
    """Fail a read that runs past ``seconds`` (POSIX main thread only; elsewhere no guard)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def alarm(signum, frame):
        raise ReaderHang(f"reader ran longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# ------------------------------------------------------------------------------------------- seeds


@functools.lru_cache(maxsize=None)
def seeds() -> dict[str, tuple[bytes, ...]]:
    """Small valid files of every format, in several flavours each (all generated here)."""
    import nibabel as nib
    import tifffile
    from PIL import Image

    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (12, 10), dtype=np.uint8)
    rgb = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)

    def pil(array, fmt, mode=None, **kw):
        buf = io.BytesIO()
        im = Image.fromarray(array)
        if mode:
            im = im.convert(mode)
        im.save(buf, format=fmt, **kw)
        return buf.getvalue()

    def tif(array, **kw):
        buf = io.BytesIO()
        tifffile.imwrite(buf, array, **kw)
        return buf.getvalue()

    def nii(array, slope=None):
        img = nib.Nifti1Image(array, np.diag([0.5, 0.7, 2.0, 1.0]))
        if slope is not None:
            img.header.set_slope_inter(slope, 1.0)
        return img.to_bytes()

    vol = rng.random((6, 5, 4)).astype(np.float32)
    nifti = (nii(vol), nii(rng.integers(0, 3, (8, 7), dtype=np.uint8)),
             nii(rng.integers(-100, 100, (5, 4, 3, 1), dtype=np.int16), slope=2.0))
    return {
        "png": (pil(grey, "PNG"), pil(rgb, "PNG"), pil(np.dstack([rgb, grey]), "PNG"),
                pil((grey.astype(np.uint16) * 257), "PNG"), pil(rgb, "PNG", mode="P"),
                pil(grey > 128, "PNG"), pil(grey, "PNG", mode="LA")),
        "jpg": (pil(rgb, "JPEG", quality=90), pil(grey, "JPEG"), pil(rgb, "JPEG", progressive=True)),
        "tif": (tif(grey), tif(rgb, photometric="rgb", compression="zlib"),
                tif(rng.random((3, 6, 5)).astype(np.float32), photometric="minisblack"),
                tif(np.moveaxis(rgb, -1, 0).astype(np.uint16), photometric="rgb", planarconfig="separate"),
                tif(rng.integers(0, 3, (4, 6, 5), dtype=np.uint8), imagej=True,
                    metadata={"axes": "ZYX", "spacing": 2.0}, resolution=(2.0, 2.0)),
                tif(grey, tile=(16, 16), compression="zlib")),
        "nii": nifti,
        "nii.gz": tuple(gzip.compress(b, mtime=0) for b in nifti),
    }


def _fix_png_crcs(data: bytearray) -> bytearray:
    """Recompute every chunk CRC so that a mutation reaches the decoder instead of the checksum test."""
    out = bytearray(data[:8])
    pos = 8
    while pos + 8 <= len(data):
        length = struct.unpack(">I", data[pos:pos + 4])[0]
        end = pos + 8 + length
        if end + 4 > len(data):
            out += data[pos:]
            return out
        body = data[pos + 4:end]
        out += data[pos:end] + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
        pos = end + 4
    out += data[pos:]
    return out


@st.composite
def mutated_file(draw, fmt: str) -> bytes:
    """A seed of ``fmt`` with 1..8 mutations, drawn towards the header (the first 512 bytes)."""
    seed = draw(st.sampled_from(seeds()[fmt]))
    inner = fmt == "nii.gz" and draw(st.booleans())  # mutate the NIfTI inside a valid gzip stream
    data = bytearray(gzip.decompress(seed) if inner else seed)
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            break
        n = len(data)
        near = draw(st.booleans())
        pos = draw(st.integers(0, min(n, 512) - 1 if near else n - 1))
        op = draw(st.sampled_from(("flip", "byte", "interesting", "truncate", "insert", "delete", "splice")))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte":
            data[pos] = draw(st.integers(0, 255))
        elif op == "interesting":
            width = draw(st.sampled_from((1, 2, 4)))
            value = draw(st.sampled_from(INTERESTING)) & ((1 << (8 * width)) - 1)
            order = draw(st.sampled_from(("<", ">")))
            packed = value.to_bytes(width, "little" if order == "<" else "big")
            data[pos:pos + width] = packed
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 16))]
        else:  # splice: copy a run of bytes from elsewhere in the file
            src = draw(st.integers(0, n - 1))
            length = draw(st.integers(1, 64))
            data[pos:pos + length] = data[src:src + length]
    if fmt == "png" and draw(st.booleans()):
        data = _fix_png_crcs(data)
    if inner:
        data = bytearray(gzip.compress(bytes(data), mtime=0))
    return bytes(data)


@st.composite
def random_file(draw, fmt: str) -> bytes:
    """Random bytes, half the time behind the format's magic number so the parser gets further."""
    body = draw(st.binary(max_size=1024))
    if draw(st.booleans()):
        body = MAGIC[fmt] + body
    if fmt == "nii.gz" and draw(st.booleans()):
        body = gzip.compress(body, mtime=0)
    return body


# ------------------------------------------------------------------------------------------- check


def _check_image(data: rio.ImageData) -> None:
    a = data.array
    assert isinstance(a, np.ndarray) and a.size > 0
    assert a.dtype.kind in "biuf" and a.dtype.isnative
    assert data.axes in ("YX", "YXC", "ZYX")
    assert a.ndim == len(data.axes)
    if data.axes == "YXC":
        assert a.shape[-1] == 3


def _check_downstream(data: rio.ImageData) -> None:
    """A read image either preprocesses or raises ValueError (the callers turn it into a message)."""
    if data.array.size > 1_000_000:
        return
    try:
        if data.is_volume and data.array.shape[0] > 1:
            out = volume_to_slices_25d(data.array)
        else:
            out = to_model_channels(data.array[0] if data.is_volume else data.array)
    except ValueError:
        return
    assert out.dtype == np.float32 and np.isfinite(out).all() and np.abs(out).max() <= 1.0


def read_outcome(folder: Path, fmt: str, payload: bytes, as_mask: bool = False) -> str:
    """'ok' or 'refused'; anything else raises (the property under test)."""
    path = folder / f"fuzz input.{fmt}"
    path.write_bytes(payload)
    try:
        with hang_guard():
            if as_mask:
                mask = rio.read_mask(path)
                assert mask.dtype in (np.uint8, np.uint16) and mask.ndim in (2, 3) and mask.size > 0
            else:
                data = rio.read_image(path)
                _check_image(data)
                _check_downstream(data)
    except RamsegInputError as exc:
        message = str(exc)
        assert exc.path == str(path) and message.startswith(str(path)), message
        assert "\n" not in message, message
        return "refused"
    return "ok"


_FUZZ = settings(max_examples=40, deadline=None, database=None, phases=(Phase.generate,),
                 suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def folder():
    with tempfile.TemporaryDirectory(prefix="fuzz ü ") as tmp:
        yield Path(tmp)


def test_seeds_are_valid(folder):
    for fmt, files in seeds().items():
        for payload in files:
            assert read_outcome(folder, fmt, payload) == "ok", fmt


@pytest.mark.parametrize("fmt", FORMATS)
def test_mutated_files_read_or_refused(folder, fmt):
    outcomes = []

    @_FUZZ
    @given(payload=mutated_file(fmt), as_mask=st.booleans())
    def run(payload, as_mask):
        outcomes.append(read_outcome(folder, fmt, payload, as_mask))

    run()
    assert outcomes and set(outcomes) <= {"ok", "refused"}


@pytest.mark.parametrize("fmt", FORMATS)
def test_random_bytes_refused(folder, fmt):
    @settings(_FUZZ, max_examples=25)
    @given(payload=random_file(fmt))
    def run(payload):
        assert read_outcome(folder, fmt, payload) in ("ok", "refused")

    run()


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_file_refused(folder, fmt):
    assert read_outcome(folder, fmt, b"") == "refused"


# ----------------------------------------------------------------------- regressions found by fuzzing

# 651 bytes found by bench/readers/fuzz.py: an IFD chain that tifffile's ``series`` walked without
# end, whose first page claims 4077525260 x 10 pixels.
ENDLESS_TIFF = base64.b64decode(
    "SUkqAAgAAAAPAAABBAABAAAACgAAAAEBBAABAAAADBkK87ZtZMAzAAAAAgEDAAMAAADCAAAAAwEDAAEAAAAIAAAABgEDAAEAAAAC"
    "AAAADgECABcAAADIAAAAEQEEAAEAAAAQAQAAFQEDAAEAAAADAAAAFgEEAAEAAAAMAAAAFwEEAAEAAABzAQAAGgEFAAEAAADuAAAA"
    "GwEFAAEAAAD2AAAAHAEDAAEAAAABAAAAKAEDAAEAAAABAAAAMQECAAwAAAD+AAAAAAAAAAgACAAIAHsic2hhcGUiOiBbMTIsIDEw"
    "LCAzXX0AAAAAAAAAAAAAAAAAAAAAAQAAAAEAAAABAAAAAQAAAHRpZmamaWxlLnB5AAAAAAAAAHicAWgBl/6mJ7nYScT3LA5/2xY6"
    "S/ncLnmoBdkznYo4EpUUIOu5TPHWJnvPOjVsDKM6Zz31Pwdoyl4BYAfRH6jrHgKpCq6ru+KOhjo2rqUxZt5B8OCJnWUamcMzsThi"
    "GvX+dX0mSf8/xRPOVgYY+y1xKGHzrX+vPsY588Z/hKa8pR7XgAs+sK9pObS8WpBjujsK4D6vlSIVBDOUuXWzuDtqcdjxnn2GGE4b"
    "YPUCbE8YDUdswbRffEOzBLiGebXjkqasEtJ5He+cIAaITHeYW9GlOKxrx0+S7d4tQUwIZlKj1jG4+QskmEKUIYGeWYFWvJK6wo8k"
    "QWTqSQNUGgXp46O6kEMDACc6vALUtlUxiZ/vim0MkQeCFbwsjGC3KijVT+6dZlFGf8lg7QNR2VBHPQQfrMpCRWHgbPxMFJJQ/g6u"
    "6derhsQLVrik2pITt3gmFqQr3NNwSXOvSh7lSejby2xVkbQoXgs7iL1axJpEUQ0ANqh0"
)


def _patch(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def _huge_claims() -> dict[str, bytes]:
    """Tiny files whose headers claim images of many gigabytes."""
    import nibabel as nib
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, np.zeros((12, 10), np.uint8))
    tif = buf.getvalue()
    ifd = struct.unpack_from("<I", tif, 4)[0]
    for i in range(struct.unpack_from("<H", tif, ifd)[0]):  # ImageLength (257) -> 3 000 000 000 rows
        entry = ifd + 2 + 12 * i
        if struct.unpack_from("<H", tif, entry)[0] == 257:
            tif = _patch(tif, entry + 2, "<H", 4)  # type LONG
            tif = _patch(tif, entry + 8, "<I", 3_000_000_000)
    nii = bytearray(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)).to_bytes())
    struct.pack_into("<8h", nii, 40, 3, 30000, 30000, 30000, 1, 1, 1, 1)  # dim[]: 2.7e13 voxels
    png = seeds()["png"][0]
    png = bytearray(png[:16] + struct.pack(">II", 60000, 60000) + png[24:])  # IHDR 60000 x 60000
    return {"tif": tif, "nii": bytes(nii), "nii.gz": gzip.compress(bytes(nii)), "png": bytes(_fix_png_crcs(png))}


def test_endless_ifd_chain_tiff_is_refused_at_once(folder):
    start = time.perf_counter()
    with pytest.raises(RamsegInputError, match="GiB decoded"):
        read_outcome_raw(folder, "tif", ENDLESS_TIFF)
    assert time.perf_counter() - start < 5


def test_tiff_asking_for_many_missing_tiles_is_refused_at_once(folder):
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, np.zeros((40, 50), np.uint8), tile=(16, 16), compression="zlib")
    tif = buf.getvalue()
    ifd = struct.unpack_from("<I", tif, 4)[0]
    for i in range(struct.unpack_from("<H", tif, ifd)[0]):  # ImageWidth (256) -> 10 000 000: 1.9 M tiles
        entry = ifd + 2 + 12 * i
        if struct.unpack_from("<H", tif, entry)[0] == 256:
            tif = _patch(tif, entry + 2, "<H", 4)
            tif = _patch(tif, entry + 8, "<I", 10_000_000)
    start = time.perf_counter()
    with pytest.raises(RamsegInputError, match="needs 1875000 strips or tiles but the file lists 12"):
        read_outcome_raw(folder, "tif", tif)
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("fmt", ["tif", "nii", "nii.gz", "png"])
def test_headers_claiming_gigabytes_are_refused_before_decoding(folder, fmt):
    start = time.perf_counter()
    with pytest.raises(RamsegInputError) as err:
        read_outcome_raw(folder, fmt, _huge_claims()[fmt])
    assert time.perf_counter() - start < 5
    assert str(err.value).startswith(str(folder))
    assert "GiB decoded" in str(err.value) or "decompression bomb" in str(err.value)


def test_big_endian_nifti_reads_in_native_byte_order(folder):
    """Found by the fuzz script: a byte-swapped header gave a '>u2' array, which torch cannot take."""
    import nibabel as nib

    data = np.arange(7 * 8, dtype=np.uint16).reshape(7, 8)
    header = nib.Nifti1Header(endianness=">")
    image = nib.Nifti1Image(data, np.eye(4), header)
    image.set_data_dtype(np.uint16)
    payload = image.to_bytes()
    assert payload[:4] == struct.pack(">i", 348)
    for fmt, blob in (("nii", payload), ("nii.gz", gzip.compress(payload))):
        image = read_outcome_raw(folder, fmt, blob)
        assert image.array.dtype == np.dtype("=u2") and image.array.dtype.isnative
        np.testing.assert_array_equal(image.array, data.T)


def read_outcome_raw(folder: Path, fmt: str, payload: bytes) -> rio.ImageData:
    path = folder / f"fuzz input.{fmt}"
    path.write_bytes(payload)
    with hang_guard():
        return rio.read_image(path)
