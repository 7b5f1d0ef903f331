"""The manifest at the top level resolves as the napari.manifest entry point, editable and from a wheel."""

import hashlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_manifest_validates_in_the_editable_install():
    npe2 = shutil.which("npe2")
    if npe2 is None:
        pytest.skip("npe2 command not installed")
    proc = subprocess.run([npe2, "validate", "napari-ramseg"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "valid" in (proc.stdout + proc.stderr).lower()


def test_manifest_resolves_from_the_entry_point():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-ramseg")
    assert manifest.name == "napari-ramseg"
    assert {w.display_name for w in manifest.contributions.widgets} >= {"Segment", "Train"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out),
                           str(ROOT)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return next(out.glob("napari_ramseg-*.whl"))


def test_wheel_ships_manifest_samples_and_model(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "napari_ramseg/napari.yaml" in names
    assert any(n.startswith("napari_ramseg/sample_data/") for n in names)
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "napari-ramseg = napari_ramseg:napari.yaml" in entry_points
    assert "ramseg = napari_ramseg.cli:main" in entry_points
    if (ROOT / "napari_ramseg" / "bundled_models" / "vessels" / "model.safetensors").exists():
        assert "napari_ramseg/bundled_models/vessels/model.safetensors" in names
        assert "napari_ramseg/bundled_models/vessels/model.json" in names


def test_wheel_holds_no_research_data(wheel):
    sums = ROOT.parent / "shared" / "data" / "SHA256SUMS"
    if not sums.exists():
        pytest.skip("research data checksums not available")
    research = {line.split()[0] for line in sums.read_text().splitlines() if line.strip()}
    with zipfile.ZipFile(wheel) as z:
        leaked = [n for n in z.namelist() if hashlib.sha256(z.read(n)).hexdigest() in research]
    assert not leaked


def test_manifest_resolves_from_the_installed_wheel(wheel, tmp_path):
    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    script = (
        "import sys, importlib.metadata as md\n"
        "from npe2 import PluginManifest\n"
        f"dist = next(d for d in md.distributions(path=[{str(target)!r}]) if d.metadata['Name'] == 'napari-ramseg')\n"
        "ep = next(e for e in dist.entry_points if e.group == 'napari.manifest')\n"
        "mf = PluginManifest._from_entrypoint(ep, dist)\n"
        "import napari_ramseg\n"
        "print(mf.name, napari_ramseg.__file__)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    name, module_file = proc.stdout.split()
    assert name == "napari-ramseg"
    assert Path(module_file).is_relative_to(target)  # the wheel's copy, not the source tree
