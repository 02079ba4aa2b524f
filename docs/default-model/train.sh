#!/usr/bin/env bash
# Reproduce the embedded default model (realsr_cli/weights/bicres-x4.safetensors) on a CPU.
# Usage: bash docs/default-model/train.sh CORPUS_DIR RUN_DIR
#   CORPUS_DIR: built by `python tools/make_corpus.py CORPUS_DIR` (40 photos, 94 MP; its manifest
#   is docs/default-model/corpus-MANIFEST.json)
# Three runs of bicres-cpu.toml (see README.md here for wall time and the exact history). Train beside
# other work with OMP_NUM_THREADS=1 and nice; on an idle machine leave both out.
set -euo pipefail
data=$1 out=$2
mkdir -p "$out"
# run 1: 13000 steps from He initialisation on the 40 photos
realsr train bicres --config bicres-cpu --data "$data" --out "$out/bicres"
realsr train export "$out/bicres" -o "$out/bicres-1-x4.safetensors"
# run 2: 16000 more steps from run 1's weights, peak learning rate 3e-4
realsr train bicres --config bicres-cpu --data "$data" --out "$out/bicres-2" \
    --set inputs.init_weights="$out/bicres-1-x4.safetensors" --set run.max_steps=16000 --set optim.lr=0.0003
realsr train export "$out/bicres-2" -o "$out/bicres-2-x4.safetensors"
# run 3: 5000 steps from run 2's weights on the photos plus 12 rendered text-and-graphics images
python tools/make_graphics.py "$out/graphics" --count 12 --seed 0
mkdir -p "$out/corpus+graphics"
ln -sf "$(realpath "$data")"/*.png "$(realpath "$out/graphics")"/*.png "$out/corpus+graphics/"
realsr train bicres --config bicres-cpu --data "$out/corpus+graphics" --out "$out/bicres-3" \
    --set inputs.init_weights="$out/bicres-2-x4.safetensors" --set run.max_steps=5000 --set optim.lr=0.0002
realsr train export "$out/bicres-3" -o "$out/bicres-x4.safetensors"   # the shipped file
