"""edge-doctor: what this machine can run, and why not.

For a field engineer at a line PC or a Jetson: the GPU, driver, CUDA, cuDNN and TensorRT
it has; the ONNX Runtime providers that really start (a session is created on each, not
just listed); whether a pycuda context comes up; and, for a bundle, which backend can serve
which of its variants here and whether each TensorRT engine in it matches this GPU
(with the sidecar's reasons when not), and whether an engine build is running. Nothing is
built or changed. Exit status 0 when the bundle (or, without one, at least one backend)
can run here, 1 when not, so that scripts can ask; `--require BACKEND` asks for one.
"""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import fcntl
import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import lineside
from lineside.edge.cli.common import parser
from lineside.edge.config import BACKENDS

EXAMPLES = """\
  edge-doctor                               # this machine
  edge-doctor bundles/r18                   # and what of the bundle runs here
  edge-doctor bundles/r18 --require tensorrt --json   # for scripts: exit 1 unless it can
"""

# A one-node ONNX graph (Relu on a (1, 4) float tensor) to start a session on each provider.
PROBE_MODEL = base64.b64decode(
    "CAg6PwoMCgF4EgF5IgRSZWx1EgVwcm9iZVoTCgF4Eg4KDAgBEggKAggBCgIIBGITCgF5Eg4KDAgBEggKAggB"
    "CgIIBEIECgAQDQ==")

ORT_PROVIDERS = {"ort-cpu": "CPUExecutionProvider", "ort-cuda": "CUDAExecutionProvider",
                 "ort-trt": "TensorrtExecutionProvider"}


def _gpu() -> dict[str, Any]:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        tegra = Path("/etc/nv_tegra_release")
        if tegra.exists():  # Jetson: no nvidia-smi, the GPU is part of the SoC
            return {"ok": True, "jetson": tegra.read_text().splitlines()[0].strip()}
        return {"ok": False, "reason": "no nvidia-smi and not a Jetson: no NVIDIA GPU found"}
    try:
        out = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total,memory.free",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=20, check=True).stdout.strip().splitlines()
    except (subprocess.SubprocessError, OSError) as exc:
        return {"ok": False, "reason": f"nvidia-smi failed: {exc}"}
    gpus = [dict(zip(("name", "driver", "memory_total", "memory_free"),
                     (v.strip() for v in line.split(",")), strict=False)) for line in out]
    return {"ok": bool(gpus), "gpus": gpus}


