"""The TensorRT path without TensorRT: our decisions (which engine to trust, when to
build, from what) with our own builder injected, and our call sequences (calibrator,
buffers, contexts, timing cache) against the contract fake in tests/fakes/trt_contract.py,
whose API surface comes from TensorRT's binding sources. Nothing here claims numerics."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from lineside.edge.backends.tensorrt.engine import (
    EngineSidecar,
    Machine,
    ShapeProfile,
    engine_problems,
    sidecar_path,
    write_engine_files,
)
from lineside.edge.backends.tensorrt.loader import build_bundle_engine, resolve_engine
from lineside.edge.bundle import Bundle, ModelFile, load_bundle, sha256_file, write_manifest
from lineside.edge.config import ConfigError
from lineside.edge.variants import STRONGLY_TYPED, VariantUnavailable
from tests.fakes import trt_contract
from tests.toy_bundle import write_toy_bundle

AGX = Machine("10.3.0", "Orin", "8.7", 16, 61_440)
NX = Machine("10.3.0", "Orin", "8.7", 8, 15_360)  # same name and capability as the AGX


def bundle_with(tmp_path: Path, keys=("fp16", "int8-trt"), scored: bool = False) -> Bundle:
    """The toy bundle with copies of its graph standing in for the other ONNX variants
    (each with its own doc string, so its own sha256; TensorRT never runs them here);
    `scored`: every graph with the scoring tail, as edge-export writes them."""
    import onnx

    from lineside.export.score_tail import add_score_tail

    root = write_toy_bundle(tmp_path / "bundle")
    bundle = load_bundle(root)
    if scored:
        add_score_tail(root / "model_fp32.onnx")
        bundle.manifest.output_form = "scores"
        bundle.manifest.models["fp32"] = ModelFile(
            "model_fp32.onnx", sha256_file(root / "model_fp32.onnx"), "fp32")
    for key in keys:
        name = f"model_{key.replace('-', '_')}.onnx"
        graph = onnx.load(str(root / "model_fp32.onnx"))
        graph.doc_string = f"stands in for the {key} variant"
        onnx.save(graph, str(root / name))
        precision = "int8" if key.startswith("int8") else key
        bundle.manifest.models[key] = ModelFile(name, sha256_file(root / name), precision,
                                                calibration_sha256="c" * 64
                                                if precision == "int8" else "")
    write_manifest(root, bundle.manifest)
    return load_bundle(root)


class Builder:
    """Our stand-in for TensorRT's builder: writes an engine and its sidecar the way
    build_engine does, and records every call (what the loader decided to build)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, onnx_path, engine_path, recipe, profile, source, machine, *args,
                 calibration_sha256="", **kwargs) -> EngineSidecar:
        self.calls.append((Path(onnx_path).name, recipe.builder_path))
        sidecar = EngineSidecar.for_machine(
            machine, precision=recipe.precision, onnx_sha256=source.sha256,
            source_key=recipe.source.key,
            calibration_sha256=calibration_sha256 or source.calibration_sha256,
            profile=profile, builder_path=recipe.builder_path)
        write_engine_files(engine_path, b"engine from " + Path(onnx_path).name.encode(),
                           sidecar)
        return sidecar


def resolve(bundle, tmp_path, builder, machine=AGX, precision="fp16", flags=True):
    return resolve_engine(bundle, precision, tmp_path / "cache", machine=machine,
                          build=builder, precision_flags=flags)


def test_an_engine_is_built_once_into_the_cache_and_then_reused(tmp_path):
    bundle, builder = bundle_with(tmp_path), Builder()
    first = resolve(bundle, tmp_path, builder)
    assert builder.calls == [("model_fp16.onnx", STRONGLY_TYPED)]
    again = resolve(bundle, tmp_path, builder)
    assert again == first and len(builder.calls) == 1  # found, not rebuilt
    assert "sm8.7x16-trt10.3.0" in first.name


