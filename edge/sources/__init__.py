"""Frame sources for what is not GigE Vision (edge-camera): a video file, an RTSP
stream, a V4L2/USB camera or a GStreamer pipeline (OpenCV's capture backends, capture.py),
and a folder of images replayed or watched for new files (folder.py).

Every source yields `SourceFrame`s (grey pixels, or an image file's own bytes to send as
they are) and says what happened to it through `SourceEvent`s (opened, lost, reconnected,
ended); edge-camera turns both into the frame protocol (docs/protocol.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np


@dataclass
class SourceFrame:
    pixels: np.ndarray | None  # (H, W) uint8 grey; None when `encoded` carries the image
    timestamp_ns: int
    encoded: bytes = b""  # a JPEG/PNG file's bytes, sent without re-encoding
    encoding: str = "mono8"  # "mono8", or the encoding of `encoded` ("jpeg", "png")
    shape: tuple[int, int] = (0, 0)
    name: str = ""  # where it came from (a file name), for logs


@dataclass
class SourceEvent:
    kind: str  # "opened", "lost", "reconnected", "ended", "skipped"
    reason: str
    counters: dict[str, int] = field(default_factory=dict)


class FrameSource(Protocol):
    def frames(self) -> Iterator[SourceFrame | SourceEvent]:
        """Frames and events until the source ends (or forever, for live sources)."""
        ...

    def stop(self) -> None:
        """Thread-safe: make `frames` end soon (a live source between two reads)."""
        ...

    def close(self) -> None: ...


def message_parts(frame: SourceFrame, camera_id: str, frame_id: int,
                  stream_id: str | None = None) -> list[bytes]:
    """The frame protocol message for one source frame (an image file's own bytes as
    they are, pixels encoded as `frame.encoding` says)."""
    from lineside.edge.protocol import FrameHeader, encode_frame, encode_header

    header = FrameHeader(camera_id, frame_id, frame.timestamp_ns, frame.encoding,
                         tuple(frame.shape), stream_id=stream_id)
    if frame.pixels is None:
        return [encode_header(header), frame.encoded]
    return encode_frame(header, frame.pixels)


def open_source(spec: str, *, watch: bool = False, loop: bool = False,
                reconnect_s: float = 1.0, max_reconnects: int = -1,
                settle_s: float = 0.5, poll_s: float = 0.2,
                encoding: str = "auto") -> FrameSource:
    """The source `spec` names: a folder (replayed, or with `watch` sent file by file as
    files appear), else anything OpenCV opens: a video file, rtsp:// or http:// URL,
    /dev/videoN or a camera index, `gst:` + a GStreamer pipeline."""
    from lineside.edge.sources.capture import CaptureSource
    from lineside.edge.sources.folder import FolderSource, WatchedFolder

    if Path(spec).is_dir():
        return WatchedFolder(Path(spec), settle_s, poll_s, encoding) if watch else \
            FolderSource(Path(spec), loop, encoding)
    if watch:
        raise ValueError(f"--watch needs a folder, {spec} is not one")
    return CaptureSource(spec, loop=loop, reconnect_s=reconnect_s,
                         max_reconnects=max_reconnects)


__all__ = ["FrameSource", "SourceEvent", "SourceFrame", "message_parts", "open_source"]
