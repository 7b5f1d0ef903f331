"""The generalization benchmark: its job list (bench/generalization/jobs.py), driver
(bench/generalization/benchmark.py) and data preparation (bench/common/tasks.py)."""

from __future__ import annotations

import json
import pickle
from collections import Counter
from dataclasses import asdict

import numpy as np
import pytest

from helpers import import_bench


@pytest.fixture(scope="module")
def bench():
    return import_bench("generalization.benchmark"), import_bench("common.tasks")


@pytest.fixture(scope="module")
def job_list(bench):
    """bench/generalization/jobs.py (methods, directions, budgets)."""
    return import_bench("generalization.jobs")


def test_job_keys_are_stable_and_survive_pickle_and_json(job_list):
    """A job's key finds its cached run: the committed reference results are rebuilt from the cache by
    these keys, so the hash must not move; workers get jobs pickled, records rebuild them from JSON."""
    jobs = job_list.build_jobs(["vessels"], "reference", [0], ["erm"], {"device": "cpu", "threads": 1})
    assert "vessels__HRF+CHASE_DB1-STARE__erm__s0__80d4119a" in {j.key for j in jobs}
    for job in jobs:
        assert pickle.loads(pickle.dumps(job)).key == job.key
        assert job_list.Job(**json.loads(json.dumps(asdict(job)))).key == job.key


def test_job_list_methods_seeds_and_budget(job_list):
    jobs = job_list.build_jobs(["vessels", "optic_disc", "prostate"], "quick", [0, 1, 2])
    vessels = [j for j in jobs if j.task == "vessels"]
    counts = Counter((j.direction, j.method) for j in vessels)
    # leave one domain out of three: two source domains each
    assert set(job_list.DIRECTIONS["vessels"]) == {("HRF+STARE", "CHASE_DB1"), ("HRF+CHASE_DB1", "STARE"),
                                                   ("STARE+CHASE_DB1", "HRF")}
    for direction in ("HRF+STARE->CHASE_DB1", "HRF+CHASE_DB1->STARE", "STARE+CHASE_DB1->HRF"):
        for method in ("erm", "erm_long", "ram_dsir", "ceiling"):
            assert counts[(direction, method)] == 3
        for method in ("ram", "ram_sc"):
            assert counts[(direction, method)] == 1
    base = job_list.PROFILES["quick"]["vessels"]["iterations"]
    for j in vessels:
        assert j.iterations == (2 * base if j.method == "erm_long" else base)
        assert j.params["size"] == 128 and j.params["long_side"] == 540
    # identical data/budget/seeds: the same seeds for every multi-seed method
    seeds = {m: sorted(j.seed for j in vessels if j.method == m and j.direction == "HRF+STARE->CHASE_DB1")
             for m in job_list.MULTI_SEED_METHODS}
    assert all(s == [0, 1, 2] for s in seeds.values())
    # priority: all vessel jobs come before optic disc, the prostate smoke run last
    order = [j.task for j in jobs]
    assert order.index("optic_disc") > max(i for i, t in enumerate(order) if t == "vessels")
    assert order[-1] == "prostate" and order.count("prostate") == 1
    assert len({j.key for j in jobs}) == len(jobs)
    # the first seed of every headline method comes before any second seed; the ablations come last,
    # so a run cut short still has whole seeds of the table's main columns
    first_seed1 = min(i for i, j in enumerate(vessels) if j.seed == 1)
    assert {j.method for j in vessels[:first_seed1]} == set(job_list.MULTI_SEED_METHODS)
    first_ablation = min(i for i, j in enumerate(vessels) if j.method not in job_list.MULTI_SEED_METHODS)
    assert all(j.method in job_list.MULTI_SEED_METHODS for j in vessels[:first_ablation])
    assert {j.method for j in vessels[first_ablation:]} == {"ram", "ram_sc"}


