#!/usr/bin/env bash
# Trains the vessel model bundled in napari_ramseg/bundled_models/vessels: RAM-DSIR on HRF + STARE.
# Needs the research data in ../shared/data (never shipped); the result (< 10 MB) is committed.
# Usage: bash bench/train_default_model.sh [OUT]   (then copy OUT/model.safetensors and model.json)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$here/bench/work/default-vessels}
exec ramseg train --data "$here/../shared/data/vessels" --domains HRF,STARE --labels vessel \
  --long-side 540 --size 256 --batch 8 --iterations 500 --val-every 50 --seed 0 --threads 2 \
  --device cpu --out "$out"
