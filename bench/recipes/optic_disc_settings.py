"""The optic disc's two-stage settings, chosen per benchmark direction on its source domains only (issue 14).

Stage one (``core/tasks/disc/locate.py``) and the model's veto (``core/tasks/disc/predict.py``) have settings that
no training run chooses: the coarse scale, the expected disc size, how many candidates the model
checks, the confidence it needs, and how often the ROI is re-centred on the predicted disc. A
benchmark row may only use settings chosen without its unseen domain, so this script chooses them
per direction from that direction's *source* data and writes ``bench/results/optic_disc_settings.json``,
which ``bench/optic_disc/benchmark.py`` reads:

- ``drishti_to_drions``: the unseen domain (DRIONS-DB) is the only set of whole photographs with disc
  masks, and Drishti-GS holds disc-centred crops. The whole photographs it may use are the vessel
  sets (CHASE_DB1, HRF, STARE: 88 photographs, no disc masks). Their disc is where the vessel tree
  converges: the peak of the expert vessel mask's density (Gaussian of sigma ``VESSEL_SIGMA`` x the
  field-of-view width). A locator is right there when its centre lies within ``HIT_RADIUS`` x the
  field-of-view width (about one disc diameter) of that peak; the peak is off the disc centre by
  about half a diameter, a wrong candidate (exudate, lamp reflex) by two or more.
- ``drions_to_drishti``: DRIONS-DB is a source: its expert discs (hit: centre inside the disc) and the
  vessel photographs.
- ``bundled`` (the shipped defaults): all the bundled model's sources, DRIONS-DB included, and the
  vessel photographs.

Locator settings (``STAGE_ONE``, ``STAGE_TWO`` grids): the highest final-ROI hit rate averaged over
the source photograph domains (each domain weighs the same; a refusal is a miss), ties broken by
stage one's best-peak hit rate, then by nearness (in grid steps) to the settings of the first
version (commit 8f95ace, each grid's first value: coarse 256 px, disc 0.17 of the field of view, three
candidates, confidence 0.6, disc fraction at most 0.9, the most confident candidate wins); the later
change to "first plausible candidate wins" was made after DRIONS-DB results were seen.
ROI refinement (``REFINE`` passes x ``MAX_RESCALE`` bounds): the mean disc Dice on source cases with
disc masks, ties to fewer passes, then to the earlier bound in ``MAX_RESCALE`` (0, unbounded, first:
the behaviour before the bound existed); the bound is chosen with ``refine`` on photographs (a crop's
refinement is unbounded). For photographs, DRIONS-DB where it is a source, else the source crops (Drishti-GS training
cases, REFUGE ROIs) cut again around a simulated stage-one error (centre off by up to ``SIM_SHIFT``
disc diameters, scale off by up to ``SIM_SCALE``, padded black); for crops (``refine_crops``), the
source crops as they are.

    python -m bench.recipes.optic_disc_settings --model drishti_to_drions=RUN --model drions_to_drishti=RUN \\
        --model bundled=napari_ramseg/bundled_models/optic-disc

The "not a colour fundus image" threshold (``DiscConfig.min_red_excess``, ``core/tasks/disc/fundus.py``) is
chosen on fundus images only, never on the images it is meant to refuse: ``FUNDUS_MARGIN`` x the lowest
red excess over every photograph and crop of the fundus sets (``FUNDUS_SETS``), per direction without
its unseen domain (``FUNDUS_UNSEEN``), and each direction's refusals are counted on every set, its
unseen domain included; ``bundled`` is DiscConfig's default:

    python -m bench.recipes.optic_disc_settings --fundus-check   # -> bench/results/fundus_check.json

A model ships its direction's choice in its model.json (the ``"disc"`` block, which ``ramseg predict``
and the Segment dock lay over ``DiscConfig``'s defaults); the search itself always starts from those
defaults, never from a package's block. To write a choice already in the results file:

    python -m bench.recipes.optic_disc_settings --write-into bundled=napari_ramseg/bundled_models/optic-disc
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from bench.common.machine import describe
from bench.recipes.optic_disc_data import dofe_cases, held_out
from bench.common.tasks import domain_cases, read_index, read_rgb, disc_diameter
from napari_ramseg.core.models.checkpoint import write_disc_settings
from napari_ramseg.core.config import DiscConfig
from napari_ramseg.core.tasks.disc import DiscPredictor, locate
from napari_ramseg.core.tasks.disc.locate import coarse_luminance, field_of_view
from napari_ramseg.core.tasks.disc.roi import Roi, crop, paste
from napari_ramseg.core.inference.predictor import Predictor
from napari_ramseg.core.evaluation.metrics import dice_score
from napari_ramseg.errors import RamsegInputError
from napari_ramseg.files import atomic_write

VESSEL_SETS = ("CHASE_DB1", "HRF", "STARE")
SOURCE_PHOTOGRAPHS = {"drishti_to_drions": VESSEL_SETS, "drions_to_drishti": ("DRIONS-DB", *VESSEL_SETS),
                      "bundled": ("DRIONS-DB", *VESSEL_SETS)}
SOURCE_CROPS = {"drishti_to_drions": ("Drishti-GS", "REFUGE"),
                "drions_to_drishti": ("REFUGE", "DRIONS-DB crops"),
                "bundled": ("Drishti-GS", "REFUGE", "DRIONS-DB crops")}
STAGE_ONE = {"coarse_long_side": (256, 384), "disc_fov_ratio": (0.17, 0.15, 0.19)}
STAGE_TWO = {"candidates": (3, 5), "min_confidence": (0.6, 0.5, 0.7),
             "max_disc_fraction": (0.9, 0.6, 0.7, 0.8, 1.0), "pick": ("confident", "first")}
REFINE = (0, 1, 2)
MAX_RESCALE = (0.0, 1.5, 1.25, 1.1, 1.0)  # DiscConfig.max_rescale: 0 unbounded, 1 re-centre only
# the fundus check's sets: name -> glob under the data folder (every photograph or crop of each)
FUNDUS_SETS = {"HRF": "vessels/HRF/images/*", "STARE": "vessels/STARE/images/*",
               "CHASE_DB1": "vessels/CHASE_DB1/images/*", "Drishti-GS": "fundus/Drishti-GS/images/*",
               "DRIONS-DB": "fundus/DRIONS-DB/images/*",
               **{f"DoFE {d}": f"fundus_dofe_layout/{d}/*/ROIs/image/*" for d in ("Domain1", "Domain3", "Domain4")}}
# a direction's unseen domain, left out of its threshold's choice (DoFE Domain1 is Drishti-GS repackaged)
FUNDUS_UNSEEN = {"bundled": (), "drishti_to_drions": ("DRIONS-DB",), "drions_to_drishti": ("Drishti-GS", "DoFE Domain1")}
FUNDUS_MARGIN = 0.8  # the fit check's convention (FitConfig.margin): threshold = margin x the lowest source value
VESSEL_SIGMA, HIT_RADIUS = 0.085, 0.17  # of the field-of-view width: half and one typical disc diameter
SIM_SHIFT, SIM_SCALE = 0.3, 1.25
WORK_LONG_SIDE = 1200  # HRF's 3504 px photographs are brought to this first (stage two's ROIs are 128 px)


@dataclasses.dataclass
class Photo:
    domain: str
    name: str
    image: np.ndarray
    disc: np.ndarray | None  # expert disc mask, else the vessel-convergence point below
    point: tuple[float, float] | None = None
    radius: float = 0.0

    def hit(self, y: float, x: float) -> bool:
        if self.disc is not None:
            yi, xi = int(round(y)), int(round(x))
            return 0 <= yi < self.disc.shape[0] and 0 <= xi < self.disc.shape[1] and bool(self.disc[yi, xi])
        return float(np.hypot(y - self.point[0], x - self.point[1])) <= self.radius


def _shrink(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    scale = WORK_LONG_SIDE / max(image.shape[:2])
    if scale >= 1:
        return image, mask
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    return (np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR)),
            np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.BILINEAR)) > 127)


def vessel_photographs(data: Path, domain: str) -> list[Photo]:
    """A vessel set's photographs with their vessel-convergence point (from the expert vessel mask)."""
    out = []
    folder = data / "vessels" / domain
    for lab in sorted((folder / "labels").glob("*.png")):
        image = read_rgb(next(p for p in (folder / "images").iterdir() if p.name.split(".")[0] == lab.stem))
        image, vessels = _shrink(image, read_index(lab) > 0)
        luma, scale = coarse_luminance(image, 256)
        cols = np.flatnonzero(field_of_view(luma, DiscConfig()).any(axis=0))
        width = (cols[-1] - cols[0] + 1) / scale
        out.append(Photo(domain, lab.stem, image, None, convergence_point(vessels, width), HIT_RADIUS * width))
    return out