def test_full_profile_uses_epochs(job_list):
    counts = {"vessels": {"HRF": 42, "STARE": 18, "CHASE_DB1": 28}}
    jobs = job_list.build_jobs(["vessels"], "full", [0], ["erm", "erm_long"], case_counts=counts)
    by = {(j.source, j.method): j.iterations for j in jobs}
    # epochs over both source domains' training cases: HRF 42 - 8 held out, STARE 18 - 4
    assert by[("HRF+STARE", "erm")] == int(np.ceil(400 * (34 + 14) / 16))
    assert by[("HRF+STARE", "erm_long")] == 2 * by[("HRF+STARE", "erm")]
    fixed = job_list.build_jobs(["vessels"], "full", [0], ["erm"], overrides={"iterations": 7}, case_counts=counts)
    assert all(j.iterations == 7 for j in fixed)


def test_reference_profile_is_the_issues_setup(bench, job_list):
    """--reference: 256 px crops at batch 8 and 400 iterations, erm_long 800, whatever the case counts."""
    jobs = job_list.build_jobs(["vessels", "optic_disc"], "reference", [0], ["erm", "erm_long", "ram_dsir"],
                               case_counts={"vessels": {"HRF": 45, "STARE": 20, "CHASE_DB1": 28}, "optic_disc": {"Drishti-GS": 50, "DRIONS-DB": 110}})
    assert {(j.params["size"], j.params["batch"]) for j in jobs} == {(256, 8)}
    assert {j.iterations for j in jobs if j.method != "erm_long"} == {400}
    assert {j.iterations for j in jobs if j.method == "erm_long"} == {800}
    gen, _ = bench
    assert gen.parse_args(["--reference"]).profile == "reference"


def test_ceiling_folds_cover_every_case_once(job_list):
    names = [f"c{i:02d}" for i in range(18)]
    folds = job_list.ceiling_folds(names, "STARE")
    assert sorted(sum(folds, [])) == names
    assert [len(f) for f in folds] == [6, 6, 6]
    assert folds == job_list.ceiling_folds(list(reversed(names)), "STARE")


