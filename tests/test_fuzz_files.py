"""Property tests for the files napari-ramseg reads back: a BioImage.IO package, a resume state and a
corrections project, mutated by structure (hostile JSON/YAML values, deleted keys, aliases, deep nesting)
and by bytes. Reading one may only succeed or raise ``RamsegInputError`` in one line naming a file
of the input; any other exception, or a read longer than ``HANG_SECONDS``, fails.

``bench/readers/fuzz.py`` reuses the seeds and strategies here to run the same check at volume
(``--formats package,resume,corrections``).
"""

from __future__ import annotations

import copy
import functools
import io
import json
import math
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from napari_ramseg.errors import RamsegInputError
try:
    from test_fuzz_readers import hang_guard  # under pytest, tests/ is on the import path
except ModuleNotFoundError:  # imported as tests.test_fuzz_files by bench/readers/fuzz.py
    from tests.test_fuzz_readers import hang_guard

FILE_KINDS = ("package", "resume", "corrections")
DEEP = "@@deep@@"  # replaced by 20 000 nested lists after dumping (json.dumps would recurse)
HOSTILE = (None, True, False, 0, -4, 1, 2**63, 10**400, 1e300, math.nan, math.inf, -math.inf, "", "abc",
           "../../outside.tif", "/etc/passwd", [], {}, [1], {"a": 1}, "x" * 5000, [[[[0]]]], DEEP)
YAML_SNIPPETS = ("a: &a [x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n"
                 "attachments: [{source: *b}]\n",
                 "attachments: !!python/object/apply:os.system [echo owned]\n",
                 "config: " + "[" * 3000 + "]" * 3000 + "\n",
                 "attachments: 5\n", "attachments: [{source: [1, 2]}]\n", "type: !!binary aGVsbG8=\n")


# ------------------------------------------------------------------------------------------- seeds


def _tiny_config():
    from napari_ramseg.core.config import ModelConfig, PreprocessConfig, TrainConfig
    from napari_ramseg.core.labels import LabelScheme

    return TrainConfig(labels=LabelScheme(("blob",), "nested"), model=ModelConfig(base_width=2, depth=2),
                       preprocess=PreprocessConfig(size=16), iterations=4, batch=2, device="cpu")


def _samples(domains):
    from napari_ramseg.core.data.dataset import Sample

    rng = np.random.default_rng(0)
    def sample(d, i):
        image = rng.uniform(-1, 1, (3, 16, 16)).astype(np.float32)
        return Sample(image, (rng.random((16, 16)) > 0.5).astype(np.uint8), d, f"{d}{i}")

    return {d: [sample(d, i) for i in range(2)] for d in domains}


@functools.lru_cache(maxsize=None)
def seeds() -> dict[str, dict[str, bytes]]:
    """The files of a tiny package, a resume state and a corrections project (all made here)."""
    import yaml

    from napari_ramseg.core.models.checkpoint import ModelMetadata, save_model
    from napari_ramseg.core.finetune.corrections import CorrectionStore
    from napari_ramseg.core.method.model import RamSegNet
    from napari_ramseg.core.training.trainer import Trainer

    out: dict[str, dict[str, bytes]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config = _tiny_config()
        save_model(RamSegNet(config.model, config.labels, num_domains=2), ModelMetadata(config, ["A", "B"]), tmp / "m")
        rdf = {"type": "model", "format_version": "0.5.3", "name": "tiny",
               "attachments": [{"source": "model.json"}, {"source": "model.safetensors"}],
               "config": {"napari-ramseg": {"model_json": "model.json", "weights": "model.safetensors"}}}
        out["package"] = {"rdf.yaml": yaml.safe_dump(rdf).encode(),
                          **{n: (tmp / "m" / n).read_bytes() for n in ("model.json", "model.safetensors")}}
        trainer = Trainer(config, ["A", "B"], _samples(["A", "B"]), run_dir=tmp / "run",
                          extra_metadata={"data": {"name": "d", "sha256": "0" * 64, "files": 4}})
        trainer.step()
        trainer.save_resume_state()
        out["resume"] = {n: (tmp / "run" / n).read_bytes() for n in ("resume.json", "resume.safetensors")}
        store = CorrectionStore(tmp / "project")
        rng = np.random.default_rng(1)
        for i in range(3):
            image = rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)
            mask = (rng.random((12, 10)) > 0.5).astype(np.uint8)
            store.save(image, np.zeros_like(mask), mask, None, f"case{i}", labels=config.labels)
        out["corrections"] = {p.relative_to(store.root).as_posix(): p.read_bytes()
                              for p in sorted(store.root.rglob("*")) if p.is_file() and p.name != ".lock"}
    return out


# -------------------------------------------------------------------------------------- strategies


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


def _dump(obj) -> bytes:
    deep = "[" * 20000 + "]" * 20000
    return json.dumps(obj).replace(json.dumps(DEEP), deep).encode()


@st.composite
def mutated_json(draw, seed: bytes) -> bytes:
    """A JSON file with 1..4 values replaced by hostile ones or deleted, then bytes mutated a quarter of the time."""
    obj = json.loads(seed)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from([p for p in _paths(obj) if p]))
        parent = obj
        for part in path[:-1]:
            parent = parent[part]
        if draw(st.integers(0, 4)) == 0 and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = copy.deepcopy(draw(st.sampled_from(HOSTILE)))
        if not isinstance(obj, dict):
            break
    return draw(mutated_bytes(_dump(obj))) if draw(st.integers(0, 3)) == 0 else _dump(obj)


