"""A real edge-serve process behind a screening classifier serves every frame exactly as
the offline pipeline (edge-eval's path) computes it, and counts the tiles it screened."""

from __future__ import annotations

import urllib.request

import cv2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lineside.edge.config import CameraSettings, ModelSettings
from lineside.edge.pipeline.infer import run_model
from lineside.edge.pipeline.model import compose_model
from lineside.edge.postprocess import frame_masks
from tests.helpers import free_endpoint
from tests.system.line import collect, header, serve

pytestmark = pytest.mark.slow


def scrape_total(port: int, name: str, **labels: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(s.value for family in text_string_to_metric_families(text)
               for s in family.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_daemon_with_a_screen_serves_every_frame_as_the_offline_pipeline_does(
        trained_bundle, screen_bundle, synth_data):
    images = sorted((synth_data / "train_images").glob("*.jpg"))[:8]
    frames = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in images]
    port = int(free_endpoint().rsplit(":", 1)[1])
    with serve(trained_bundle, "--screen", str(screen_bundle), "--metrics",
               f"127.0.0.1:{port}") as d:
        for i, frame in enumerate(frames):
            d.sender.send(header("cam0", i), frame)
        book = collect(d.subscriber, len(frames))
        segmented = scrape_total(port, "lineside_screen_tiles_total", outcome="segmented")
        skipped = scrape_total(port, "lineside_screen_tiles_total", outcome="skipped")
    assert book.errors == [] and book.drops == []
    assert book.ids("results") == list(range(len(frames)))
    assert segmented + skipped == 7 * len(frames)

    offline = compose_model(trained_bundle, ModelSettings(backend="ort-cpu",
                                                          screen=str(screen_bundle)))
    classes = offline.classes_for(CameraSettings())
    offline_segmented = 0
    for result, frame in zip(book.results, frames, strict=True):
        out = run_model(offline, frame)
        offline_segmented += out.segmented
        masks = frame_masks(out.scores, out.gate, classes)
        for k, spec in enumerate(classes):
            area = result["classes"][str(spec.id)]["area"]
            assert abs(area - int(masks[k].sum())) <= max(2, 0.002 * area)
            assert result["presence"][str(spec.id)] == pytest.approx(out.gate[k], abs=1e-3)
    assert offline_segmented == segmented
