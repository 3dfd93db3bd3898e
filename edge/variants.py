"""The one table of model variants a bundle can hold, and the rules that pick one.

Every question "which file does this precision use here?" is answered from `VARIANTS`:
export names the files it writes from it, the ONNX Runtime backends pick the file they
load from it, the TensorRT loader and `edge-build-engine` pick the ONNX an engine is built
from (and with which builder path) from it, and edge-bench labels its rows by it.
Like Ultralytics' `export_formats()`, but only the table: the code that acts on a variant
lives with the tool that acts.

| key | precision | file | runs on | what it is |
|---|---|---|---|---|
| fp32 | fp32 | model_fp32.onnx | any | the exported graph |
| fp16 | fp16 | model_fp16.onnx | gpu | FP16 graph (ORT CUDA, TensorRT strongly typed) |
| int8 | int8 | model_int8.onnx | cpu | QDQ U8S8 (ONNX Runtime's fast CPU path) |
| int8-trt | int8 | model_int8_trt.onnx | gpu | QDQ S8S8 symmetric (the form TensorRT accepts) |
| trt-fp32/fp16/int8 | | model_<precision>.engine | tensorrt | engines built on the device |

To add a variant: add its row here, make export write it (export/bundle_writer.py), and
teach the backend that runs it to ask `onnx_runtime_variant` / `engine_recipe` for it.
"""

from __future__ import annotations

from dataclasses import dataclass

PRECISIONS = ("fp32", "fp16", "int8")

# Where a variant runs: `any` device, ONNX Runtime on the `cpu`, a `gpu` (ONNX Runtime's
# CUDA/TensorRT providers or native TensorRT), or only native `tensorrt` (an engine).
TARGETS = ("any", "cpu", "gpu", "tensorrt")

# How an engine is built (TensorRT 10 has all three; TensorRT 11 only strongly typed).
STRONGLY_TYPED = "strongly-typed"  # precision read from the graph (FP16 or QDQ ONNX)
BUILDER_FLAGS = "builder-flags"  # FP32 ONNX + BuilderFlag.FP16 (TensorRT 10)
CALIBRATOR = "calibrator"  # FP32 ONNX + BuilderFlag.INT8 + entropy calibrator (TensorRT 10)
BUILDER_PATHS = (STRONGLY_TYPED, BUILDER_FLAGS, CALIBRATOR)


class VariantUnavailable(LookupError):
    """The bundle (or this TensorRT) cannot provide the variant asked for; says why."""


@dataclass(frozen=True)
class ModelVariant:
    key: str  # the key in manifest.models
    precision: str
    file_name: str
    target: str
    description: str

    @property
    def is_engine(self) -> bool:
        return self.target == "tensorrt"


VARIANTS: tuple[ModelVariant, ...] = (
    ModelVariant("fp32", "fp32", "model_fp32.onnx", "any", "exported FP32 graph"),
    ModelVariant("fp16", "fp16", "model_fp16.onnx", "gpu", "FP16 graph, float32 output"),
    ModelVariant("int8", "int8", "model_int8.onnx", "cpu",
                 "QDQ U8S8, per-channel weights (ONNX Runtime CPU)"),
    ModelVariant("int8-trt", "int8", "model_int8_trt.onnx", "gpu",
                 "QDQ S8S8 symmetric, float biases (TensorRT)"),
    *(ModelVariant(f"trt-{p}", p, f"model_{p}.engine", "tensorrt", f"TensorRT {p} engine")
      for p in PRECISIONS),
)
BY_KEY = {v.key: v for v in VARIANTS}

# INT8 graphs export writes, by key: the quantisation flavour of each (export/int8.py).
INT8_FLAVOURS = {"int8": "cpu", "int8-trt": "tensorrt"}


def variant(key: str) -> ModelVariant:
    try:
        return BY_KEY[key]
    except KeyError:
        raise VariantUnavailable(f"unknown model variant {key!r}; known: "
                                 f"{', '.join(BY_KEY)}") from None


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise VariantUnavailable(f"precision {precision!r} is not one of {PRECISIONS}")


def onnx_variant(precision: str, device: str) -> ModelVariant:
    """The ONNX graph that runs `precision` on `device` (`cpu` or `gpu`)."""
    _check_precision(precision)
    if precision == "int8":  # one INT8 file cannot serve both (DOMAIN.md)
        return BY_KEY["int8" if device == "cpu" else "int8-trt"]
    return BY_KEY[precision]


# ONNX Runtime's providers that have INT8 kernels for the QDQ graphs (the CUDA provider has
# no INT8 convolutions: it would dequantise everything, slower than FP16 and lossier).
INT8_PROVIDERS = ("ort-cpu", "ort-trt")


