"""Frame protocol: round trips and clear errors for malformed input."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lineside.edge import protocol
from lineside.edge.protocol import FrameError, FrameHeader


def header(**changes) -> FrameHeader:
    base = dict(camera_id="cam0", frame_id=7, timestamp_ns=123, encoding="mono8",
                shape=(16, 40))
    base.update(changes)
    return FrameHeader(**base)


@pytest.mark.parametrize("encoding", ["mono8", "png", "jpeg"])
def test_round_trip(encoding):
    pixels = (np.arange(16 * 40) % 251).astype(np.uint8).reshape(16, 40)
    frame = protocol.parse_frame(protocol.encode_frame(header(encoding=encoding), pixels))
    assert frame.header.frame_id == 7 and frame.pixels.shape == (16, 40)
    if encoding != "jpeg":  # lossy
        assert np.array_equal(frame.pixels, pixels)


def test_bgr8_becomes_gray():
    bgr = np.full((16, 40, 3), 100, np.uint8)
    frame = protocol.parse_frame(protocol.encode_frame(header(encoding="bgr8",
                                                              shape=(16, 40, 3)), bgr))
    assert frame.pixels.shape == (16, 40) and int(frame.pixels[0, 0]) == 100


def raw_header(**changes) -> bytes:
    body = header().to_json()
    body.update(changes)
    return json.dumps(body).encode()


@pytest.mark.parametrize("parts, reason", [
    ([b"{not json", b""], "not valid JSON"),
    ([b"\xff\xfe", b""], "not UTF-8"),
    ([b"[1, 2]", b""], "JSON object"),
    ([raw_header(schema=99), b"x" * 640], "unsupported schema"),
    ([raw_header(frame_id=-1), b"x" * 640], "frame_id"),
    ([raw_header(camera_id=""), b"x" * 640], "camera_id"),
    ([raw_header(encoding="raw12"), b"x" * 640], "encoding"),
    ([raw_header(shape=[16]), b"x" * 640], "shape"),
    ([raw_header(shape=[100000, 100000]), b""], "outside the limits"),
    ([raw_header(), b"x" * 639], "payload is 639 bytes"),
    ([raw_header(encoding="png"), b"not a png"], "not a decodable png"),
    ([raw_header()], "2 parts"),
    ([b"x" * (protocol.MAX_HEADER_BYTES + 1), b""], "limit"),
])
def test_malformed_frames_name_the_reason(parts, reason):
    with pytest.raises(FrameError) as info:
        protocol.parse_frame(parts)
    assert reason in info.value.reason


def test_error_keeps_the_frame_identity_when_the_header_says_it():
    with pytest.raises(FrameError) as info:
        protocol.parse_frame([raw_header(frame_id=41), b"short"])
    assert info.value.frame_id == 41 and info.value.camera_id == "cam0"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=4))
def test_arbitrary_bytes_never_raise_anything_but_frame_error(parts):
    with contextlib.suppress(FrameError):
        protocol.parse_frame(parts)


def test_result_message_round_trip():
    topic, body = protocol.decode_message(protocol.encode_message("reject", {"frame_id": 3}))
    assert topic == "reject" and body == {"schema": protocol.SCHEMA_VERSION, "frame_id": 3}
