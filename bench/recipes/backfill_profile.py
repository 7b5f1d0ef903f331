#!/usr/bin/env python
"""Backfill a trained model's model.json with what training now records (the bundled model by default).

The bundled vessel model was trained before ``model.json`` recorded its source profile (``core/shift/domain_fit.py``)
and while its data were recorded by machine path. This reads its training data again through the
project's own loaders at the model's working scale (``training.job.load_training_data`` with the model's
preprocess, validation fraction and seed), checks that they are the very cases the model recorded,
and writes:

- ``source_profile``: per source domain colour/grey, 2D/3D, intensity statistics and mean
  low-frequency log-amplitude spectrum, with the fit threshold calibrated on the model's own
  source-validation cases (the same ``profile_domains`` + ``calibrate`` that ``Trainer`` runs);
- ``data``: by name, SHA-256 and file count instead of its root path;
- ``command``: without machine paths (``checkpoint.portable_command``).

Everything else in model.json is left exactly as it is. The weights are not touched.

    python -m bench.recipes.backfill_profile            # the bundled model, data in ../shared/data/vessels
    python -m bench.recipes.backfill_profile --model RUN --data DATA_ROOT --description "grey prostate MRI"
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from napari_ramseg.core.models.checkpoint import load_metadata, portable_command, resolve_model_path
from napari_ramseg.core.shift.domain_fit import calibrate, profile_domains
from napari_ramseg.core.training.job import load_training_data
from napari_ramseg.files import atomic_write_json
from napari_ramseg.models import bundled_model_path

ROOT = Path(__file__).resolve().parents[2]

BUNDLED_DESCRIPTION = "colour fundus photographs"


def backfill(model: Path, data_root: Path, description: str | None) -> dict:
    _, meta_path = resolve_model_path(model)
    raw = json.loads(meta_path.read_text(encoding="utf-8"))
    meta = load_metadata(model)
    recorded = meta.extra.get("data") or {}
    cfg = meta.config
    data = load_training_data(data_root, recorded.get("format", "auto"), list(meta.domains),
                              recorded.get("target_domain"), cfg.labels, cfg.val_fraction, cfg.seed,
                              preprocess=cfg.preprocess)
    for key in ("train_cases", "val_cases"):
        if key in recorded and recorded[key] != data.description[key]:
            raise SystemExit(f"{data_root}: its {key} differ from those {meta_path} records; "
                             "is this the data the model was trained on?")
    samples = [s for d in data.domains for s in data.train[d]]
    profile = calibrate(profile_domains(samples, cfg.preprocess, cfg.method.window_ratio, description=description),
                        data.val, cfg.preprocess)
    raw["data"] = {**{k: v for k, v in recorded.items() if k != "root"}, **data.description}
    if isinstance(raw.get("command"), str):
        raw["command"] = portable_command(raw["command"])
    raw["source_profile"] = profile.to_dict()
    atomic_write_json(meta_path, raw)
    load_metadata(model)  # what was written must load
    return profile.calibration


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=bundled_model_path())
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "vessels")
    parser.add_argument("--description", default=None,
                        help=f"what the source images are, for the warning (bundled model: {BUNDLED_DESCRIPTION!r})")
    args = parser.parse_args(argv)
    description = args.description
    if description is None and args.model.resolve() == bundled_model_path().resolve():
        description = BUNDLED_DESCRIPTION
    calibration = backfill(args.model, args.data, description)
    print(f"{args.model}: source profile written; threshold {calibration['threshold']} "
          f"({calibration.get('cases', 0)} source-validation cases, lowest score {calibration.get('lowest_score')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
