"""Operator view: a read-only web page of what the line sees (`edge-serve --http`).

The daemon hands this view references to the latest frame and masks per camera (no copy,
never blocking: the newest replaces the older one). A render thread draws overlays at a
capped rate with the same renderer as the demo and `edge-eval` (lineside.edge.overlay),
so the view can never slow inference. The page has no external assets (works offline on
the line) and updates itself through server-sent events.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from lineside.edge.metrics import WsgiServer
from lineside.edge.overlay import CLASS_COLOURS, draw

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>lineside operator view</title>
<style>
body { font-family: system-ui, sans-serif; margin: 0; background: #15181c; color: #e8e8e8; }
header { padding: 10px 16px; background: #20252b; display: flex; gap: 24px;
         align-items: baseline; flex-wrap: wrap; }
header h1 { font-size: 18px; margin: 0; }
.stat b { font-size: 20px; } .muted { color: #9aa4ad; font-size: 13px; }
.camera { margin: 12px 16px; padding: 10px; background: #1c2026; border-radius: 6px; }
.camera h2 { font-size: 15px; margin: 0 0 8px 0; }
.verdict-OK { color: #5fd35f; } .verdict-REJECT { color: #ff5b5b; }
.verdict-ERROR { color: #ffb020; }
img { width: 100%; image-rendering: pixelated; background: #000; min-height: 20px; }
table { border-collapse: collapse; font-size: 13px; margin-top: 6px; }
td, th { padding: 2px 10px 2px 0; text-align: left; }
.legend span { display: inline-block; padding: 0 8px; margin-right: 6px; border-radius: 3px;
               color: #000; font-size: 12px; }
</style></head>
<body>
<header>
  <h1>lineside</h1>
  <span class="stat">frames <b id="frames-total">0</b></span>
  <span class="stat">rejects <b id="rejects-total">0</b>
    (<span id="reject-rate">0.0</span>%)</span>
  <span class="stat">frames/s <b id="fps">0.0</b></span>
  <span class="stat">latency p50 <b id="p50">-</b> / p99 <b id="p99">-</b> ms</span>
  <span class="stat">drops <b id="drops">0</b> errors <b id="errors">0</b></span>
  <span class="muted" id="model"></span>
  <span class="muted" id="connection">connecting...</span>
</header>
<div class="legend" style="margin: 8px 16px" id="legend"></div>
<div id="cameras"></div>
<script>
const colours = __COLOURS__;
const cards = {};
function card(camera) {
  if (cards[camera]) return cards[camera];
  const div = document.createElement("div");
  div.className = "camera";
  div.innerHTML = `<h2>${camera} &middot; last frame <span class="fid"></span>
    <span class="verdict"></span></h2>
    <img class="latest" alt="latest frame of ${camera}">
    <div class="muted">last REJECT: frame <span class="rid">-</span></div>
    <img class="reject" alt="last rejected frame of ${camera}">
    <table><thead><tr><th>class</th><th>defect rate</th></tr></thead>
    <tbody class="rates"></tbody></table>`;
  document.getElementById("cameras").appendChild(div);
  return (cards[camera] = div);
}
function update(s) {
  document.getElementById("frames-total").textContent = s.frames;
  document.getElementById("rejects-total").textContent = s.rejects;
  document.getElementById("reject-rate").textContent = (100 * s.reject_rate).toFixed(1);
  document.getElementById("fps").textContent = s.fps.toFixed(1);
  document.getElementById("p50").textContent = s.latency_p50_ms ?? "-";
  document.getElementById("p99").textContent = s.latency_p99_ms ?? "-";
  document.getElementById("drops").textContent = s.drops;
  document.getElementById("errors").textContent = s.errors;
  document.getElementById("model").textContent = `${s.model} on ${s.backend}`;
  document.getElementById("legend").innerHTML = s.classes.map((c, k) =>
    `<span style="background:${colours[k % colours.length]}">${c.id} ${c.name}</span>`).join("");
  for (const [camera, c] of Object.entries(s.cameras)) {
    const div = card(camera);
    div.querySelector(".fid").textContent = c.frame_id;
    const v = div.querySelector(".verdict");
    v.textContent = c.verdict; v.className = "verdict verdict-" + c.verdict;
    if (c.image_version) div.querySelector(".latest").src =
      `/frame/${encodeURIComponent(camera)}.jpg?v=${c.image_version}`;
    if (c.reject_version) {
      div.querySelector(".reject").src =
        `/reject/${encodeURIComponent(camera)}.jpg?v=${c.reject_version}`;
      div.querySelector(".rid").textContent = c.reject_frame_id;
    }
    div.querySelector(".rates").innerHTML = Object.entries(c.class_rates).map(([id, r]) =>
      `<tr><td>${id}</td><td>${(100 * r).toFixed(1)}%</td></tr>`).join("");
  }
}
const events = new EventSource("/events");
events.onopen = () => document.getElementById("connection").textContent = "live";
events.onerror = () => document.getElementById("connection").textContent = "reconnecting...";
events.onmessage = (e) => update(JSON.parse(e.data));
</script>
</body></html>
"""


@dataclass
class CameraView:
    frames: int = 0
    rejects: int = 0
    class_frames: dict[int, int] = field(default_factory=dict)  # frames with that class
    frame_id: int = -1
    verdict: str = ""
    pending: tuple[np.ndarray, np.ndarray, str] | None = None  # pixels, masks, title
    pending_reject: tuple[np.ndarray, np.ndarray, str] | None = None
    image: bytes = b""
    image_version: int = 0
    reject_image: bytes = b""
    reject_version: int = 0
    reject_frame_id: int = -1


