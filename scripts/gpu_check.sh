#!/usr/bin/env bash
# One short run of every GPU path this machine can run, for a session with a GPU machine.
# Usage (repository root, on the GPU machine): bash scripts/gpu_check.sh
#
# - Online machine: installs the runtime with the GPU extras into .venv-gpu.
# - Offline machine (the lent device): wheels carried in .whl/ (ort.part.* = the pieces of
#   an onnxruntime-gpu wheel, small/*.whl = pyzmq, segmentation-models-pytorch) are
#   installed beside the machine's own torch; see docs/performance.md.
# Then: CUDA training (AMP + channels_last) of a UNet-ResNet18 and a screening classifier on
# generated strips, FP32/FP16 export, the GPU-marked tests (ONNX Runtime CUDA/TensorRT EPs,
# native TensorRT engines: each skips with its reason where its library is missing), and
# edge-bench on ort-cuda side by side with a torch-eager CUDA baseline.
# What it saw lands in ${OUT:-gpu-check}/: steps.txt (the summary), log.txt, bench/.
set -uo pipefail
out=${OUT:-gpu-check}
work=${WORK:-/tmp/lineside-gpu}
mkdir -p "$out" "$work"
export PYTHONUNBUFFERED=1
log="$out/log.txt"
step() { echo "== $(date +%T) $*" | tee -a "$out/steps.txt" >> "$log"; }
result() { echo "   -> exit $1" | tee -a "$out/steps.txt"; }

nvidia-smi >> "$log" 2>&1
step "install"
if [ -d .whl ]; then
    wheel=/tmp/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
    [ -f "$wheel" ] || cat .whl/ort.part.* > "$wheel"
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site \
        "$wheel" .whl/small/*.whl >> "$log" 2>&1
    export PYTHONPATH=/tmp/site
    python3 -m pip install -q --no-deps --no-build-isolation -e . >> "$log" 2>&1
    result $?
else
    python3 -m venv .venv-gpu && . .venv-gpu/bin/activate
    pip install -q -e '.[gpu,train,dev]' tensorrt pycuda >> "$log" 2>&1
    result $?
fi
# CUDA and cuDNN from pip's nvidia-* packages, for ONNX Runtime's CUDA provider (the
# runtime never imports torch, which would otherwise have loaded them).
nvlibs=$(python3 -c 'import glob, os, sys
print(":".join(sorted({d for p in sys.path for d in glob.glob(os.path.join(p, "nvidia", "**", "lib"), recursive=True)})))')
export LD_LIBRARY_PATH="$nvlibs:${LD_LIBRARY_PATH:-}"

step "versions"
python3 - >> "$log" 2>&1 <<'PY'
import onnxruntime as ort, torch
print("onnxruntime", ort.__version__, ort.get_available_providers())
print("torch", torch.__version__, torch.cuda.get_device_name(0))
try:
    import tensorrt
    print("tensorrt", tensorrt.__version__)
except ImportError as exc:
    print("tensorrt: not installed:", exc)
PY
result $?
grep -E "^(onnxruntime|torch|tensorrt)" "$log" | tee -a "$out/steps.txt"

step "data"
python3 -m lineside.train.data.synth -o "$work/data" --count 240 --seed 7 > /dev/null 2>&1
python3 -m lineside.train.data.synth -o "$work/heldout" --count 40 --seed 7 --start 100000 \
    > /dev/null 2>&1
result $?

step "train UNet-ResNet18 on CUDA (AMP, channels_last)"
timeout 150 python3 -m lineside.train.cli --config configs/unet_r18.yaml data="$work/data" \
    out="$work/unet_r18.pt" max_minutes=0.75 epochs=100 early_stopping=0 \
    >> "$log" 2>&1
result $?
grep -E "on cuda|best|epoch [0-9]+ loss" "$log" | tail -3 | tee -a "$out/steps.txt"

step "train screening classifier on CUDA"
timeout 120 python3 -m lineside.train.cli --config configs/screen_r18.yaml data="$work/data" \
    out="$work/screen.pt" max_minutes=0.5 epochs=100 early_stopping=0 \
    >> "$log" 2>&1
result $?

step "export FP32 + FP16"
timeout 180 python3 -m lineside.export.cli "$work/unet_r18.pt" -o "$work/bundle" --fp16 \
    >> "$log" 2>&1
result $?
timeout 120 python3 -m lineside.export.cli "$work/screen.pt" -o "$work/screen" --fp16 \
    >> "$log" 2>&1
result $?

step "GPU-marked tests"
timeout 240 python3 -m pytest -q -rs -p no:cacheprovider -m gpu tests/edge/test_backends.py \
    >> "$log" 2>&1
result $?
grep -E "passed|failed|SKIPPED|Error" "$log" | tail -8 | tee -a "$out/steps.txt"

step "edge-bench ort-cuda fp32/fp16, with and without the screen, vs torch eager on CUDA"
timeout 300 python3 -m lineside.tools.bench.cli "$work/bundle" --backend ort-cuda \
    --precision fp32 fp16 --screen "$work/screen" --images "$work/heldout" \
    --stages bare daemon baseline --baseline "$work/unet_r18.pt" --baseline-device cuda \
    --batch 14 --frames 28 --rounds 5 --daemon-frames 40 -o "$out/bench" \
    >> "$log" 2>&1
result $?
grep -E "x$" "$log" | tail -16 | tee -a "$out/steps.txt"
step "done"
