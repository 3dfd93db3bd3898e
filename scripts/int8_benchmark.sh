#!/usr/bin/env bash
# Reproduces the INT8 figures in docs/performance.md: a UNet-ResNet18 trained briefly on
# generated strips, exported with FP16 and both INT8 flavours (accuracy-gated on held-out
# strips), then benchmarked side by side. About 10 minutes on 2 CPU cores.
# Usage: bash scripts/int8_benchmark.sh [WORKDIR]
set -euo pipefail
work=${1:-runs/int8-benchmark}
bin=.venv/bin
mkdir -p "$work"
$bin/edge-synth -o "$work/data" --count 240 --seed 7
$bin/edge-synth -o "$work/heldout" --count 40 --seed 7 --start 100000
$bin/edge-train "$work/data" -o "$work/unet_r18.pt" --architecture unet --encoder resnet18 \
    --epochs 40 --max-minutes 5 --seed 3
$bin/edge-calibrate "$work/data" -o "$work/calib" --n 256
$bin/edge-export "$work/unet_r18.pt" -o "$work/bundle" --name unet-r18 --fp16 --int8 \
    --calib "$work/calib" --eval "$work/heldout" --eval-limit 24
$bin/edge-bench "$work/bundle" --precision fp32 int8 int8-trt --batch 7 --frames 4 \
    --rounds 5 -o "$work/bench"