class OperatorView:
    def __init__(self, address: str, classes: Callable[[], list[tuple[int, str]]],
                 describe: Callable[[], dict[str, str]],
                 counters: Callable[[], dict[str, int]], render_hz: float = 4.0) -> None:
        self.classes, self.describe, self.counters = classes, describe, counters
        self.render_period = 1.0 / render_hz
        self._lock = threading.Lock()
        self._cameras: dict[str, CameraView] = {}
        self._latencies: deque[float] = deque(maxlen=2000)
        self._times: deque[float] = deque(maxlen=5000)
        self._stop = threading.Event()
        self._renderer = threading.Thread(target=self._render_loop, name="edge-view-render",
                                          daemon=True)
        self.server = WsgiServer(address, self._app, "edge-view")
        self.port = self.server.port

    # -- called by the daemon (cheap, non-blocking) -------------------------------------
    def offer(self, camera_id: str, frame_id: int, pixels: np.ndarray, masks: np.ndarray,
              verdict: str) -> None:
        title = f"{camera_id} frame {frame_id} {verdict}"
        with self._lock:
            view = self._cameras.setdefault(camera_id, CameraView())
            view.pending = (pixels, masks, title)
            if verdict == "REJECT":
                view.pending_reject = (pixels, masks, title)
                view.reject_frame_id = frame_id

    def record(self, result: dict[str, Any]) -> None:
        """A published `reject` message (with its final latency)."""
        with self._lock:
            view = self._cameras.setdefault(result["camera_id"], CameraView())
            view.frames += 1
            view.frame_id, view.verdict = result["frame_id"], result["verdict"]
            view.rejects += result["verdict"] == "REJECT"
            for class_id, summary in result.get("classes", {}).items():
                if summary.get("area"):
                    view.class_frames[int(class_id)] = view.class_frames.get(int(class_id), 0) + 1
            self._latencies.append(result["latency_ms"])
            self._times.append(time.monotonic())

    # -- rendering, off the hot path ----------------------------------------------------
    def _render_loop(self) -> None:
        while not self._stop.wait(self.render_period):
            with self._lock:
                work = [(camera, view, view.pending, view.pending_reject)
                        for camera, view in self._cameras.items()
                        if view.pending is not None or view.pending_reject is not None]
                for _, view, _, _ in work:
                    view.pending = view.pending_reject = None
            for _, view, latest, reject in work:
                latest_jpeg = self._encode(latest) if latest else None
                reject_jpeg = self._encode(reject) if reject else None
                with self._lock:
                    if latest_jpeg:
                        view.image, view.image_version = latest_jpeg, view.image_version + 1
                    if reject_jpeg:
                        view.reject_image = reject_jpeg
                        view.reject_version += 1

    @staticmethod
    def _encode(item: tuple[np.ndarray, np.ndarray, str]) -> bytes:
        pixels, masks, title = item
        ok, jpeg = cv2.imencode(".jpg", draw(pixels, masks, title=title),
                                [cv2.IMWRITE_JPEG_QUALITY, 85])
        return jpeg.tobytes() if ok else b""

    # -- HTTP ---------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        counters = self.counters()
        with self._lock:
            latencies = sorted(self._latencies)
            now = time.monotonic()
            recent = [t for t in self._times if now - t <= 5.0]
            frames = sum(v.frames for v in self._cameras.values())
            rejects = sum(v.rejects for v in self._cameras.values())
            cameras = {camera: {
                "frames": v.frames, "rejects": v.rejects, "frame_id": v.frame_id,
                "verdict": v.verdict, "image_version": v.image_version,
                "reject_version": v.reject_version, "reject_frame_id": v.reject_frame_id,
                "class_rates": {str(c): n / v.frames for c, n in sorted(v.class_frames.items())}
                if v.frames else {},
            } for camera, v in sorted(self._cameras.items())}

        def percentile(q: float) -> float | None:
            return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 1) \
                if latencies else None

        span = (recent[-1] - recent[0]) if len(recent) > 1 else 0.0
        return {"frames": frames, "rejects": rejects,
                "reject_rate": rejects / frames if frames else 0.0,
                "fps": (len(recent) - 1) / span if span else 0.0,
                "latency_p50_ms": percentile(0.5), "latency_p99_ms": percentile(0.99),
                "drops": counters.get("dropped", 0), "errors": counters.get("errors", 0),
                "classes": [{"id": i, "name": n} for i, n in self.classes()],
                "cameras": cameras, **self.describe()}

    def _events(self) -> Iterator[bytes]:
        while not self._stop.is_set():
            yield f"data: {json.dumps(self.stats())}\n\n".encode()
            self._stop.wait(0.5)

    def _app(self, environ, start_response):
        path = environ.get("PATH_INFO", "/")
        if path == "/":
            colours = json.dumps(["#{:02x}{:02x}{:02x}".format(*c[::-1])
                                  for c in CLASS_COLOURS])
            body = PAGE.replace("__COLOURS__", colours).encode()
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            return [body]
        if path == "/stats.json":
            start_response("200 OK", [("Content-Type", "application/json")])
            return [json.dumps(self.stats()).encode()]
        if path == "/events":
            start_response("200 OK", [("Content-Type", "text/event-stream"),
                                      ("Cache-Control", "no-cache")])
            return self._events()
        for prefix, attribute in (("/frame/", "image"), ("/reject/", "reject_image")):
            if path.startswith(prefix) and path.endswith(".jpg"):
                camera = path[len(prefix):-4]
                with self._lock:
                    view = self._cameras.get(camera)
                    image = getattr(view, attribute) if view else b""
                if image:
                    start_response("200 OK", [("Content-Type", "image/jpeg"),
                                              ("Cache-Control", "no-store")])
                    return [image]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]

    def start(self) -> None:
        self._renderer.start()
        self.server.start()

    def stop(self) -> None:
        self._stop.set()
        self.server.stop()