def test_an_engine_from_another_orin_module_is_not_trusted(tmp_path, caplog):
    bundle, builder = bundle_with(tmp_path), Builder()
    agx_engine = resolve(bundle, tmp_path, builder, machine=AGX)
    nx_engine = resolve(bundle, tmp_path, builder, machine=NX)
    assert nx_engine != agx_engine and len(builder.calls) == 2
    problems = engine_problems(EngineSidecar.read(agx_engine), agx_engine, NX, "fp16",
                               ShapeProfile(1, 8, 16, 1, 64, 64), bundle.manifest.models)
    assert any("sm_count is 16, this machine has 8" in p for p in problems)


def test_the_bundle_s_own_engine_is_used_whatever_it_was_built_from(tmp_path):
    """An engine edge-build-engine made with --mode flags (from the FP32 graph) serves:
    the sidecar names its source model, and that model's hash is checked."""
    bundle, builder = bundle_with(tmp_path), Builder()
    engine = build_bundle_engine(bundle.root, bundle.manifest, "fp16",
                                 ShapeProfile(1, 8, 16, 1, 64, 64), mode="flags",
                                 machine=AGX, build=builder, precision_flags=True)
    write_manifest(bundle.root, bundle.manifest)
    assert builder.calls == [("model_fp32.onnx", "builder-flags")]
    assert EngineSidecar.read(engine).source_key == "fp32"
    assert resolve(load_bundle(bundle.root), tmp_path, builder) == engine
    assert len(builder.calls) == 1  # not rebuilt at start


def test_engines_whose_profile_or_file_does_not_fit_are_rebuilt(tmp_path, caplog):
    bundle, builder = bundle_with(tmp_path), Builder()
    narrow = ShapeProfile(4, 8, 16, 1, 64, 64)  # batches of 1-3 tiles would fail
    engine = build_bundle_engine(bundle.root, bundle.manifest, "fp16", narrow, machine=AGX,
                                 build=builder, precision_flags=True)
    write_manifest(bundle.root, bundle.manifest)
    with caplog.at_level(logging.WARNING):
        rebuilt = resolve(load_bundle(bundle.root), tmp_path, builder)
    assert rebuilt != engine and "does not cover" in caplog.text
    rebuilt.write_bytes(b"a different engine under the same name")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        resolve(load_bundle(bundle.root), tmp_path, builder)
    assert "not the one its sidecar describes" in caplog.text and len(builder.calls) == 3


def test_int8_without_a_qdq_graph_is_refused_not_built_from_fp32(tmp_path):
    bundle, builder = bundle_with(tmp_path, keys=()), Builder()
    with pytest.raises(VariantUnavailable, match="FP32 engine labelled int8"):
        resolve(bundle, tmp_path, builder, precision="int8")
    with pytest.raises(VariantUnavailable, match="TensorRT"):
        resolve(bundle, tmp_path, builder, precision="fp16", flags=False)  # TensorRT 11
    assert builder.calls == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere: no unwritable dir")
def test_an_unwritable_engine_cache_is_an_error_at_start(tmp_path):
    locked = tmp_path / "cache"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match="not writable"):
            resolve_engine(bundle_with(tmp_path), "fp16", locked, machine=AGX,
                           build=Builder(), precision_flags=True)
    finally:
        locked.chmod(0o700)


def test_an_unwritable_engine_cache_is_an_error_at_start_even_for_root(tmp_path):
    blocked = tmp_path / "cache"
    blocked.write_text("a file where the cache directory should be")
    with pytest.raises(ConfigError, match="not writable"):
        resolve_engine(bundle_with(tmp_path), "fp16", blocked, machine=AGX,
                       build=Builder(), precision_flags=True)