def convergence_point(vessels: np.ndarray, fov_width: float) -> tuple[float, float]:
    """(y, x) where a vessel mask is densest at the scale of a disc: where the vessel tree converges."""
    density = ndimage.gaussian_filter(vessels.astype(np.float32), VESSEL_SIGMA * fov_width)
    y, x = np.unravel_index(int(np.argmax(density)), density.shape)
    return float(y), float(x)


def source_photographs(data: Path, domains) -> list[Photo]:
    out = []
    for d in domains:
        if d == "DRIONS-DB":
            out += [Photo(d, s, i, m >= 1) for s, i, m in domain_cases(data / "fundus" / d)]
        else:
            out += vessel_photographs(data, d)
    return out


def source_crops(data: Path, domains, ratio: float) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """(domain, name, crop, mask) of the source crops: Drishti-GS training cases, REFUGE ROIs, and
    DRIONS-DB's photographs cut to their ground-truth ROI (the DoFE packaging)."""
    out = []
    for d in domains:
        if d == "Drishti-GS":
            out += [(d, s, i, m) for s, i, m in domain_cases(data / "fundus" / d) if not held_out(s)]
        elif d == "REFUGE":
            for dom in ("Domain3", "Domain4"):
                out += [(d, f"{dom}_{s}", i, m) for s, i, m in dofe_cases(data / "fundus_dofe_layout", dom)]
        else:
            for s, i, m in domain_cases(data / "fundus" / "DRIONS-DB"):
                roi = Roi.around(ndimage.center_of_mass(m >= 1), disc_diameter(m), ratio)
                out.append((d, s, crop(i, roi), crop(m, roi)))
    return out


