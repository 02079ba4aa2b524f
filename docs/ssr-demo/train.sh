#!/usr/bin/env bash
# Reproduce SSR's CPU demo weights (realsr_cli/weights/ssr-x4-cpu.safetensors) on a CPU.
# Usage: bash docs/ssr-demo/train.sh CORPUS_DIR RUN_DIR
#   CORPUS_DIR: built by `python tools/make_corpus.py CORPUS_DIR` (40 photos, 94 MP)
# The three stages share one [model] section (ssr-kernel-cpu, ssr-nbsr-cpu, ssr-cpu); each export
# is a complete ssr file and the next stage takes its trained parts (docs/training.md).
set -euo pipefail
data=$1 out=$2
mkdir -p "$out"
realsr train ssr-kernel --config ssr-kernel-cpu --data "$data" --out "$out/kernel"
realsr train export "$out/kernel" -o "$out/kernel.safetensors"
realsr train ssr-nbsr --config ssr-nbsr-cpu --data "$data" --out "$out/nbsr" \
  --set inputs.kernel_weights="$out/kernel.safetensors"
realsr train export "$out/nbsr" -o "$out/nbsr.safetensors"
realsr train ssr --config ssr-cpu --data "$data" --out "$out/ssr" \
  --set inputs.nbsr_weights="$out/nbsr.safetensors"
realsr train export "$out/ssr" -o "$out/ssr-x4-cpu.safetensors"