@st.composite
def mutated_bytes(draw, data: bytes, near: int = 512) -> bytes:
    """1..4 byte flips, overwrites, truncations or insertions, drawn towards the first ``near`` bytes."""
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        pos = draw(st.integers(0, min(len(data), near) - 1))
        op = draw(st.sampled_from(("flip", "byte", "truncate", "insert")))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte":
            data[pos] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[pos:]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


@st.composite
def mutated_yaml(draw, seed: bytes) -> bytes:
    """Hostile YAML appended (aliases, tags, deep nesting, wrong types: a repeated key's last value wins),
    bytes mutated, or the description's values mutated as JSON (which is YAML)."""
    import yaml

    choice = draw(st.integers(0, 2))
    if choice == 0:
        return seed + b"\n" + draw(st.sampled_from(YAML_SNIPPETS)).encode()
    if choice == 1:
        return draw(mutated_bytes(seed))
    return draw(mutated_json(json.dumps(yaml.safe_load(seed)).encode()))


@st.composite
def mutated_files(draw, kind: str) -> dict[str, bytes]:
    """The seed files of ``kind`` with one of them mutated (by structure or by bytes)."""
    files = dict(seeds()[kind])
    name = draw(st.sampled_from(sorted(files)))
    if name.endswith(".yaml"):
        files[name] = draw(mutated_yaml(files[name]))
    elif name.endswith(".json"):
        files[name] = draw(mutated_json(files[name]))
    elif name.endswith(".safetensors"):
        files[name] = draw(mutated_bytes(files[name], near=256))
        if draw(st.integers(0, 9)) == 0:  # a zip bomb: zeros where the weights should be
            files[name] = bytes(draw(st.sampled_from((0, 8, 1 << 20, 16 << 20))))
    else:
        files[name] = draw(mutated_bytes(files[name]))
    return files


# ------------------------------------------------------------------------------------------- check


def _write(root: Path, files: dict[str, bytes]) -> None:
    import shutil

    if root.exists():
        shutil.rmtree(root)
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)


def _read_package(root: Path, files: dict[str, bytes]) -> None:
    from napari_ramseg.core.models.checkpoint import load_model

    root.mkdir(parents=True, exist_ok=True)
    package = root / "package.zip"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    package.write_bytes(buffer.getvalue())
    os.environ["RAMSEG_CACHE_DIR"] = str(root / "cache")
    load_model(package)


def _read_resume(root: Path, files: dict[str, bytes]) -> None:
    from napari_ramseg.core.config import TrainConfig
    from napari_ramseg.core.training.resume import read_resume_state
    from napari_ramseg.core.training.trainer import Trainer

    _write(root / "run", files)
    state = read_resume_state(root / "run")
    seed = _tiny_config()  # the network's size, threads and device stay the seed's: their limits are tested apart
    config = TrainConfig.from_dict(state["config"]).replace(model=seed.model, preprocess=seed.preprocess,
                                                            num_threads=0, device="cpu")
    trainer = Trainer(config, state["domains"], _samples(state["domains"]), run_dir=root / "run")
    trainer.load_resume_state()


def _read_corrections(root: Path, files: dict[str, bytes]) -> None:
    from napari_ramseg.core.finetune.corrections import CorrectionStore

    _write(root / "project", files)
    store = CorrectionStore(root / "project")
    for case in store.latest_cases():
        store.load(case)
    store.splits()


READERS = {"package": _read_package, "resume": _read_resume, "corrections": _read_corrections}


def read_outcome(folder: Path, kind: str, files: dict[str, bytes]) -> str:
    """'ok' or 'refused'; anything else raises (the property under test)."""
    try:
        with hang_guard():
            READERS[kind](folder, files)
    except RamsegInputError as exc:
        message = str(exc)
        assert exc.path is not None and message.startswith(str(folder)), message
        assert "\n" not in message and len(message) < 2000, message
        return "refused"
    return "ok"


_FUZZ = settings(max_examples=30, deadline=None, database=None, phases=(Phase.generate,),
                 suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def folder():
    with tempfile.TemporaryDirectory(prefix="fuzz ü ") as tmp:
        yield Path(tmp)


@pytest.mark.parametrize("kind", FILE_KINDS)
def test_seeds_read(folder, kind, monkeypatch):
    monkeypatch.setenv("RAMSEG_CACHE_DIR", str(folder / "cache"))
    assert read_outcome(folder, kind, seeds()[kind]) == "ok"


@pytest.mark.parametrize("kind", FILE_KINDS)
def test_mutated_files_read_or_refused(folder, kind, monkeypatch):
    monkeypatch.setenv("RAMSEG_CACHE_DIR", str(folder / "cache"))
    outcomes = []

    @_FUZZ
    @given(files=mutated_files(kind))
    def run(files):
        outcomes.append(read_outcome(folder, kind, files))

    run()
    assert outcomes and set(outcomes) <= {"ok", "refused"} and "refused" in outcomes