def onnx_runtime_variant(choice: str, backend: str) -> ModelVariant:
    """The ONNX file ONNX Runtime backend `backend` (ort-cpu, ort-cuda, ort-trt) loads for a
    precision, or the named variant for an ONNX variant key (edge-bench)."""
    if choice in PRECISIONS:
        if choice == "int8" and backend not in INT8_PROVIDERS:
            raise VariantUnavailable(
                f"{backend} has no INT8 convolution kernels (the QDQ model would run "
                "dequantised, slower than fp16): use --backend ort-trt or tensorrt for int8, "
                "or --precision fp16")
        return onnx_variant(choice, "cpu" if backend == "ort-cpu" else "gpu")
    return onnx_for(choice, "cpu" if backend == "ort-cpu" else "gpu")


# What a benchmark may name instead of a precision: an ONNX variant run as it is on any
# device (edge-bench compares `int8` with `int8-trt` on one CPU).
ONNX_KEYS = tuple(v.key for v in VARIANTS if not v.is_engine)


def onnx_for(choice: str, device: str) -> ModelVariant:
    """`onnx_variant(choice, device)` for a precision; the named variant for an ONNX
    variant key."""
    if choice in PRECISIONS:
        return onnx_variant(choice, device)
    if choice in ONNX_KEYS:
        return BY_KEY[choice]
    raise VariantUnavailable(f"{choice!r} is neither a precision {PRECISIONS} nor an ONNX "
                             f"variant {ONNX_KEYS}")


def engine_variant(precision: str) -> ModelVariant:
    _check_precision(precision)
    return BY_KEY[f"trt-{precision}"]


@dataclass(frozen=True)
class EngineRecipe:
    """What a TensorRT engine of one precision is built from, and how."""

    precision: str
    source: ModelVariant  # the ONNX graph the engine is built from
    builder_path: str  # STRONGLY_TYPED | BUILDER_FLAGS | CALIBRATOR

    @property
    def strongly_typed(self) -> bool:
        return self.builder_path == STRONGLY_TYPED


def engine_recipe(precision: str, available: set[str] | frozenset[str] | list[str], *,
                  precision_flags: bool, calibration: bool = False,
                  mode: str = "auto") -> EngineRecipe:
    """How to build a `precision` engine from a bundle holding the variant keys `available`.

    `precision_flags`: this TensorRT still has BuilderFlag.FP16/INT8 (10.x, not 11.x).
    `calibration`: a calibration set is at hand for the legacy INT8 calibrator path (the
    runtime never has one; `edge-build-engine --calib` does).
    `mode`: `auto` (strongly typed from the precision's own ONNX when the bundle has it and
    no calibration set was given), `strongly-typed`, or `flags`.

    Raises VariantUnavailable with the reason and the fix when no recipe exists; in
    particular an INT8 engine is never built from the FP32 graph without a calibrator
    (TensorRT 10 would silently fall back to FP32 and the engine would be labelled int8).
    """
    if mode not in ("auto", STRONGLY_TYPED, "flags"):
        raise VariantUnavailable(f"engine build mode {mode!r} is not auto, "
                                 f"{STRONGLY_TYPED} or flags")
    typed = onnx_variant(precision, "gpu")
    fp32 = BY_KEY["fp32"]
    if typed is fp32:  # an FP32 engine is always built from the FP32 graph as it is
        return EngineRecipe(precision, fp32, STRONGLY_TYPED if mode != "flags"
                            else BUILDER_FLAGS)
    wants_typed = mode == STRONGLY_TYPED or (mode == "auto" and not calibration)
    if wants_typed and typed.key in available:
        return EngineRecipe(precision, typed, STRONGLY_TYPED)
    if mode == STRONGLY_TYPED:
        raise VariantUnavailable(f"the bundle has no {typed.key} ONNX to build a strongly "
                                 f"typed {precision} engine from: re-export with --{precision}")
    if not precision_flags:
        raise VariantUnavailable(
            f"this TensorRT (11+) has no FP16/INT8 builder flags or implicit calibrators and "
            f"the bundle has no {typed.key} ONNX: re-export with --{precision} and build "
            "strongly typed")
    if precision == "int8":
        if not calibration:
            raise VariantUnavailable(
                f"an INT8 engine needs the bundle's {typed.key} (QDQ) ONNX or, on TensorRT "
                "10, a calibration set (edge-build-engine --precision int8 --mode flags "
                "--calib SET); building it from the FP32 graph without calibration would "
                "give an FP32 engine labelled int8")
        return EngineRecipe(precision, fp32, CALIBRATOR)
    return EngineRecipe(precision, fp32, BUILDER_FLAGS)
