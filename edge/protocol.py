"""The wire protocol between cameras, the daemon and its listeners (docs/protocol.md).

Frames in: a two-part ZeroMQ message, a UTF-8 JSON header and the pixel payload.
Results out: a two-part message on a PUB socket, a topic (`reject`, `mask`, `event`)
and a UTF-8 JSON body. Everything here is pure (bytes in, values out) so that the daemon,
the camera simulator, the client library and the fuzz tests share one definition.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

SCHEMA_VERSION = 1

ENCODINGS = ("mono8", "bgr8", "jpeg", "png")
TOPIC_REJECT = "reject"
TOPIC_MASK = "mask"
TOPIC_EVENT = "event"
# A candidate model's verdicts beside the serving one's (edge-serve --shadow); a PLC
# gateway never subscribes to it.
TOPIC_SHADOW = "shadow"
TOPICS = (TOPIC_REJECT, TOPIC_MASK, TOPIC_EVENT, TOPIC_SHADOW)

# Limits that keep a hostile or broken sender from exhausting memory.
MAX_HEADER_BYTES = 16 * 1024
MAX_SIDE = 16384
MAX_PIXELS = 64 * 1024 * 1024


class FrameError(ValueError):
    """A frame that cannot be processed; carries what is known of its identity."""

    def __init__(self, reason: str, camera_id: str | None = None,
                 frame_id: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.camera_id = camera_id
        self.frame_id = frame_id


@dataclass(frozen=True)
class FrameHeader:
    """The JSON header that leads every frame message."""

    camera_id: str
    frame_id: int
    timestamp_ns: int
    encoding: str
    shape: tuple[int, ...]  # (height, width) or (height, width, 3)
    schema: int = SCHEMA_VERSION
    line_position: float | None = None
    # Changes whenever the camera's frame counter starts again (a camera or bridge
    # restart), so gaps and repeats are judged within one stream (docs/protocol.md).
    stream_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "schema": self.schema,
            "camera_id": self.camera_id,
            "frame_id": self.frame_id,
            "timestamp_ns": self.timestamp_ns,
            "encoding": self.encoding,
            "shape": list(self.shape),
        }
        if self.line_position is not None:
            body["line_position"] = self.line_position
        if self.stream_id is not None:
            body["stream_id"] = self.stream_id
        return body


@dataclass
class Frame:
    """A decoded frame: header plus pixels as (H, W) uint8 grayscale."""

    header: FrameHeader
    pixels: np.ndarray
    received_ns: int = 0
    serial: int = 0  # the daemon's own number for this frame, unique within one run


def frame_fields(frame: Frame) -> dict[str, Any]:
    """The identity fields every result and mask message about a frame carries."""
    header = frame.header
    base: dict[str, Any] = {"camera_id": header.camera_id, "frame_id": header.frame_id,
                            "timestamp_ns": header.timestamp_ns, "received_ns": frame.received_ns}
    if header.line_position is not None:
        base["line_position"] = header.line_position
    return base


def encode_header(header: FrameHeader) -> bytes:
    return json.dumps(header.to_json(), separators=(",", ":")).encode()


def encode_frame(header: FrameHeader, pixels: np.ndarray) -> list[bytes]:
    """Build the multipart message for a frame; compresses for jpeg/png encodings."""
    if header.encoding in ("mono8", "bgr8"):
        payload = np.ascontiguousarray(pixels).tobytes()
    elif header.encoding in ("jpeg", "png"):
        ext = ".jpg" if header.encoding == "jpeg" else ".png"
        ok, buf = cv2.imencode(ext, pixels)
        if not ok:
            raise ValueError(f"OpenCV could not encode the frame as {header.encoding}")
        payload = buf.tobytes()
    else:
        raise ValueError(f"unknown encoding {header.encoding!r}; expected one of {ENCODINGS}")
    return [encode_header(header), payload]


def _require(cond: bool, reason: str, camera_id: str | None, frame_id: int | None) -> None:
    if not cond:
        raise FrameError(reason, camera_id, frame_id)


def parse_header(raw: bytes) -> FrameHeader:
    """Validate and parse a frame header; raises FrameError with what is known."""
    if len(raw) > MAX_HEADER_BYTES:
        raise FrameError(f"header is {len(raw)} bytes, limit {MAX_HEADER_BYTES}")
    try:
        body = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise FrameError("header is not UTF-8") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise FrameError(f"header is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise FrameError("header must be a JSON object")
    camera = body.get("camera_id")
    camera_id = camera if isinstance(camera, str) else None
    fid = body.get("frame_id")
    frame_id = fid if isinstance(fid, int) and not isinstance(fid, bool) else None

    _require(body.get("schema") == SCHEMA_VERSION,
             f"unsupported schema {body.get('schema')!r}; this daemon speaks {SCHEMA_VERSION}",
             camera_id, frame_id)
    _require(camera_id is not None and 0 < len(camera_id) <= 64,
             "camera_id must be a string of 1-64 characters", camera_id, frame_id)
    _require(frame_id is not None and frame_id >= 0,
             "frame_id must be a non-negative integer", camera_id, frame_id)
    ts = body.get("timestamp_ns")
    _require(isinstance(ts, int) and not isinstance(ts, bool) and ts >= 0,
             "timestamp_ns must be a non-negative integer", camera_id, frame_id)
    encoding = body.get("encoding")
    _require(encoding in ENCODINGS, f"encoding must be one of {ENCODINGS}, got {encoding!r}",
             camera_id, frame_id)
    shape = body.get("shape")
    _require(isinstance(shape, list) and len(shape) in (2, 3)
             and all(isinstance(s, int) and not isinstance(s, bool) for s in shape),
             "shape must be [height, width] or [height, width, channels]", camera_id, frame_id)
    _require(all(0 < s <= MAX_SIDE for s in shape[:2]) and shape[0] * shape[1] <= MAX_PIXELS,
             f"shape {shape} is outside the limits (side <= {MAX_SIDE}, "
             f"pixels <= {MAX_PIXELS})", camera_id, frame_id)
    if encoding == "mono8":
        _require(len(shape) == 2 or shape[2] == 1, "mono8 frames have one channel",
                 camera_id, frame_id)
    elif encoding == "bgr8":
        _require(len(shape) == 3 and shape[2] == 3, "bgr8 frames have shape [h, w, 3]",
                 camera_id, frame_id)
    line_position = body.get("line_position")
    if line_position is not None:
        _require(isinstance(line_position, (int, float)) and not isinstance(line_position, bool)
                 and math.isfinite(line_position),
                 "line_position must be a finite number", camera_id, frame_id)
    stream_id = body.get("stream_id")
    if stream_id is not None:
        _require(isinstance(stream_id, str) and 0 < len(stream_id) <= 64,
                 "stream_id must be a string of 1-64 characters", camera_id, frame_id)
    return FrameHeader(camera_id=camera_id, frame_id=frame_id, timestamp_ns=ts,
                       encoding=encoding, shape=tuple(shape),
                       line_position=line_position, stream_id=stream_id)


def decode_payload(header: FrameHeader, payload: bytes) -> np.ndarray:
    """Turn the payload into (H, W) uint8 grayscale, checking it against the header."""
    height, width = header.shape[0], header.shape[1]
    cam, fid = header.camera_id, header.frame_id
    if header.encoding == "mono8":
        _require(len(payload) == height * width,
                 f"mono8 payload is {len(payload)} bytes, header shape needs {height * width}",
                 cam, fid)
        return np.frombuffer(payload, dtype=np.uint8).reshape(height, width)
    if header.encoding == "bgr8":
        _require(len(payload) == height * width * 3,
                 f"bgr8 payload is {len(payload)} bytes, header shape needs "
                 f"{height * width * 3}", cam, fid)
        bgr = np.frombuffer(payload, dtype=np.uint8).reshape(height, width, 3)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    _require(len(payload) > 0, f"empty {header.encoding} payload", cam, fid)
    image = cv2.imdecode(np.frombuffer(payload, dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
    _require(image is not None, f"payload is not a decodable {header.encoding} image", cam, fid)
    _require(image.shape == (height, width),
             f"decoded image is {image.shape[0]}x{image.shape[1]}, header says "
             f"{height}x{width}", cam, fid)
    return image


def parse_frame(parts: list[bytes], received_ns: int = 0) -> Frame:
    """Validate a multipart frame message end to end."""
    if len(parts) != 2:
        # Try to name the frame even when the message has the wrong number of parts.
        header = None
        if parts:
            try:
                header = parse_header(parts[0])
            except FrameError:
                header = None
        raise FrameError(f"frame message must have 2 parts (header, payload), got {len(parts)}",
                         header.camera_id if header else None,
                         header.frame_id if header else None)
    header = parse_header(parts[0])
    return Frame(header=header, pixels=decode_payload(header, parts[1]), received_ns=received_ns)


# A message body key whose bytes travel as a third, binary message part (PNG masks).
ATTACHMENT = "attachment"


def encode_message(topic: str, body: dict[str, Any]) -> list[bytes]:
    """Build a PUB message: topic, compact JSON body, and the binary attachment if any."""
    if topic not in TOPICS:
        raise ValueError(f"unknown topic {topic!r}; expected one of {TOPICS}")
    body = {"schema": SCHEMA_VERSION, **body}
    attachment = body.pop(ATTACHMENT, None)
    parts = [topic.encode(), json.dumps(body, separators=(",", ":")).encode()]
    if attachment is not None:
        parts.append(bytes(attachment))
    return parts


def decode_message(parts: list[bytes]) -> tuple[str, dict[str, Any]]:
    """Parse a PUB message into (topic, body); a third part lands in body["attachment"]."""
    if len(parts) not in (2, 3):
        raise ValueError(f"result messages have 2 or 3 parts, got {len(parts)}")
    body = json.loads(parts[1].decode())
    if len(parts) == 3:
        body[ATTACHMENT] = parts[2]
    return parts[0].decode(), body


def json_loads_limited(raw: bytes, limit: int = MAX_HEADER_BYTES) -> Any:
    """json.loads for untrusted control input: size-limited, errors as ValueError."""
    if len(raw) > limit:
        raise ValueError(f"message is {len(raw)} bytes, limit {limit}")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(str(exc)) from None