def _by_domain(rows: list[tuple[str, float]]) -> float:
    doms = sorted({d for d, _ in rows})
    return float(np.mean([np.mean([v for d2, v in rows if d2 == d]) for d in doms]))


def choose_locator(disc: DiscPredictor, photos: list[Photo], log) -> tuple[dict, list[dict]]:
    """Every grid point's source hit rates; the chosen settings (module docstring's rule)."""
    default, table = DiscConfig(), []
    top_c = max(STAGE_TWO["candidates"])
    for long_side in STAGE_ONE["coarse_long_side"]:
        for ratio in STAGE_ONE["disc_fov_ratio"]:
            cfg = dataclasses.replace(default, coarse_long_side=long_side, disc_fov_ratio=ratio, candidates=top_c)
            disc.config = cfg
            checks = []  # per photo: (top hit, [(score, hit of the predicted disc's centre)] per candidate)
            for p in photos:
                located = locate(p.image, cfg)
                cands = []
                for cand in located.candidates[:top_c]:
                    _, roi, pred = disc.check(p.image, cand)
                    inside = pred.labels >= 1
                    pts = np.argwhere(inside)
                    c = (roi.top + pts[:, 0].mean(), roi.left + pts[:, 1].mean()) if pts.size else (cand.y, cand.x)
                    conf = float(pred.probabilities[0][inside].mean()) if pts.size else 0.0
                    cands.append((conf, float(inside.mean()), p.hit(*c)))
                top = located.candidates[0]
                checks.append((p.hit(top.y, top.x), cands))
            top_hit = _by_domain([(p.domain, float(t)) for (t, _), p in zip(checks, photos)])
            for n, conf, most, pick in itertools.product(*STAGE_TWO.values()):
                final = []
                for (_, cands), p in zip(checks, photos):  # predict.py's rule, on the cached checks
                    ok = [(c, hit) for c, f, hit in cands[:n] if c >= conf and default.min_disc_fraction <= f <= most]
                    if ok and pick == "confident":
                        ok = [max(ok, key=lambda t: t[0])]  # max keeps the first of equal confidences
                    final.append((p.domain, float(ok[0][1]) if ok else 0.0))
                doms = sorted({d for d, _ in final})
                by_domain = {d: float(np.mean([v for d2, v in final if d2 == d])) for d in doms}
                table.append({"coarse_long_side": long_side, "disc_fov_ratio": ratio, "candidates": n,
                              "min_confidence": conf, "max_disc_fraction": most, "pick": pick,
                              "final_hit": _by_domain(final),
                              "top_hit": top_hit, "final_hit_by_domain": by_domain})
            here = [r["final_hit"] for r in table if (r["disc_fov_ratio"], r["coarse_long_side"]) == (ratio, long_side)]
            log(f"  coarse {long_side} disc/fov {ratio}: top hit {top_hit:.3f}, final {max(here):.3f} "
                "(best of stage two)")

    def distance(r):  # nearness to the first version's settings, in grid steps
        return sum(STAGE_ONE.get(k, STAGE_TWO.get(k)).index(r[k]) for k in (*STAGE_ONE, *STAGE_TWO))

    best = max(table, key=lambda r: (round(r["final_hit"], 6), round(r["top_hit"], 6), -distance(r)))
    return {k: best[k] for k in (*STAGE_ONE, *STAGE_TWO)}, table