def test_engine_and_sidecar_land_together_or_not_at_all(tmp_path, monkeypatch):
    engine = tmp_path / "m.engine"
    sidecar = EngineSidecar.for_machine(AGX, precision="fp16", onnx_sha256="a" * 64)
    write_engine_files(engine, b"one", sidecar)
    assert json.loads(sidecar_path(engine).read_text())["engine_sha256"] == sidecar.engine_sha256
    real = os.fdopen
    calls = []

    def failing_second_write(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(os, "fdopen", failing_second_write)
    with pytest.raises(OSError, match="disk full"):
        write_engine_files(engine, b"two", EngineSidecar.for_machine(
            AGX, precision="fp16", onnx_sha256="a" * 64))
    assert engine.read_bytes() == b"one"  # the old pair stays whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.engine", "m.engine.json"]


# -- the call sequences, against the contract fake ------------------------------------
def calibration_set(tmp_path: Path):
    from lineside.calibration.calibration_set import write_set

    rng = np.random.default_rng(0)
    frames = [(f"f{i}", [], rng.integers(0, 256, (64, 256), dtype=np.uint8)) for i in range(8)]
    write_set(tmp_path / "cal", frames, 32, (64, 64), 1, "random", 0, "generated")
    return tmp_path / "cal"


@pytest.mark.parametrize("scored", [False, True])
def test_legacy_int8_calibration_feeds_uint8_batches_at_the_opt_shape(tmp_path, monkeypatch,
                                                                      scored):
    _, builds = trt_contract.install(monkeypatch, "10.3.0")
    bundle = bundle_with(tmp_path, scored=scored)
    profile = ShapeProfile(1, 4, 16, 1, 64, 64)
    engine = build_bundle_engine(bundle.root, bundle.manifest, "int8", profile, mode="flags",
                                 calibration_dir=str(calibration_set(tmp_path)))
    (record,) = builds
    assert {"INT8", "FP16"} <= record.flags and record.network_flags == 0
    opt = record.calibration_profile.shapes["frames"][1]
    assert opt == (4, 1, 64, 64)  # the calibration profile is the optimisation profile
    if scored:  # the thresholds have their own shapes in the profile, batch for batch
        assert record.calibration_profile.shapes["thresholds"] == ((1, 4), (4, 4), (16, 4))
    assert record.calibrator_batches == [(4 * 64 * 64, "UINT8")] * 8  # 32 tiles, OPT 4
    sidecar = EngineSidecar.read(engine)
    assert (sidecar.builder_path, sidecar.source_key) == ("calibrator", "fp32")
    assert sidecar.calibration_sha256 == bundle.manifest.models["trt-int8"].calibration_sha256
    assert (bundle.root / f"calibration-{sidecar.calibration_sha256[:12]}.cache").exists()
    assert not trt_contract._stack()  # every pushed context was popped


def test_tensorrt_11_builds_strongly_typed_and_has_no_calibrator(tmp_path, monkeypatch):
    _, builds = trt_contract.install(monkeypatch, "11.0.0")
    bundle = bundle_with(tmp_path)
    profile = ShapeProfile(1, 8, 16, 1, 64, 64)
    with pytest.raises(VariantUnavailable, match="11"):
        build_bundle_engine(bundle.root, bundle.manifest, "int8", profile, mode="flags",
                            calibration_dir=str(calibration_set(tmp_path)))
    build_bundle_engine(bundle.root, bundle.manifest, "int8", profile)
    (record,) = builds
    assert record.network_flags == 1 << 5 and record.flags == set()  # STRONGLY_TYPED only
    assert EngineSidecar.read(bundle.root / "model_int8.engine").source_key == "int8-trt"


def test_a_timing_cache_from_another_gpu_is_replaced_not_used(tmp_path, monkeypatch, caplog):
    _, builds = trt_contract.install(monkeypatch, "10.3.0", name="Orin")
    bundle = bundle_with(tmp_path)
    cache = bundle.root / f"timing-{AGX.cache_tag}.cache"
    cache.write_bytes(b"TIMING:H200")
    with caplog.at_level(logging.WARNING):
        build_bundle_engine(bundle.root, bundle.manifest, "fp16",
                            ShapeProfile(1, 8, 16, 1, 64, 64), machine=AGX)
    assert builds[0].timing_cache_accepted == [False, True]
    assert "does not match this device" in caplog.text
    assert cache.read_bytes() == b"TIMING:Orin"  # the new device's cache, saved whole


@pytest.mark.parametrize("scored", [False, True])
def test_the_runner_checks_shapes_and_outputs_and_frees_what_it_took(tmp_path, monkeypatch,
                                                                     scored):
    state, _ = trt_contract.install(monkeypatch, "10.3.0")
    from lineside.edge.backends.base import BackendUnavailable
    from lineside.edge.backends.tensorrt.runner import TensorRTBackend

    bundle = bundle_with(tmp_path, scored=scored)
    backend = TensorRTBackend(bundle, "fp16", cache_dir=tmp_path / "cache")
    tiles = np.zeros((11, 1, 64, 64), np.uint8)
    out = backend.infer(tiles)
    if scored:  # uint8 scores, float maxima, int32 areas: the graph's own types
        assert set(out) == {"scores", "maxima", "areas"}
        assert out["scores"].shape == (11, 4, 64, 64) and out["scores"].dtype == np.uint8
        assert out["areas"].shape == (11, 4) and out["areas"].dtype == np.int32
        thresholds = np.full((11, 4), 0.3, np.float32)
        backend.infer(tiles, thresholds)
        fed = [a for a in state.allocations if len(a.data) == 11 * 4 * 4]  # 11 rows of K
        assert any(np.allclose(np.frombuffer(a.data, np.float32), 0.3) for a in fed)
    else:
        assert set(out) == {"probabilities"} and out["probabilities"].shape == (11, 4, 64, 64)
    with pytest.raises(RuntimeError, match="refused input shape"):
        backend._context.push()
        try:
            backend._set_shape("frames", (backend.max_batch + 1, 1, 64, 64))
        finally:
            backend._context.pop()
    backend.close()
    assert state.allocations and all(a.freed for a in state.allocations)
    assert not trt_contract._stack()
    trt_contract.install(monkeypatch, "10.3.0", outputs=("probabilities", "debug"))
    with pytest.raises(BackendUnavailable, match="outputs"):
        TensorRTBackend(bundle, "fp16", cache_dir=tmp_path / "other-cache")


def test_auto_falls_back_when_tensorrt_cannot_serve_the_precision(tmp_path, monkeypatch):
    trt_contract.install(monkeypatch, "11.0.0")
    from lineside.edge.backends import create_backend

    bundle = bundle_with(tmp_path, keys=("int8",))  # the CPU's INT8 graph, no QDQ for TRT
    backend = create_backend("auto", bundle, "int8")
    assert backend.name == "ort-cpu"


def test_doctor_names_why_an_engine_does_not_fit_this_gpu(tmp_path, monkeypatch):
    from lineside.edge.cli.doctor import diagnose

    trt_contract.install(monkeypatch, "10.3.0", sm_count=16)  # built on an AGX
    bundle = bundle_with(tmp_path)
    build_bundle_engine(bundle.root, bundle.manifest, "fp16",
                        ShapeProfile(1, 8, 16, 1, 64, 64))
    write_manifest(bundle.root, bundle.manifest)
    trt_contract.install(monkeypatch, "10.3.0", sm_count=8)  # the bundle moved to an NX
    report = diagnose(str(bundle.root))
    assert report["tensorrt"]["ok"] and report["cuda"]["device"]["sm_count"] == 8
    engine = report["bundle"]["engines"]["trt-fp16"]
    assert not engine["matches"] and not engine["building_now"]
    assert any("sm_count is 16, this machine has 8" in p for p in engine["problems"])
    assert report["bundle"]["runs"]["tensorrt"]["fp16"].startswith("yes")


@pytest.mark.parametrize("value, kept", [(0, True), (255, False)])
def test_build_engine_checks_the_engine_against_its_graph_on_real_frames(
        tmp_path, monkeypatch, value, kept):
    """edge-build-engine --eval: the fake engine outputs zeros, so it agrees with the toy
    graph on dark frames (nothing found by either) and not on bright ones."""
    import cv2

    from lineside.edge.cli.build_engine import main

    trt_contract.install(monkeypatch, "10.3.0")
    bundle = bundle_with(tmp_path)
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        cv2.imwrite(str(frames / f"f{i}.png"), np.full((64, 256), value, np.uint8))
    status = main([str(bundle.root), "--precision", "fp16", "--eval", str(frames)])
    manifest = load_bundle(bundle.root).manifest
    assert (status == 0) == kept
    assert ("trt-fp16" in manifest.models) == kept
    assert (bundle.root / "model_fp16.engine").exists() == kept
