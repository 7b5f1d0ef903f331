#!/usr/bin/env bash
# Everything one lent GPU session checks, in one command (the lease is short, and each start costs
# minutes): the CUDA speed check, a torchrun + NCCL training run, CUDA prediction through the CLI,
# then the reference-budget generalization table for vessels with the time that is left.
#
#   OUT=/tmp/gpu-out WORK=bench/work/generalization bash bench/gpu_session.sh
#
# WORK must hold the prepared vessel caches (bench/generalization.py writes them on a machine with
# ../shared/data); DATA is only read when they are missing. Wheels in .whl/ (MONAI, nibabel) are
# installed first where the GPU image lacks them. BUDGET_S bounds the whole script (default 560 s).
set -u
OUT=${OUT:-/tmp/ramseg-gpu}
WORK=${WORK:-bench/work/generalization}
DATA=${DATA:-../shared/data}
BUDGET_S=${BUDGET_S:-560}
START=$(date +%s)
mkdir -p "$OUT"
LOG=$OUT/session.log
export PYTHONUNBUFFERED=1
left() { echo $(( BUDGET_S - ($(date +%s) - START) )); }
say() { echo "[$(date +%H:%M:%S) +$(( $(date +%s) - START ))s] $*" | tee -a "$LOG"; }

if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
{ nvidia-smi; python3 -c "import torch, monai, nibabel; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'monai', monai.__version__)"; echo "nproc $(nproc)"; } >>"$LOG" 2>&1

say "1. CUDA speed check"
timeout 150 python3 bench/gpu.py --json "$OUT/speed.json" >>"$LOG" 2>&1
say "speed rc $?"

say "2. torchrun (NCCL, 1 process) training run, then CUDA prediction through the CLI"
python3 -c "import sys; sys.path.insert(0, 'tests'); from pathlib import Path; from helpers import make_synthetic_domains; make_synthetic_domains(Path('/tmp/ddp-data'), cases=8, size=96)" >>"$LOG" 2>&1
timeout 90 python3 -m torch.distributed.run --standalone --nproc_per_node 1 -m napari_ramseg train \
    --data /tmp/ddp-data --out /tmp/ddp-run --iterations 40 --size 64 --batch 8 --val-every 20 --device cuda --quiet >>"$LOG" 2>&1
say "torchrun rc $?"
grep -E '"(world_size|backend|global_batch|per_rank_batch|replica[a-z_]*|status|iterations_done)"' /tmp/ddp-run/model.json >>"$LOG" 2>&1
timeout 60 python3 -m napari_ramseg predict --model default --input sample_data/hrf_01_h.jpg --output /tmp/hrf_pred.png \
    --device cuda >>"$LOG" 2>&1
say "cli predict rc $?"

GEN_S=$(( $(left) - 15 ))
say "3. reference generalization table, vessels, ${GEN_S}s"
timeout "$GEN_S" python3 bench/generalization.py --reference --tasks vessels --device cuda --workers 7 --threads 2 \
    --data "$DATA" --work "$WORK" --out "$OUT/gen" >>"$LOG" 2>&1
say "generalization rc $?"
