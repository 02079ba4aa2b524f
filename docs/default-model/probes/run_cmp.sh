#!/usr/bin/env bash
# Width/depth comparison for the default model: same wall-time budget (~5 min on 2 cores) each,
# trained on 36 corpus photos, scored on crops of the 4 held-out ones (/work/cmp/val).
set -euo pipefail
cd /work/main
R=.venv/bin/realsr
run() {  # name width depth steps
  $R train bicres --config bicres-cpu --data /work/cmp/train --out /work/cmp/runs/$1 \
    --set model.width=$2 --set model.depth=$3 --set run.max_steps=$4 --set run.checkpoint_every=$4 \
    --set schedule.warmup_steps=100 > /work/cmp/runs/$1.log 2>&1
  $R train export /work/cmp/runs/$1 -o /work/cmp/runs/$1.safetensors >> /work/cmp/runs/$1.log 2>&1
}
run w32d10 32 10 1550
run w48d8 48 8 1300
run w64d12 64 12 780
echo done > /work/cmp/runs/DONE