def _simulated(image, mask, rng, ratio):
    """A source crop cut again around a stage-one error: shifted centre, wrong scale, black padding."""
    cy, cx = ndimage.center_of_mass(mask >= 1)
    d = disc_diameter(mask)
    r, a = SIM_SHIFT * d * np.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
    scale = np.exp(rng.uniform(-1, 1) * np.log(SIM_SCALE))
    return Roi.around((cy + r * np.sin(a), cx + r * np.cos(a)), d * scale, ratio)


def choose_refinement(disc: DiscPredictor, settings: dict, photos: list[Photo], crops, log) -> tuple[dict, dict]:
    """refine and max_rescale (photographs), and refine_crops: each the choice with the best mean source
    disc Dice (module docstring's rule)."""
    cfg = dataclasses.replace(DiscConfig(), **settings)
    scores: dict = {"photographs": {}, "crops": {}}  # "passes/bound" -> mean source disc Dice
    with_masks = [p for p in photos if p.disc is not None]
    rng = np.random.default_rng(0)
    sims = [(d, n, i, m, _simulated(i, m, rng, cfg.roi_ratio)) for d, n, i, m in crops if d != "DRIONS-DB crops"]
    grid = [(0, 0.0)] + [(k, b) for k in REFINE if k > 0 for b in MAX_RESCALE]  # no pass: no bound to set
    for k, bound in grid:
        disc.config = dataclasses.replace(cfg, refine=k, refine_crops=k, max_rescale=bound)
        rows = []
        if with_masks:  # the product path on source photographs
            for p in with_masks:
                try:
                    rows.append((p.domain, dice_score(disc.predict(p.image).labels >= 1, p.disc)))
                except RamsegInputError:
                    rows.append((p.domain, 0.0))
        else:  # stage two on source crops cut around a simulated stage-one error
            for d, _, image, mask, roi in sims:
                pred = disc.predictor.predict_image(crop(image, roi), postprocess=True)
                roi, pred = disc.refine(image, roi, pred, k)
                rows.append((d, dice_score(paste(pred.labels, roi, mask.shape) >= 1, mask >= 1)))
        key = f"{k}/{bound}"
        scores["photographs"][key] = _by_domain(rows)
        log(f"  refine {k} max_rescale {bound}: photographs {scores['photographs'][key]:.4f}")
        if bound:
            continue  # a crop's refinement is unbounded: its scores are the bound 0 rows'
        rows = []
        for d, _, image, mask in crops:
            try:
                rows.append((d, dice_score(disc.predict(image).labels >= 1, mask >= 1)))
            except RamsegInputError:
                rows.append((d, 0.0))
        scores["crops"][k] = _by_domain(rows)
        log(f"  refine_crops {k}: crops {scores['crops'][k]:.4f}")
    return pick_refinement(scores), scores


