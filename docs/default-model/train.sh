#!/usr/bin/env bash
# Reproduce the embedded default model (realsr_cli/weights/bicres-x4.safetensors) on a CPU.
# Usage: bash docs/default-model/train.sh CORPUS_DIR RUN_DIR
#   CORPUS_DIR: built by `python tools/make_corpus.py CORPUS_DIR` (40 photos, 94 MP; its manifest
#   is docs/default-model/corpus-MANIFEST.json)
# One run of bicres-cpu.toml (see README.md here for wall time and the exact history). Train beside
# other work with OMP_NUM_THREADS=1 and nice; on an idle machine leave both out.
set -euo pipefail
data=$1 out=$2
mkdir -p "$out"
realsr train bicres --config bicres-cpu --data "$data" --out "$out/bicres"
realsr train export "$out/bicres" -o "$out/bicres-x4.safetensors"
# A later run continues from the shipped weights (a second ~2-hour budget):
#   realsr train bicres --config bicres-cpu --data "$data" --out "$out/bicres-2" \
#     --set inputs.init_weights=realsr_cli/weights/bicres-x4.safetensors
