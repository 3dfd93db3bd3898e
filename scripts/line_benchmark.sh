#!/usr/bin/env bash
# Reproduces the edge-bench report in docs/performance.md (issues: edge-bench, line rate):
# first scripts/int8_benchmark.sh (data, UNet-ResNet18, calibration set, FP16/INT8 bundle,
# whole-strip inference), then the same checkpoint exported for tiles (a screen picks
# tiles), a half-resolution ResNet-18 screening classifier trained and INT8-exported on the
# same data, both scored on the held-out strips, and the whole line benchmarked: bare
# backend, daemon over ZeroMQ, torch-eager baseline, once for the whole-strip bundle and
# once for the tiled bundle behind the screen (each run with its own baseline, so each
# run's ratios are side by side).
# About 40 minutes on 2 CPU cores; keep the machine otherwise idle while it runs.
# Usage: bash scripts/line_benchmark.sh [WORKDIR]
set -euo pipefail
work=${1:-runs/line-benchmark}
bin=.venv/bin
bash scripts/int8_benchmark.sh "$work"
$bin/edge-export "$work/unet_r18.pt" -o "$work/bundle-tiles" --name unet-r18-tiles --int8 \
    --inference tiles --calib "$work/calib" --eval "$work/heldout" --eval-limit 24
$bin/edge-train --config configs/screen_r18.yaml data="$work/data" out="$work/screen.pt" \
    max_minutes=5 seed=3
$bin/edge-export "$work/screen.pt" -o "$work/screen" --name screen-r18 --int8 \
    --calib "$work/calib" --eval "$work/heldout" --eval-limit 40
$bin/edge-eval "$work/bundle" "$work/heldout" --precision int8 -o "$work/eval-int8"
$bin/edge-eval "$work/bundle-tiles" "$work/heldout" --precision int8 --screen "$work/screen" \
    -o "$work/eval-int8-screen"
$bin/edge-bench "$work/bundle" --precision fp32 int8 --images "$work/heldout" \
    --stages bare daemon baseline --baseline "$work/unet_r18.pt" --batch 2 \
    --frames 24 --rounds 3 --daemon-frames 24 --ort-profile -o "$work/bench-strip"
$bin/edge-bench "$work/bundle-tiles" --precision int8 --screen "$work/screen" \
    --images "$work/heldout" --stages bare daemon baseline --baseline "$work/unet_r18.pt" \
    --frames 24 --rounds 3 --daemon-frames 24 -o "$work/bench-screen"
