#!/usr/bin/env bash
# One short run of every GPU path, for a session that has the device machine.
# Usage (from the repository root, on the GPU machine): bash scripts/gpu_check.sh
# It installs the runtime with the GPU extras into .venv-gpu, runs the GPU-marked tests
# (ONNX Runtime CUDA/TensorRT EPs, native TensorRT engines and their sidecars), and saves
# what it saw under ${OUT:-gpu-check}/.
set -uo pipefail
out=${OUT:-gpu-check}
mkdir -p "$out"
nvidia-smi | tee "$out/nvidia-smi.txt"
python3 -m venv .venv-gpu
. .venv-gpu/bin/activate
pip install --quiet -e '.[gpu,train,dev]' tensorrt pycuda 2>&1 | tail -3
python - <<'PY' | tee "$out/versions.txt"
import onnxruntime, tensorrt
print("onnxruntime", onnxruntime.__version__, onnxruntime.get_available_providers())
print("tensorrt", tensorrt.__version__)
PY
pytest -q -rs -m "gpu or not slow" tests/test_backends.py 2>&1 | tee "$out/pytest-gpu.txt"
