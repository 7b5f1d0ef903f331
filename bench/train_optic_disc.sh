#!/usr/bin/env bash
# Trains the optic disc and cup models of issue 14 with RAM-DSIR, one after the other (one thread each):
#   drishti_to_drions  Drishti-GS (76 training cases) + REFUGE-train + REFUGE-val -> scored on DRIONS-DB
#   drions_to_drishti  DRIONS-DB (disc only: its cup loss is masked out) + REFUGE-train + REFUGE-val
#                      -> scored on Drishti-GS
#   bundled            all four sources; the model in napari_ramseg/bundled_models/optic-disc
# The training ROIs come from bench/optic_disc_data.py (ground-truth-centred ROIs plus jittered copies,
# 256 px); the network sees them at 128 px (--size 128), which the 2-core CPU budget allowed.
# Needs the research data in ../shared/data (never shipped). Usage:
#   bash bench/train_optic_disc.sh [SET ...]   (default: all three; ITERATIONS=600 by default)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=${WORK:-$here/bench/work/optic_disc}
iterations=${ITERATIONS:-600}
[ -d "$work/domains" ] || python "$here/bench/optic_disc_data.py" --out "$work"
for set in "${@:-drishti_to_drions bundled drions_to_drishti}"; do
  for s in $set; do
    OMP_NUM_THREADS=1 nice -n 5 ramseg train --data "$work/$s" --format domains --labels disc,cup --size 128 \
      --batch 8 --iterations "$iterations" --seed 0 --threads 1 --out "$work/runs/$s" --quiet
  done
done
