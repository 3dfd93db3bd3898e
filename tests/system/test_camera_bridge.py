"""The native camera bridge: built with CMake, header bytes checked against the Python
library, and run against Aravis's fake GigE Vision camera into a real edge-serve."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
import zmq

from lineside.edge import protocol
from lineside.edge.protocol import FrameHeader
from tests.helpers import ROOT, free_endpoint
from tests.system.line import Accounting, assert_every_frame_once, collect, serve, stop_process


@pytest.fixture(scope="module")
def native_build(tmp_path_factory) -> Path:
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed")
    build = tmp_path_factory.mktemp("native-build")
    configure = subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build)],
                               capture_output=True, text=True, timeout=300)
    assert configure.returncode == 0, configure.stderr
    built = subprocess.run(["cmake", "--build", str(build), "-j2"], capture_output=True,
                           text=True, timeout=600)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    build.joinpath("configure.log").write_text(configure.stdout)
    return build


def test_ctest_passes(native_build):
    result = subprocess.run(["ctest", "--test-dir", str(native_build), "--output-on-failure"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]


def test_header_bytes_identical_to_the_python_library(native_build):
    printed = subprocess.run([str(native_build / "frame_header_test"), "--print"],
                             capture_output=True, timeout=60, check=True).stdout
    expected = [
        FrameHeader("cam0", 42, 1764110000000000000, "mono8", (256, 1600)),
        FrameHeader('lane "2"\\é€😀', 0, 0, "bgr8", (8, 16, 3), line_position=12.5),
        FrameHeader("c", 18446744073709551615, 1, "png", (1, 1), line_position=100.0),
        FrameHeader("tab\there", 7, 7, "jpeg", (2, 3), line_position=1e-07,
                    stream_id="gige0-5f3a-1"),
    ]
    assert printed.splitlines() == [protocol.encode_header(h) for h in expected]


def bridge_binary(native_build: Path) -> Path:
    binary = native_build / "edge-camera-bridge"
    if not binary.exists():
        log = (native_build / "configure.log").read_text()
        reason = next((line for line in log.splitlines() if "skipping" in line),
                      "not built")
        pytest.skip(f"edge-camera-bridge was not built: {reason}")
    return binary


def test_bridge_help(native_build):
    result = subprocess.run([str(bridge_binary(native_build)), "--help"], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0 and "examples:" in result.stdout


@pytest.mark.slow
def test_fake_camera_frames_all_get_results(native_build, trained_bundle):
    binary = bridge_binary(native_build)
    fake = shutil.which("arv-fake-gv-camera-0.8")
    if fake is None:
        pytest.skip("Aravis's fake camera is not installed (Debian: aravis-tools)")
    camera = subprocess.Popen([fake, "-i", "127.0.0.1"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    events_endpoint = free_endpoint()
    events = zmq.Context.instance().socket(zmq.SUB)
    events.setsockopt(zmq.SUBSCRIBE, b"event")
    events.connect(events_endpoint)
    try:
        time.sleep(1.0)  # the fake camera opens its GVCP port
        assert camera.poll() is None, "the fake camera did not start"
        with serve(trained_bundle, "--max-batch", "8", "--report-gaps") as d:
            n = 20
            bridge = subprocess.run(
                [str(binary), "--camera", "127.0.0.1", "--endpoint", d.frames_in,
                 "--camera-id", "gige0", "--count", str(n), "--roi", "0,0,512,256",
                 "--frame-rate", "30", "--events", events_endpoint],
                capture_output=True, text=True, timeout=120)
            assert bridge.returncode == 0, bridge.stderr
            counts = dict(zip(bridge.stdout.split()[0::2],
                              map(int, bridge.stdout.split()[1::2]), strict=True))
            assert counts["sent"] == n
            book = collect(d.subscriber, n, into=Accounting())
            # Frame ids are the camera's own block ids: consecutive when nothing was lost
            # between camera and bridge (a gap would be a drop event here).
            ids = book.ids("results", "gige0")
            assert len(ids) == n and ids == list(range(ids[0], ids[0] + n))
            assert_every_frame_once(book, {("gige0", i) for i in ids})
            assert all(r["verdict"] in ("OK", "REJECT") for r in book.results)
            got_events = []
            while events.poll(200):
                got_events.append(protocol.decode_message(events.recv_multipart())[1])
            final = [e for e in got_events if e["kind"] == "stopped"]
            assert final and final[-1]["counters"]["sent"] == n
            assert "incomplete" in final[-1]["counters"]  # incomplete buffers are counted
    finally:
        events.close(linger=0)
        stop_process(camera, 10)
