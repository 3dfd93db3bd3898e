"""Sources OpenCV captures: video files, RTSP/HTTP streams, V4L2/USB cameras and GStreamer
pipelines, converted to grey frames. A live source that drops (a network camera
rebooting, a cable pulled) is reopened with a back-off; a file ends, or starts again
with `loop`."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lineside.edge.sources import SourceEvent, SourceFrame

log = logging.getLogger("lineside.edge.sources")

MAX_BACKOFF_S = 10.0


class SourceError(RuntimeError):
    """A source that cannot be opened (a file that is not a video, a bad pipeline)."""


def open_capture(spec: str) -> Any:
    """cv2.VideoCapture for `spec`, with the backend its form names."""
    if spec.startswith("gst:"):
        return cv2.VideoCapture(spec[4:], cv2.CAP_GSTREAMER)
    if spec.isdigit():
        return cv2.VideoCapture(int(spec), cv2.CAP_V4L2)
    if spec.startswith("/dev/video"):
        return cv2.VideoCapture(spec, cv2.CAP_V4L2)
    return cv2.VideoCapture(spec)  # a file or a URL: FFmpeg


def grey(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return image
    if image.shape[2] == 1:
        return image[:, :, 0]
    code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
    return cv2.cvtColor(image, code)


class CaptureSource:
    def __init__(self, spec: str, *, loop: bool = False, reconnect_s: float = 1.0,
                 max_reconnects: int = -1) -> None:
        """`max_reconnects`: attempts after a live source drops before giving up (-1:
        never give up, as a line wants)."""
        self.spec = spec
        self.is_file = Path(spec).is_file()
        self.loop = loop
        self.reconnect_s = reconnect_s
        self.max_reconnects = max_reconnects
        self.counters = {"frames": 0, "lost": 0, "reconnects": 0}
        self._capture: Any = None
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True

    def _open(self) -> bool:
        self.close()
        self._capture = open_capture(self.spec)
        return bool(self._capture.isOpened())

    def frames(self) -> Iterator[SourceFrame | SourceEvent]:
        if not self._open():
            if self.is_file or self.max_reconnects == 0:
                raise SourceError(f"OpenCV cannot open {self.spec} (not a video it can "
                                  "decode, or no such device/stream)")
            yield from self._reconnect("could not open the source")
            if self._capture is None:
                return
        yield SourceEvent("opened", f"opened {self.spec}", dict(self.counters))
        while self._capture is not None and not self.stopped:
            ok, image = self._capture.read()
            if ok and image is not None:
                self.counters["frames"] += 1
                pixels = np.ascontiguousarray(grey(image))
                yield SourceFrame(pixels, time.time_ns(), shape=pixels.shape)
                continue
            if self.is_file:
                if self.loop and self.counters["frames"] and self._open():
                    continue
                yield SourceEvent("ended", f"end of {self.spec}", dict(self.counters))
                return
            self.counters["lost"] += 1
            yield SourceEvent("lost", f"{self.spec} stopped delivering frames; reconnecting",
                              dict(self.counters))
            yield from self._reconnect("the stream dropped")

    def _reconnect(self, why: str) -> Iterator[SourceEvent]:
        """Reopen with a doubling back-off; ends the source after `max_reconnects`."""
        delay, attempt = self.reconnect_s, 0
        while (self.max_reconnects < 0 or attempt < self.max_reconnects) and not self.stopped:
            attempt += 1
            time.sleep(delay)
            if self._open():
                self.counters["reconnects"] += 1
                log.info("reconnected to %s after %d attempt(s)", self.spec, attempt)
                yield SourceEvent("reconnected", f"reconnected after {attempt} attempt(s) "
                                  f"({why})", dict(self.counters))
                return
            delay = min(MAX_BACKOFF_S, delay * 2)
        self.close()
        yield SourceEvent("ended", f"gave up on {self.spec} after {attempt} attempt(s)",
                          dict(self.counters))

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None
