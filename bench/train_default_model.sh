#!/usr/bin/env bash
# Trains the vessel model bundled in napari_ramseg/bundled_models/vessels: RAM-DSIR on all three
# vessel domains (HRF, STARE, CHASE_DB1), at the generalization benchmark's reference recipe (256 px
# crops of photographs brought to a 540 px field-of-view long side, batch 8) for a longer schedule.
# Needs the research data in ../shared/data (never shipped); the result (< 10 MB) is committed.
# Usage: bash bench/train_default_model.sh [OUT] [THREADS]   (then copy OUT/model.safetensors and model.json)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$here/bench/work/default-vessels}
threads=${2:-2}
exec ramseg train --data "$here/../shared/data/vessels" --domains HRF,STARE,CHASE_DB1 --labels vessel \
  --long-side 540 --size 256 --batch 8 --iterations 1000 --val-every 100 --seed 0 --threads "$threads" \
  --device cpu --out "$out"
