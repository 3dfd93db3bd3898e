"""The scoring tail (export/score_tail.py) computes on the device exactly what the host
rule does (lineside.edge.postprocess.score_map): the same masks, scores, maxima and areas,
per tile at per-tile thresholds, on graphs of old and new opsets, and it passes a presence
output through."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from lineside.edge.backends.onnxruntime import OnnxRuntimeBackend
from lineside.edge.postprocess import score_map
from lineside.export.score_tail import add_score_tail
from tests.toy_bundle import toy_graph


def _both(path, scored_path, frames, thresholds):
    plain = OnnxRuntimeBackend(path).infer(frames)
    scored = OnnxRuntimeBackend(scored_path).infer(frames, thresholds)
    return plain, scored


def _check(plain, scored, thresholds):
    probabilities = plain["probabilities"]
    np.testing.assert_array_equal(scored["scores"], score_map(probabilities, thresholds))
    np.testing.assert_array_equal(scored["maxima"], probabilities.max(axis=(2, 3)))
    np.testing.assert_array_equal(scored["areas"],
                                  np.count_nonzero(scored["scores"], axis=(2, 3)))
    assert scored["scores"].dtype == np.uint8 and scored["areas"].dtype == np.int32


@pytest.mark.parametrize("gate", [False, True])
def test_the_tail_on_an_opset_13_graph_matches_the_host_rule(tmp_path, gate):
    path, scored_path = tmp_path / "plain.onnx", tmp_path / "scored.onnx"
    onnx.save(toy_graph(3, gate), str(path))
    onnx.save(toy_graph(3, gate), str(scored_path))
    add_score_tail(scored_path)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (5, 1, 16, 24), np.uint8)
    # Per-tile thresholds, some exactly at a pixel's probability (k/255): at is not above.
    thresholds = rng.choice(np.arange(256) / 255, (5, 3)).astype(np.float32)
    plain, scored = _both(path, scored_path, frames, thresholds)
    _check(plain, scored, thresholds)
    if gate:
        np.testing.assert_array_equal(scored["presence"], plain["presence"])


@pytest.mark.slow
def test_the_tail_on_an_exported_network_matches_the_host_rule(tmp_path):
    from lineside.export.onnx_export import export_onnx
    from lineside.train.models import DeployedModel, create_model

    net = create_model("mini_unet", in_channels=1, classes=4).eval()
    path, scored_path = tmp_path / "plain.onnx", tmp_path / "scored.onnx"
    export_onnx(DeployedModel(net, 0.5, 0.25), path, 1, (64, 64))
    scored_path.write_bytes(path.read_bytes())
    add_score_tail(scored_path)
    assert onnx.load(str(scored_path)).opset_import[0].version >= 18  # ReduceMax's axes input
    frames = np.random.default_rng(1).integers(0, 256, (3, 1, 64, 96), np.uint8)
    thresholds = np.array([[0.3, 0.5, 0.5, 0.7]] * 3, np.float32)
    plain, scored = _both(path, scored_path, frames, thresholds)
    _check(plain, scored, thresholds)


def test_a_graph_without_probabilities_is_refused(tmp_path):
    path = tmp_path / "g.onnx"
    graph = toy_graph(2, True)
    del graph.graph.output[0]  # presence only: a screening classifier
    onnx.save(graph, str(path))
    with pytest.raises(ValueError, match="no probabilities output"):
        add_score_tail(path)
