#!/usr/bin/env bash
# Everything one lent GPU session does, in one command (the lease is short, and each start costs
# minutes). First and foremost it trains the bundled models at their recipes' budgets together with
# each recipe's leave-one-camera-out checks, all side by side on the GPU (bench/recipes/shipped.py),
# and brings back the two bundled models, the optic disc checks' models (scored here on the CPU by
# bench/optic_disc/benchmark.py, whose raw photographs do not travel) and every score; then the CUDA speed check.
#
# Prepare the data once on a machine with ../shared/data (22 MiB: it travels with the working tree):
#   python -m bench.recipes.optic_disc_data --out bench/work/optic_disc
#   python -m bench.recipes.shipped carry --out .gpucarry          (.gpucarry is ignored: name it in carry)
# Then, on the GPU machine:
#   OUT=$OUT CARRY=.gpucarry bash bench/gpu_session.sh
# Tested on the CPU at a tiny budget:
#   DEVICE=cpu THREADS=1 ITERATIONS=2 TRAIN_ARGS="--size 64 --long-side 128" BUDGET_S=300 OUT=/tmp/g bash bench/gpu_session.sh
#
# BUDGET_S bounds the whole script (default 600 s); wheels in .whl/ (MONAI, nibabel) are installed first
# where the GPU image lacks them. At most 8 files come back from OUT: that is why runs travel as tarballs.
set -u
OUT=${OUT:-/tmp/ramseg-gpu}
CARRY=${CARRY:-.gpucarry}
BUDGET_S=${BUDGET_S:-600}
DEVICE=${DEVICE:-cuda}
THREADS=${THREADS:-2}
START=$(date +%s)
mkdir -p "$OUT"
LOG=$OUT/session.log
WORK=$(mktemp -d)
export PYTHONUNBUFFERED=1
left() { echo $(( BUDGET_S - ($(date +%s) - START) )); }
say() { echo "[$(date +%H:%M:%S) +$(( $(date +%s) - START ))s] $*" | tee -a "$LOG"; }

if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
{ nvidia-smi 2>/dev/null || echo "no nvidia-smi"; lscpu | grep -E "Model name|^CPU\(s\)"
  python3 -c "import torch, monai, nibabel; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'monai', monai.__version__)"; } >>"$LOG" 2>&1

SPEED_S=100
say "1. bundled-model recipes and their leave-one-camera-out checks, side by side on $DEVICE"
# shellcheck disable=SC2086  # TRAIN_ARGS is a list of ramseg train options
python3 -m bench.recipes.shipped side-by-side --data "$CARRY" --out "$WORK" --device "$DEVICE" --threads "$THREADS" \
    --deadline-s $(( $(left) - SPEED_S - 30 )) --score-s 120 ${ITERATIONS:+--iterations "$ITERATIONS"} ${TRAIN_ARGS:-} \
    >>"$LOG" 2>&1
say "recipes rc $?"
cp "$WORK/summary.json" "$OUT/recipes_summary.json" 2>>"$LOG"
for job in vessels__bundled optic-disc__bundled optic-disc__to_DRIONS-DB optic-disc__to_Drishti-GS; do
    [ -f "$WORK/runs/$job/model.safetensors" ] && tar -czf "$OUT/$job.tar.gz" -C "$WORK/runs" \
        "$job/model.json" "$job/model.safetensors" "$job/metrics.json" 2>>"$LOG"
done
tar -czf "$OUT/recipe_logs.tar.gz" -C "$WORK" --exclude=runs . 2>>"$LOG"

if [ "$DEVICE" = cuda ] && [ "$(left)" -gt 40 ]; then
    say "2. CUDA speed check"
    timeout $(( $(left) - 10 )) python3 -m bench.speed.gpu --json "$OUT/speed.json" >>"$LOG" 2>&1
    say "speed rc $?"
fi
say "done"