def pick_refinement(scores: dict) -> dict:
    """From ``choose_refinement``'s scores (photographs: "passes/bound" -> Dice; crops: passes -> Dice):
    the best photograph (refine, max_rescale) and the best refine_crops; ties to fewer passes, then to
    the earlier bound in MAX_RESCALE; scores equal to 4 decimals tie."""
    grid = [(int(k), float(b)) for k, b in (key.split("/") for key in scores["photographs"])]
    refine, bound = max(grid, key=lambda kb: (round(scores["photographs"][f"{kb[0]}/{kb[1]}"], 4), -kb[0],
                                              -MAX_RESCALE.index(kb[1])))
    refine_crops = max(scores["crops"], key=lambda k: (round(scores["crops"][k], 4), -k))
    return {"refine": refine, "max_rescale": bound, "refine_crops": refine_crops}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", default=[],
                    help="NAME=RUN_FOLDER, NAME in " + ", ".join(SOURCE_PHOTOGRAPHS))
    ap.add_argument("--write-into", action="append", default=[], metavar="NAME=MODEL_FOLDER",
                    help="then write direction NAME's chosen settings (from --out) into MODEL_FOLDER's model.json; "
                         "MODEL_FOLDER must be the run they were chosen for")
    ap.add_argument("--fundus-check", nargs="?", type=Path, metavar="JSON",
                    const=Path(__file__).resolve().parents[1] / "results" / "fundus_check.json",
                    help="choose the 'not a colour fundus image' threshold per direction on the fundus sets "
                         "and write it to JSON (default bench/results/fundus_check.json)")
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "data")
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).resolve().parents[1] / "results" / "optic_disc_settings.json")
    args = ap.parse_args(argv)
    if not args.model and not args.write_into and args.fundus_check is None:
        ap.error("nothing to do: give --model NAME=RUN (search), --write-into NAME=MODEL_FOLDER and/or --fundus-check")
    if args.fundus_check is not None:
        result = fundus_check(args.data)
        result["command"] = "python " + " ".join([sys.argv[0], *(argv or sys.argv[1:])])
        args.fundus_check.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(args.fundus_check, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1)))
        for name, d in result["directions"].items():
            print(f"{name}: min_red_excess {d['threshold']} (lowest {d['lowest']['value']:.4f}, {d['lowest']['set']} "
                  f"{d['lowest']['case']}); refused {json.dumps(d['refused'])}", flush=True)
        if result["directions"]["bundled"]["threshold"] != DiscConfig().min_red_excess:
            print(f"note: DiscConfig.min_red_excess is {DiscConfig().min_red_excess}, the bundled choice "
                  f"{result['directions']['bundled']['threshold']}: update core/config.py", flush=True)
        print(f"wrote {args.fundus_check}", flush=True)
    if args.model:
        search(args, argv)
    for name, folder in (w.split("=", 1) for w in args.write_into):
        print(write_into(args.out, name, Path(folder)), flush=True)
    return 0