def _cuda() -> dict[str, Any]:
    try:
        import pycuda.driver as cuda
    except ImportError:
        return {"ok": False, "reason": "pycuda is not installed (docs/jetson.md)"}
    try:
        cuda.init()
        from lineside.edge.backends.tensorrt.engine import this_machine

        device = cuda.Device(0)
        context = device.retain_primary_context()
        context.push()
        try:
            free, total = cuda.mem_get_info()
        finally:
            context.pop()
        info: dict[str, Any] = {"ok": True, "driver_version": cuda.get_driver_version(),
                                "free_memory_mb": free // (1 << 20),
                                "total_memory_mb": total // (1 << 20)}
        try:
            machine = this_machine()
            info["device"] = {"name": machine.gpu_name,
                              "compute_capability": machine.compute_capability,
                              "sm_count": machine.sm_count}
        except ImportError:  # no tensorrt: the device is still described
            info["device"] = {"name": device.name()}
        return info
    except Exception as exc:  # pycuda's own error types
        return {"ok": False, "reason": f"no CUDA context: {exc}"}


def _cudnn() -> dict[str, Any]:
    name = ctypes.util.find_library("cudnn")
    candidates = [name] if name else ["libcudnn.so.9", "libcudnn.so.8"]
    for candidate in candidates:
        try:
            library = ctypes.CDLL(candidate)
        except OSError:
            continue
        library.cudnnGetVersion.restype = ctypes.c_size_t
        return {"ok": True, "version": int(library.cudnnGetVersion()), "library": candidate}
    return {"ok": False, "reason": "libcudnn not found (ONNX Runtime's CUDA provider needs it)"}


def _tensorrt() -> dict[str, Any]:
    try:
        import tensorrt as trt
    except ImportError:
        return {"ok": False, "reason": "the tensorrt package is not installed (docs/jetson.md)"}
    flags = hasattr(trt.BuilderFlag, "FP16")
    return {"ok": True, "version": trt.__version__,
            "builder": "FP16/INT8 flags and calibrators (10.x)" if flags
            else "strongly typed only (11.x: FP16 and INT8 from the bundle's graphs)"}


def _onnxruntime() -> dict[str, Any]:
    try:
        import onnxruntime as ort
    except ImportError:
        return {"ok": False, "reason": "onnxruntime is not installed (lineside[cpu] or [gpu])"}
    listed = ort.get_available_providers()
    starts: dict[str, str] = {}
    for backend, provider in ORT_PROVIDERS.items():
        if provider not in listed:
            starts[backend] = f"not in this build ({', '.join(listed)})"
            continue
        try:
            session = ort.InferenceSession(PROBE_MODEL, providers=[provider])
            running = session.get_providers()[0]
            starts[backend] = "starts" if running == provider else \
                f"listed but fell back to {running} (its libraries did not load)"
        except Exception as exc:  # ORT raises its own error types
            starts[backend] = f"listed but failed to start: {exc}"
    return {"ok": True, "version": ort.__version__, "providers": listed, "backends": starts}


def _engine_state(bundle: Any, machine: Any) -> dict[str, Any]:
    """Each TensorRT engine of the bundle against this GPU (sidecar reasons)."""
    from lineside.edge.backends.tensorrt.engine import (
        EngineMismatch,
        EngineSidecar,
        ShapeProfile,
        engine_problems,
    )
    from lineside.edge.variants import VARIANTS

    manifest = bundle.manifest
    needed = ShapeProfile(1, 8, 16, manifest.in_channels, manifest.tile_height,
                          manifest.tile_width)
    engines = {}
    for variant in VARIANTS:
        if not variant.is_engine or variant.key not in manifest.models:
            continue
        path = bundle.root / manifest.models[variant.key].path
        try:
            problems = engine_problems(EngineSidecar.read(path), path, machine,
                                       variant.precision, needed, manifest.models)
        except EngineMismatch as exc:
            problems = [str(exc)]
        engines[variant.key] = {"matches": not problems, "problems": problems,
                                "building_now": _lock_held(Path(f"{path}.lock"))}
    return engines


def _lock_held(lock: Path) -> bool:
    """Whether another process builds this engine now (loader.building holds the lock)."""
    if not lock.exists():
        return False
    with open(lock) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def _bundle(path: str, report: dict[str, Any]) -> dict[str, Any]:
    from lineside.edge.bundle import BundleError, load_bundle
    from lineside.edge.variants import VARIANTS, VariantUnavailable, onnx_runtime_variant

    try:
        bundle = load_bundle(path)
    except BundleError as exc:
        return {"ok": False, "reason": str(exc)}
    manifest = bundle.manifest
    precisions = sorted({v.precision for v in VARIANTS if v.key in manifest.models})
    runs: dict[str, dict[str, str]] = {}
    for backend in BACKENDS:
        runs[backend] = {}
        for precision in precisions:
            if backend == "tensorrt":
                runs[backend][precision] = _tensorrt_serves(bundle, precision, report)
                continue
            starts = report["onnxruntime"].get("backends", {}).get(backend, "no onnxruntime")
            try:
                key = onnx_runtime_variant(precision, backend).key
            except VariantUnavailable as exc:
                runs[backend][precision] = f"no: {exc}"
                continue
            if key not in manifest.models:
                runs[backend][precision] = f"no: the bundle has no {key} model"
            else:
                runs[backend][precision] = "yes" if starts == "starts" else f"no: {starts}"
    info: dict[str, Any] = {"ok": any(v == "yes" or v.startswith("yes") for r in runs.values()
                                      for v in r.values()),
                            "name": manifest.name, "variants": sorted(manifest.models),
                            "runs": runs}
    if report["tensorrt"]["ok"] and report["cuda"]["ok"]:
        from lineside.edge.backends.tensorrt.engine import this_machine

        info["engines"] = _engine_state(bundle, this_machine())
    return info


def _tensorrt_serves(bundle: Any, precision: str, report: dict[str, Any]) -> str:
    if not report["tensorrt"]["ok"]:
        return f"no: {report['tensorrt']['reason']}"
    if not report["cuda"]["ok"]:
        return f"no: {report['cuda']['reason']}"
    from lineside.edge.backends.tensorrt.engine import has_builder_precision_flags
    from lineside.edge.variants import VariantUnavailable, engine_recipe

    try:
        recipe = engine_recipe(precision, set(bundle.manifest.models),
                               precision_flags=has_builder_precision_flags())
    except VariantUnavailable as exc:
        return f"no: {exc}"
    return f"yes (an engine from {recipe.source.key}, {recipe.builder_path}; built at the " \
           "first start unless the bundle ships a matching one: run edge-build-engine)"


def diagnose(bundle: str | None) -> dict[str, Any]:
    report: dict[str, Any] = {
        "lineside": lineside.__version__, "python": platform.python_version(),
        "machine": platform.machine(), "gpu": _gpu(), "cuda": _cuda(), "cudnn": _cudnn(),
        "tensorrt": _tensorrt(), "onnxruntime": _onnxruntime()}
    if bundle:
        report["bundle"] = _bundle(bundle, report)
    return report


def _backend_ok(report: dict[str, Any], backend: str) -> bool:
    if "bundle" in report:
        return any(v.startswith("yes") for v in report["bundle"]["runs"][backend].values())
    if backend == "tensorrt":
        return report["tensorrt"]["ok"] and report["cuda"]["ok"]
    return report["onnxruntime"].get("backends", {}).get(backend) == "starts"


def print_report(report: dict[str, Any]) -> None:
    def line(name: str, part: dict[str, Any], detail: str) -> None:
        mark = "ok " if part.get("ok") else "-- "
        print(f"{mark}{name:12s} {detail if part.get('ok') else part.get('reason', '')}")

    print(f"lineside {report['lineside']}, Python {report['python']}, {report['machine']}")
    gpu = report["gpu"]
    line("GPU", gpu, gpu.get("jetson") or ", ".join(
        f"{g['name']} (driver {g.get('driver')}, {g.get('memory_free')} free of "
        f"{g.get('memory_total')})" for g in gpu.get("gpus", [])))
    cuda = report["cuda"]
    line("CUDA", cuda, f"driver API {cuda.get('driver_version')}, {cuda.get('device')}, "
         f"{cuda.get('free_memory_mb')} MB free of {cuda.get('total_memory_mb')}")
    line("cuDNN", report["cudnn"], f"{report['cudnn'].get('version')}")
    trt = report["tensorrt"]
    line("TensorRT", trt, f"{trt.get('version')}: {trt.get('builder')}")
    ort = report["onnxruntime"]
    line("ONNX Runtime", ort, f"{ort.get('version')}")
    for backend, state in ort.get("backends", {}).items():
        print(f"   {backend:10s} {state}")
    if "bundle" in report:
        info = report["bundle"]
        line("bundle", info, f"{info.get('name')}: {', '.join(info.get('variants', []))}")
        for backend, precisions in info.get("runs", {}).items():
            for precision, state in precisions.items():
                print(f"   {backend:10s} {precision:5s} {state}")
        for key, state in info.get("engines", {}).items():
            verdict = "matches this GPU" if state["matches"] else \
                "does not match: " + "; ".join(state["problems"])
            building = " (a build is running now)" if state["building_now"] else ""
            print(f"   engine {key}: {verdict}{building}")


def main(argv: list[str] | None = None) -> int:
    ap = parser("edge-doctor", "What this machine can run (GPU, CUDA, cuDNN, TensorRT, ONNX "
                "Runtime providers that really start) and, for a bundle, which backend can "
                "serve which variant and whether its engines match this GPU.", EXAMPLES)
    ap.add_argument("bundle", nargs="?", help="a model bundle to check")
    ap.add_argument("--require", choices=BACKENDS, help="exit 1 unless this backend can run "
                    "(the bundle, when given)")
    ap.add_argument("--json", action="store_true", help="the report as JSON")
    args = ap.parse_args(argv)
    report = diagnose(args.bundle)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    if args.require:
        return 0 if _backend_ok(report, args.require) else 1
    if "bundle" in report:
        return 0 if report["bundle"]["ok"] else 1
    return 0 if any(_backend_ok(report, b) for b in BACKENDS) else 1


if __name__ == "__main__":
    sys.exit(main())
