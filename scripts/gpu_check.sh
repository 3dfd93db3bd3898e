#!/usr/bin/env bash
# One short run of every GPU path this machine can run, for a session with a GPU machine.
# Usage (repository root, on the GPU machine): bash scripts/gpu_check.sh
#
# - Online machine: installs the runtime with the GPU extras into .venv-gpu.
# - Offline machine (the lent device): wheels carried in .whl/ (ort.part.* = the pieces of
#   an onnxruntime-gpu wheel, small/*.whl = pyzmq, segmentation-models-pytorch) are
#   installed beside the machine's own torch; see docs/performance.md.
# Most informative first, one call of at most 500 s: edge-doctor (what runs here, and why
# not), CUDA training (AMP + channels_last) of a UNet-ResNet18 on generated strips, export
# with FP16 and both INT8 graphs, scripts/gpu_probe.py (ORT CUDA fp32/fp16 and int8 refused,
# the TensorRT EP on the QDQ graph, a second thread, GPU memory across 20 swaps, provider
# placement per node), the GPU-marked tests (native TensorRT where it is installed), a
# native engine build checked against its graph, and the daemon at saturation (edge-bench
# on ort-cuda beside a torch-eager CUDA baseline), screening classifier last.
# What it saw lands in ${OUT:-gpu-check}/: steps.txt (the summary), log.txt, bench/.
set -uo pipefail
out=${OUT:-gpu-check}
work=${WORK:-/tmp/lineside-gpu}
mkdir -p "$out" "$work"
export PYTHONUNBUFFERED=1
log="$out/log.txt"
step() { echo "== $(date +%T) $*" | tee -a "$out/steps.txt" >> "$log"; }
# One call of at most 500 s: every step gets at most its own limit and never more than
# what is left of the budget, so the last (least informative) steps are the ones cut.
end=$(( $(date +%s) + ${BUDGET_S:-480} ))
limit() { local left=$(( end - $(date +%s) )); [ "$left" -lt "$1" ] && echo $(( left > 5 ? left : 5 )) || echo "$1"; }
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

step "edge-doctor"
python3 -m lineside.edge.cli.doctor --json > "$out/doctor.json" 2>> "$log"
python3 -m lineside.edge.cli.doctor 2>> "$log" | tee -a "$out/steps.txt"

step "data"
python3 -m lineside.train.data.synth -o "$work/data" --count 240 --seed 7 > /dev/null 2>&1
python3 -m lineside.train.data.synth -o "$work/heldout" --count 40 --seed 7 --start 100000 \
    > /dev/null 2>&1
result $?

step "train UNet-ResNet18 on CUDA (AMP, channels_last)"
timeout "$(limit 100)" python3 -m lineside.train.cli --config configs/unet_r18.yaml data="$work/data" \
    out="$work/unet_r18.pt" max_minutes=0.75 epochs=100 early_stopping=0 \
    >> "$log" 2>&1
result $?
grep -E "on cuda|best|epoch [0-9]+ loss" "$log" | tail -3 | tee -a "$out/steps.txt"

step "export FP32 + FP16 + INT8 (both graphs)"
python3 -m lineside.calibration.cli "$work/data" -o "$work/cal" --n 128 >> "$log" 2>&1
timeout "$(limit 180)" python3 -m lineside.export.cli "$work/unet_r18.pt" -o "$work/bundle" --fp16 \
    --int8 --calib "$work/cal" --eval "$work/heldout" --eval-limit 12 >> "$log" 2>&1
result $?

step "gpu_probe: ORT CUDA fp32/fp16/int8, TensorRT EP int8, second thread, 20 swaps, placement"
timeout "$(limit 150)" python3 scripts/gpu_probe.py "$work/bundle" "$out/probe.json" >> "$log" 2>&1
result $?
grep -E "^(ort-|second|swaps|placement)" "$log" | tail -12 | tee -a "$out/steps.txt"

step "native TensorRT engine, checked against its graph"
timeout "$(limit 150)" python3 -m lineside.edge.cli.build_engine "$work/bundle" --precision fp16 \
    --eval "$work/heldout" --eval-limit 8 >> "$log" 2>&1
result $?
grep -E "engine vs|built|cannot build" "$log" | tail -3 | tee -a "$out/steps.txt"

step "GPU-marked tests"
timeout "$(limit 90)" python3 -m pytest -q -rs -p no:cacheprovider -m gpu tests/edge/test_backends.py \
    >> "$log" 2>&1
result $?
grep -E "passed|failed|SKIPPED|Error" "$log" | tail -8 | tee -a "$out/steps.txt"

# The daemon stage with the default post-processing pool (a quarter of the cores); the
# pipeline stage (replayed outputs) with that pool and with one thread, side by side.
step "edge-bench ort-cuda fp32/fp16 (daemon at saturation) vs torch eager on CUDA, pipeline"
timeout "$(limit 200)" python3 -m lineside.tools.bench.cli "$work/bundle" --backend ort-cuda \
    --precision fp32 fp16 --images "$work/heldout" \
    --stages bare daemon baseline pipeline --baseline "$work/unet_r18.pt" \
    --baseline-device cuda --batch 14 --frames 28 --rounds 3 --daemon-frames 40 \
    --pipeline-frames 800 --decide-workers 0 1 -o "$out/bench" \
    >> "$log" 2>&1
result $?
grep -E "x$" "$log" | tail -10 | tee -a "$out/steps.txt"
step "done"