def fundus_check(data: Path) -> dict:
    """Every fundus photograph's and crop's red excess (``core/tasks/disc/fundus.py``); per direction the
    threshold (FUNDUS_MARGIN x the lowest over its sets, rounded down to 0.001) and how many images of
    each set, its unseen domain included, it would refuse."""
    from napari_ramseg.core.tasks.disc.fundus import red_excess

    values: dict[str, dict[str, float]] = {}
    for name, pattern in FUNDUS_SETS.items():
        paths = sorted(p for p in data.glob(pattern) if not p.name.startswith("."))
        values[name] = {p.stem: round(red_excess(read_rgb(p)), 4) for p in paths}
        if not paths:
            raise SystemExit(f"optic_disc_settings: no images for {name} under {data / pattern}")
    sets = {name: {"images": len(v), "min": min(v.values()), "min_case": min(v, key=v.get),
                   "median": round(float(np.median(list(v.values()))), 4), "max": max(v.values())} for name, v in values.items()}
    directions = {}
    for direction, unseen in FUNDUS_UNSEEN.items():
        chosen_on = [n for n in FUNDUS_SETS if n not in unseen]
        low = min(chosen_on, key=lambda n: sets[n]["min"])
        threshold = float(np.floor(FUNDUS_MARGIN * sets[low]["min"] * 1000) / 1000)
        directions[direction] = {
            "chosen_on": chosen_on, "unseen": list(unseen), "threshold": threshold,
            "lowest": {"set": low, "case": sets[low]["min_case"], "value": sets[low]["min"]},
            "refused": {n: sum(v < threshold for v in values[n].values()) for n in FUNDUS_SETS}}
    return {"machine": describe(), "statistic": "red excess: mean R / (R + G + B) - 1/3 inside the field of view "
            "(napari_ramseg/core/tasks/disc/fundus.py)", "margin": FUNDUS_MARGIN, "sets": sets, "directions": directions,
            "disc_config_default": DiscConfig().min_red_excess, "values": values}


def write_into(results: Path, name: str, folder: Path) -> str:
    """Write direction ``name``'s chosen settings into ``folder``'s model.json (its ``"disc"`` block)."""
    directions = json.loads(results.read_text()).get("directions", {}) if results.exists() else {}
    if name not in directions:
        raise SystemExit(f"optic_disc_settings: no settings chosen for {name!r} in {results}")
    chosen = directions[name]
    root = Path(__file__).resolve().parents[2]
    if (root / chosen["run"]).resolve() != folder.resolve():
        raise SystemExit(f"optic_disc_settings: {name}'s settings were chosen for {chosen['run']}, not {folder}")
    written = write_disc_settings(folder, chosen["settings"])
    return f"{name}: wrote {json.dumps(chosen['settings'])} into {written}"


def search(args, argv) -> None:
    """Choose each --model direction's settings on its sources; write them to --out."""
    command = "python " + " ".join([sys.argv[0], *(argv or sys.argv[1:])])
    result = {"command": command, "machine": describe(), "rule": __doc__.split("\n\n", 3)[2].strip(), "directions": {}}
    for name, run in (m.split("=", 1) for m in args.model):
        t0 = time.perf_counter()
        print(f"{name}: source photographs {', '.join(SOURCE_PHOTOGRAPHS[name])}", flush=True)
        # DiscConfig's defaults, not the package's block: the search's ties and unchosen settings start there
        disc = DiscPredictor(Predictor.from_path(run, device="cpu", precision="fp32"), DiscConfig())
        photos = source_photographs(args.data, SOURCE_PHOTOGRAPHS[name])
        settings, table = choose_locator(disc, photos, lambda s: print(s, flush=True))
        crops = source_crops(args.data, SOURCE_CROPS[name], DiscConfig().roi_ratio)
        refine, refine_scores = choose_refinement(disc, settings, photos, crops, lambda s: print(s, flush=True))
        result["directions"][name] = {
            "run": run, "source_photographs": {d: sum(p.domain == d for p in photos) for d in SOURCE_PHOTOGRAPHS[name]},
            "source_crops": {d: sum(c[0] == d for c in crops) for d in SOURCE_CROPS[name]},
            "settings": {**settings, **refine}, "grid": table, "refine_scores": refine_scores,
            "seconds": round(time.perf_counter() - t0, 1), "command": command, "machine": describe()}
        print(name, json.dumps(result["directions"][name]["settings"]), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if args.out.exists():  # read again now: directions chosen before, or by a run beside this one, are kept
            result["directions"] = {**json.loads(args.out.read_text()).get("directions", {}),
                                    name: result["directions"][name]}
        atomic_write(args.out, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1)))


if __name__ == "__main__":
    raise SystemExit(main())
