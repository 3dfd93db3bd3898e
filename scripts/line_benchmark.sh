#!/usr/bin/env bash
# Reproduces the edge-bench report in docs/performance.md (issue: edge-bench): UNet-ResNet18
# and a ResNet-18 screening classifier trained briefly on generated strips, both exported
# with INT8 (accuracy-gated), scored on held-out strips with and without the screen, then
# benchmarked side by side: bare backend, whole daemon over ZeroMQ, torch-eager baseline.
# About 25 minutes on 2 CPU cores; keep the machine otherwise idle while it runs.
# Usage: bash scripts/line_benchmark.sh [WORKDIR]
set -euo pipefail
work=${1:-runs/line-benchmark}
bin=.venv/bin
mkdir -p "$work"
$bin/edge-synth -o "$work/data" --count 240 --seed 7
$bin/edge-synth -o "$work/heldout" --count 40 --seed 7 --start 100000
$bin/edge-train "$work/data" -o "$work/unet_r18.pt" --architecture unet --encoder resnet18 \
    --epochs 40 --max-minutes 5 --seed 3
$bin/edge-train --config configs/screen_r18.yaml data="$work/data" out="$work/screen.pt" \
    max_minutes=5 seed=3
$bin/edge-calibrate "$work/data" -o "$work/calib" --n 256
$bin/edge-export "$work/unet_r18.pt" -o "$work/bundle" --name unet-r18 --int8 \
    --calib "$work/calib" --eval "$work/heldout" --eval-limit 24
$bin/edge-export "$work/screen.pt" -o "$work/screen" --name screen-r18 --int8 \
    --calib "$work/calib" --eval "$work/heldout" --eval-limit 40
$bin/edge-eval "$work/bundle" "$work/heldout" --precision int8 -o "$work/eval-int8"
$bin/edge-eval "$work/bundle" "$work/heldout" --precision int8 --screen "$work/screen" \
    -o "$work/eval-int8-screen"
$bin/edge-bench "$work/bundle" --precision fp32 int8 --screen "$work/screen" \
    --images "$work/heldout" --stages bare daemon baseline --baseline "$work/unet_r18.pt" \
    --frames 24 --rounds 2 --daemon-frames 24 -o "$work/bench"
