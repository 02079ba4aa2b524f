#!/usr/bin/env bash
# Reproduce the embedded default model (realsr_cli/weights/ugtsr-x4-cpu.safetensors) on a CPU.
# Usage: bash docs/ugtsr-cpu/train.sh CORPUS_DIR RUN_DIR
#   CORPUS_DIR: built by `python tools/make_corpus.py CORPUS_DIR` (40 photos, 94 MP)
# Measured on 2 CPU cores (torch 2.13.0+cpu): 285 s + 274 s + 2092 s (3000 steps) + about 35 min
# (steps 3000-6000) = about 80 min. See README.md here for the continuation's exact history.
set -euo pipefail
data=$1 out=$2
mkdir -p "$out"
realsr train femasr-hrp --config femasr-hrp-cpu --data "$data" --out "$out/hrp"
realsr train export "$out/hrp" -o "$out/hrp.safetensors"
realsr train ugtsr-uncertainty --config ugtsr-uncertainty-cpu --data "$data" --out "$out/unc" \
  --set inputs.hrp_weights="$out/hrp.safetensors"
realsr train export "$out/unc" -o "$out/unc.safetensors"
realsr train ugtsr --config ugtsr-cpu --data "$data" --out "$out/ugtsr" \
  --set inputs.hrp_weights="$out/hrp.safetensors" --set inputs.uncertainty_weights="$out/unc.safetensors"
# continuation: the same run resumed to 6000 steps (a second cosine cycle from the checkpoint)
realsr train ugtsr --out "$out/ugtsr" --resume --max-steps 6000
realsr train export "$out/ugtsr" -o "$out/ugtsr-x4-cpu.safetensors"
