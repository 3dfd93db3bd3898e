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
from lineside.edge.pipeline.decide import Decided

# Everything from the wire (camera ids, verdicts, class names from a bundle) reaches the
# page as data and is set with textContent, never parsed as HTML; the page has no inline
# script or style, so the Content-Security-Policy below can forbid both.
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>lineside operator view</title>
<link rel="stylesheet" href="/view.css"></head>
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
<div class="legend" id="legend"></div>
<div id="cameras"></div>
<script src="/view.js"></script>
</body></html>
"""

STYLE = """
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
.legend { margin: 8px 16px; }
.legend span { display: inline-block; padding: 0 8px; margin-right: 6px; border-radius: 3px;
               color: #000; font-size: 12px; }
.swatch-0 { background: __C0__; } .swatch-1 { background: __C1__; }
.swatch-2 { background: __C2__; } .swatch-3 { background: __C3__; }
"""

SCRIPT = """
"use strict";
const cards = new Map();
function el(tag, attrs = {}, ...children) {  // DOM nodes; text goes in as text, never HTML
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const c of children) node.append(c);
  return node;
}
function setText(id, value) { document.getElementById(id).textContent = String(value); }
function card(camera) {
  if (cards.has(camera)) return cards.get(camera);
  const parts = {
    name: el("span", {class: "name"}), fid: el("span", {class: "fid"}),
    verdict: el("span", {class: "verdict"}), rid: el("span", {class: "rid"}, "-"),
    latest: el("img", {class: "latest"}), reject: el("img", {class: "reject"}),
    rates: el("tbody", {class: "rates"}),
  };
  parts.name.textContent = camera;
  parts.latest.alt = "latest frame of " + camera;
  parts.reject.alt = "last rejected frame of " + camera;
  const div = el("div", {class: "camera"},
    el("h2", {}, parts.name, " \u00b7 last frame ", parts.fid, " ", parts.verdict),
    parts.latest, el("div", {class: "muted"}, "last REJECT: frame ", parts.rid),
    parts.reject,
    el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "class"),
                                       el("th", {}, "defect rate"))), parts.rates));
  document.getElementById("cameras").append(div);
  cards.set(camera, parts);
  return parts;
}
function update(s) {
  setText("frames-total", s.frames);
  setText("rejects-total", s.rejects);
  setText("reject-rate", (100 * s.reject_rate).toFixed(1));
  setText("fps", s.fps.toFixed(1));
  setText("p50", s.latency_p50_ms ?? "-");
  setText("p99", s.latency_p99_ms ?? "-");
  setText("drops", s.drops);
  setText("errors", s.errors);
  setText("model", `${s.model} on ${s.backend}`);
  document.getElementById("legend").replaceChildren(...s.classes.map((c, k) =>
    el("span", {class: "swatch-" + (k % 4)}, `${c.id} ${c.name}`)));
  for (const [camera, c] of Object.entries(s.cameras)) {
    const parts = card(camera);
    parts.fid.textContent = String(c.frame_id);
    parts.verdict.textContent = c.verdict;
    parts.verdict.className = "verdict verdict-" + String(c.verdict).replace(/[^A-Z]/g, "");
    if (c.image_version) parts.latest.src =
      `/frame/${encodeURIComponent(camera)}.jpg?v=${Number(c.image_version)}`;
    if (c.reject_version) {
      parts.reject.src = `/reject/${encodeURIComponent(camera)}.jpg?v=${Number(c.reject_version)}`;
      parts.rid.textContent = String(c.reject_frame_id);
    }
    parts.rates.replaceChildren(...Object.entries(c.class_rates).map(([id, r]) =>
      el("tr", {}, el("td", {}, id), el("td", {}, (100 * r).toFixed(1) + "%"))));
  }
}
const events = new EventSource("/events");
events.onopen = () => setText("connection", "live");
events.onerror = () => setText("connection", "reconnecting...");
events.onmessage = (e) => update(JSON.parse(e.data));
"""

# No inline script or style, no other origin, no framing, no forms: what the page needs.
SECURITY_HEADERS = [
    ("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; "
     "img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
     "frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
]


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
        self._style = STYLE
        for k, colour in enumerate(CLASS_COLOURS):  # BGR, as OpenCV draws them
            self._style = self._style.replace(f"__C{k}__", "#{:02x}{:02x}{:02x}".format(
                *colour[::-1]))

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

    def observe(self, decided: Decided) -> None:
        """Decide-stage observer: a judged frame's pixels and masks (a frame without a
        prediction has nothing to show)."""
        if decided.masks is not None:
            header = decided.frame.header
            self.offer(header.camera_id, header.frame_id, decided.frame.pixels,
                       decided.masks, decided.verdict)

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
        def respond(status: str, headers: list[tuple[str, str]]):
            return start_response(status, headers + SECURITY_HEADERS)

        return self._route(environ.get("PATH_INFO", "/"), respond)

    def _route(self, path: str, start_response):
        static = {"/": (PAGE, "text/html; charset=utf-8"),
                  "/view.js": (SCRIPT, "text/javascript; charset=utf-8"),
                  "/view.css": (self._style, "text/css; charset=utf-8")}
        if path in static:
            body, kind = static[path]
            start_response("200 OK", [("Content-Type", kind)])
            return [body.encode()]
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