def test_disc_roi_on_synthetic_disc(bench):
    _, tasks = bench
    h, w = 400, 600
    yy, xx = np.mgrid[:h, :w]
    cy, cx, r = 150, 420, 40  # diameter 80 (81 px with the centre row)
    mask = np.zeros((h, w), np.uint8)
    mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
    mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= (r // 2) ** 2] = 2
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = 100
    image[mask >= 1] = (250, 200, 100)
    assert tasks.disc_diameter(mask) == 81
    img, roi = tasks.disc_roi(image, mask, ratio=2.0, roi_size=128)
    assert img.shape == (128, 128, 3) and roi.shape == (128, 128)
    # the disc sits in the centre and spans ~1/ratio of the ROI
    t, b, l, rr = tasks.bbox(roi >= 1)
    assert abs((t + b) / 2 - 64) <= 2 and abs((l + rr) / 2 - 64) <= 2
    assert abs((b - t) - 64) <= 3
    assert set(np.unique(roi).tolist()) == {0, 1, 2}
    assert (roi[roi == 2].size > 0) and ((roi == 2) <= (roi >= 1)).all()
    # a disc near the border: the ROI is padded with black, never shifted off-centre
    mask2 = np.zeros((h, w), np.uint8)
    mask2[(yy - 45) ** 2 + (xx - 45) ** 2 <= r * r] = 1  # whole disc inside, ROI crosses the border
    img2, roi2 = tasks.disc_roi(image, mask2, ratio=2.0, roi_size=128)
    t, b, l, rr = tasks.bbox(roi2 >= 1)
    assert abs((t + b) / 2 - 64) <= 2 and abs((l + rr) / 2 - 64) <= 2
    assert (img2[:5, :5] == 0).all()


def test_fov_crop_and_threshold_fov(bench):
    _, tasks = bench
    h, w = 300, 360
    yy, xx = np.mgrid[:h, :w]
    fov = (yy - 150) ** 2 + (xx - 200) ** 2 <= 120 ** 2  # bbox rows 30..270, cols 80..320
    image = np.zeros((h, w, 3), np.uint8)
    image[fov] = (180, 90, 40)
    mask = np.zeros((h, w), np.uint8)
    mask[148:153, 100:300] = 1
    found = tasks.threshold_fov(image)
    assert (found ^ fov).mean() < 0.01
    p = tasks.fov_crop(image, mask, found, long_side=120)
    assert max(p.image.shape[:2]) == 120 and p.image.shape[:2] == p.mask.shape == p.fov.shape
    assert abs(p.image.shape[0] - p.image.shape[1]) <= 1  # the FOV's bounding box is square
    assert p.fov.mean() > 0.7 and p.mask.sum() > 0 and not (p.mask.astype(bool) & ~p.fov).any()
    # a real FOV mask is used as given
    t, b, l, r = tasks.bbox(fov)
    assert (t, b, l, r) == (30, 271, 80, 321)


@pytest.mark.slow  # ~6 s on an idle core, much more on the shared CPU
def test_tiny_end_to_end_writes_agreed_json(bench, tmp_path):
    gen, _ = bench
    out, work = tmp_path / "results", tmp_path / "work"
    argv = ["--tasks", "synthetic", "--seeds", "0", "--methods", "erm,ram_dsir,ceiling", "--iterations", "2",
            "--workers", "1", "--out", str(out), "--work", str(work)]
    assert gen.main(argv) == 0
    results = json.loads((out / "generalization.json").read_text())
    assert list(results) == ["synthetic"]
    cell = results["synthetic"]["SynA+SynB->SynC"]
    assert set(cell) == {"erm", "ram_dsir", "ceiling"}
    assert all(isinstance(v, list) and len(v) == 1 and 0.0 <= v[0] <= 1.0 for v in cell.values())
    meta = json.loads((out / "generalization_meta.json").read_text())
    assert meta["status"] == "complete" and meta["jobs_done"] == meta["jobs_total"] == 3
    assert meta["machine"]["cpu_capability"] and "bf16" in meta["machine"]
    assert meta["machine"]["nproc"] >= 1 and "command" in meta and meta["timings"]
    assert (out / "generalization.md").read_text().startswith("# Generalization benchmark")
    # resumable: a second run finds every job cached and trains nothing
    cached = sorted(p.name for p in (work / "quick" / "jobs").glob("*.json"))
    assert len(cached) == 3
    assert gen.main(argv) == 0
    assert json.loads((out / "generalization.json").read_text()) == results


def test_style_swap_takes_the_partners_low_frequency_amplitude(bench):
    """The diagnostic's transform: RAM with lambda = 0, partner resized to the image's shape."""
    style = import_bench("archive.diagnose_style_gap")
    from napari_ramseg.core.method.ram import window_bounds

    rng = np.random.default_rng(0)
    image = rng.uniform(-0.5, 0.5, (3, 40, 48)).astype(np.float32)
    assert np.allclose(style.style_swap(image, image, 0.1), image, atol=1e-5)  # own style: unchanged

    partner = (0.3 * rng.uniform(-0.5, 0.5, (3, 40, 48)) + 0.2).astype(np.float32)  # same shape: no resize
    swapped = style.style_swap(image, partner, 0.1)
    r0, r1, c0, c1 = window_bounds(40, 48, 0.1)
    amp = lambda x: np.abs(np.fft.fftshift(np.fft.fft2(x), axes=(-2, -1)))[..., r0:r1, c0:c1]  # noqa: E731
    assert np.allclose(amp(swapped), amp(partner), rtol=1e-3, atol=1e-2)
    assert not np.allclose(amp(image), amp(partner), rtol=1e-3, atol=1e-2)
    assert style.style_swap(image, rng.uniform(-1, 1, (3, 20, 30)).astype(np.float32), 0.1).shape == image.shape


def test_vessel_share_held_out_takes_only_the_photographs_the_model_never_trained_on():
    """``--held-out`` compares two models on their source-validation photographs (the same split): the bundled
    model's val_cases of one camera, and none of the photographs it trained on."""
    import json

    from napari_ramseg.models import bundled_model_path

    share = import_bench("generalization.vessel_share")
    val = json.loads((bundled_model_path() / "model.json").read_text())["data"]["val_cases"]
    held = share.held_out_cases("vessels", "STARE")
    assert held and held == {c.split("/")[1] for c in val if c.startswith("STARE/")}
    assert share.held_out_cases("vessels", "no-such-camera") == set()
