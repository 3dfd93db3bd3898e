"""GPU probe for scripts/gpu_check.sh: the questions only a GPU machine can answer, one
JSON report. Usage: python scripts/gpu_probe.py BUNDLE OUT.json

1. ONNX Runtime CUDA on fp32 / fp16 / int8 (int8 must be refused on ort-cuda, with the
   reason) and the TensorRT EP on int8 (the QDQ graph), each against the CPU's fp32;
2. inference from a second thread (the daemon creates a backend on one thread and runs
   it on another);
3. GPU memory across 20 hot swaps (load, run, close: memory must not climb);
4. which provider ran each node (ONNX Runtime's profile): nothing silently on the CPU.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import numpy as np


def gpu_memory_mb() -> float | None:
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,"
                              "nounits"], capture_output=True, text=True, timeout=20, check=True)
        return float(out.stdout.split()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def main(bundle_path: str, out_path: str) -> int:
    from lineside.edge.backends import BackendUnavailable, create_backend
    from lineside.edge.bundle import load_bundle
    from lineside.edge.config import ModelSettings
    from lineside.edge.pipeline.model import load_model

    bundle = load_bundle(bundle_path)
    manifest = bundle.manifest
    tiles = np.random.default_rng(0).integers(0, 256, (8, manifest.in_channels,
                                                       manifest.tile_height,
                                                       manifest.tile_width), np.uint8)
    reference = create_backend("ort-cpu", bundle, "fp32").infer(tiles)["probabilities"]
    report: dict = {"variants": {}}
    for backend, precision in (("ort-cuda", "fp32"), ("ort-cuda", "fp16"), ("ort-cuda", "int8"),
                               ("ort-trt", "fp32"), ("ort-trt", "fp16"), ("ort-trt", "int8")):
        label = f"{backend} {precision}"
        began = time.perf_counter()
        try:
            runner = create_backend(backend, bundle, precision)
            out = runner.infer(tiles)["probabilities"]
            report["variants"][label] = {
                "max_abs_diff_vs_cpu_fp32": float(np.abs(out - reference).max()),
                "providers": runner.describe().get("providers"),
                "first_call_s": round(time.perf_counter() - began, 2)}
        except (BackendUnavailable, Exception) as exc:  # the reason is the finding
            report["variants"][label] = {"refused": f"{type(exc).__name__}: {exc}"}
        print(label, report["variants"][label], flush=True)

    # 2. created on this thread, run on another (as the daemon does)
    try:
        runner = create_backend("ort-cuda", bundle, "fp32")
        result: dict = {}
        worker = threading.Thread(target=lambda: result.update(out=runner.infer(tiles)))
        worker.start()
        worker.join(120)
        report["second_thread"] = {"ok": "out" in result, "max_abs_diff_vs_cpu_fp32":
                                   float(np.abs(result["out"]["probabilities"] - reference)
                                         .max()) if "out" in result else None}
    except Exception as exc:
        report["second_thread"] = {"ok": False, "error": str(exc)}
    print("second thread", report["second_thread"], flush=True)

    # 3. memory across 20 swaps
    settings = ModelSettings(backend="auto", precision="fp16" if "fp16" in manifest.models
                             else "fp32", max_batch=8)
    memory = []
    for _ in range(20):
        model = load_model(bundle_path, settings)
        model.backend.infer(tiles)
        model.close()
        memory.append(gpu_memory_mb())
    report["swaps"] = {"backend": settings.backend, "memory_used_mb": memory}
    print("swaps", memory, flush=True)

    # 4. provider placement per node
    try:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.enable_profiling = True
        # the profile goes beside the report, not into the working tree
        options.profile_file_prefix = str(Path(sys.argv[2]).with_suffix("")) + "-ort-profile"
        session = ort.InferenceSession(str(bundle.model_path("fp16" if "fp16" in manifest.models
                                                             else "fp32")), options,
                                       providers=["CUDAExecutionProvider",
                                                  "CPUExecutionProvider"])
        for _ in range(3):
            session.run(None, {manifest.input_name: tiles})
        events = json.loads(Path(session.end_profiling()).read_text())
        placement: dict[str, int] = {}
        cpu_ops: set[str] = set()
        for event in events:
            provider = event.get("args", {}).get("provider")
            if event.get("cat") == "Node" and provider:
                placement[provider] = placement.get(provider, 0) + 1
                if provider == "CPUExecutionProvider":
                    cpu_ops.add(event["args"].get("op_name", "?"))
        report["placement"] = {"kernel_runs_per_provider": placement,
                               "ops_on_cpu": sorted(cpu_ops)}
    except Exception as exc:
        report["placement"] = {"error": str(exc)}
    print("placement", report["placement"], flush=True)
    Path(out_path).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
