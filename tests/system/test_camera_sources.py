"""edge-camera as its own process into a real edge-serve on 127.0.0.1: a generated video
file, a watched hot folder and a live HTTP MJPEG stream that drops and comes back (a
network camera rebooting), every frame accounted for; RTSP where a local server exists."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq

from lineside.edge.sources.folder import WatchedFolder
from tests.helpers import free_endpoint
from tests.system.line import assert_every_frame_once, collect, serve, stop_process

pytestmark = pytest.mark.slow

SHAPE = (256, 512)


def camera(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lineside.edge.cli.camera", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def picture(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    return cv2.GaussianBlur(rng.integers(40, 200, SHAPE, dtype=np.uint8), (5, 5), 0)


def test_a_video_file_is_replayed_with_every_frame_accounted(trained_bundle, tmp_path):
    video = tmp_path / "line.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25,
                             (SHAPE[1], SHAPE[0]), isColor=False)
    assert writer.isOpened(), "OpenCV cannot write MJPG video here"
    for i in range(30):
        writer.write(picture(i))
    writer.release()
    with serve(trained_bundle) as d:
        proc = camera(str(video), "--to", d.frames_in, "--camera-id", "lane1",
                      "--first-frame-id", "100")
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "sent 30" in out
        book = collect(d.subscriber, 30)
        assert_every_frame_once(book, {("lane1", 100 + i) for i in range(30)})
        assert all(r["verdict"] in ("OK", "REJECT") for r in book.results)


def test_a_folder_is_replayed_in_name_order(trained_bundle, tmp_path):
    """A recording's images/ (LabelMe drafts beside the frames) replays like any folder:
    each image once, JPEG/PNG bytes as they are, other formats decoded."""
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(4):
        cv2.imwrite(str(folder / f"{i:02d}.png"), picture(i))
        (folder / f"{i:02d}.json").write_text(json.dumps({"shapes": [],
                                                          "imagePath": f"{i:02d}.png"}))
    cv2.imwrite(str(folder / "04.bmp"), picture(4))
    (folder / "04.json").write_text(json.dumps({"shapes": [], "imagePath": "04.bmp"}))
    with serve(trained_bundle) as d:
        proc = camera(str(folder), "--to", d.frames_in, "--fps", "20")
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0 and "sent 5" in out, err
        book = collect(d.subscriber, 5)
        assert_every_frame_once(book, {("cam0", i) for i in range(5)})
        assert book.errors == []


def test_a_watched_folder_sends_each_file_once_when_written(trained_bundle, tmp_path):
    hot = tmp_path / "hot"
    hot.mkdir()
    cv2.imwrite(str(hot / "000_before.png"), picture(0))  # there before the start: sent
    with serve(trained_bundle) as d:
        proc = camera(str(hot), "--watch", "--to", d.frames_in, "--camera-id", "scan",
                      "--settle-s", "0.3")
        try:
            for i in range(1, 8):
                cv2.imwrite(str(tmp_path / "tmp.png"), picture(i))
                shutil.move(tmp_path / "tmp.png", hot / f"{i:03d}.png")  # as writers do
                time.sleep(0.1)
            # A file written slowly, in pieces: sent once, complete.
            data = cv2.imencode(".png", picture(8))[1].tobytes()
            with open(hot / "008_slow.png", "wb") as handle:
                for k in range(0, len(data), len(data) // 4 + 1):
                    handle.write(data[k:k + len(data) // 4 + 1])
                    handle.flush()
                    time.sleep(0.1)
            (hot / "notes.txt").write_text("not an image")
            book = collect(d.subscriber, 9, timeout_s=60)
            assert_every_frame_once(book, {("scan", i) for i in range(9)})
            assert book.errors == []  # the slow file was never sent half-written
            time.sleep(1.0)
            assert collect(d.subscriber, 1, timeout_s=1.0).accounted == 0  # each file once
        finally:
            stop_process(proc, 20)
        assert proc.returncode == 0, proc.stderr.read()


def test_watched_folder_waits_until_a_file_settles(tmp_path):
    watched = WatchedFolder(tmp_path, settle_s=1.0)
    (tmp_path / "a.png").write_bytes(b"x" * 10)
    assert watched.ready(0.0) == []  # first seen
    assert watched.ready(0.5) == []  # not settled yet
    (tmp_path / "a.png").write_bytes(b"x" * 20)  # still growing
    assert watched.ready(0.9) == []
    assert watched.ready(1.5) == []  # changed at 0.9: settles at 1.9
    assert watched.ready(2.0) == [tmp_path / "a.png"]
    assert watched.ready(5.0) == []  # once
    (tmp_path / "a.png").unlink()
    assert watched.ready(6.0) == []
    (tmp_path / "a.png").write_bytes(b"y" * 5)  # a new file under the old name
    watched.ready(7.0)
    assert watched.ready(8.5) == [tmp_path / "a.png"]


class MjpegCamera:
    """An HTTP MJPEG network camera on 127.0.0.1 whose stream drops after
    `frames_per_connection` frames, as a camera that reboots does."""

    def __init__(self, frames_per_connection: int) -> None:
        self.served = 0
        self.connections = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                owner.connections += 1
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                for _ in range(frames_per_connection):
                    jpeg = cv2.imencode(".jpg", picture(owner.served))[1].tobytes()
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                     b"Content-Length: %d\r\n\r\n" % len(jpeg) + jpeg + b"\r\n")
                    owner.served += 1
                    time.sleep(0.02)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/stream.mjpg"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> MjpegCamera:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_dropped_stream_is_reconnected_and_every_frame_accounted(trained_bundle):
    events_at = free_endpoint()
    with MjpegCamera(frames_per_connection=10) as source, serve(trained_bundle) as d:
        listener = zmq.Context.instance().socket(zmq.SUB)
        listener.setsockopt(zmq.SUBSCRIBE, b"event")
        listener.connect(events_at)
        proc = camera(source.url, "--to", d.frames_in, "--camera-id", "ipcam", "--count",
                      "25", "--reconnect-s", "0.2", "--events", events_at)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        kinds = []
        with contextlib.closing(listener):
            while listener.poll(500):
                kinds.append(json.loads(listener.recv_multipart()[1])["kind"])
        book = collect(d.subscriber, 25)
        assert_every_frame_once(book, {("ipcam", i) for i in range(25)})
        assert source.connections >= 3  # two drops, two reconnects
        assert err.count("reconnected after") >= 2
        # The drops reached the events socket (PUB may drop what precedes the join).
        assert {"lost", "reconnected"} <= set(kinds) <= {"opened", "lost", "reconnected",
                                                         "stopped"}


SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, where python3-gi puts PyGObject


def rtsp_server_missing() -> str:
    """Why a local RTSP server cannot be started here ("" when it can)."""
    probe = ("import gi; gi.require_version('GstRtspServer', '1.0'); "
             "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
             "assert all(Gst.ElementFactory.find(e) for e in "
             "('videotestsrc', 'jpegenc', 'rtpjpegpay'))")
    try:
        result = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"no system Python for GStreamer's RTSP server: {exc}"
    if result.returncode:
        return ("no local RTSP server: needs Debian's gir1.2-gst-rtsp-server-1.0, "
                "gstreamer1.0-plugins-good and python3-gi (.ci/run installs them)")
    return ""


@pytest.mark.skipif(bool(rtsp_server_missing()), reason=rtsp_server_missing() or "-")
def test_an_rtsp_stream_reaches_the_daemon(trained_bundle):
    port = free_endpoint().rsplit(":", 1)[1]
    server = subprocess.Popen([SYSTEM_PYTHON, str(Path(__file__).parent / "rtsp_server.py"),
                               port], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        assert server.stdout.readline().strip() == "ready", server.stderr.read()
        with serve(trained_bundle) as d:
            proc = camera(f"rtsp://127.0.0.1:{port}/line", "--to", d.frames_in,
                          "--camera-id", "rtsp", "--count", "20", "--max-reconnects", "3")
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0 and "sent 20" in out, err
            book = collect(d.subscriber, 20)
            assert_every_frame_once(book, {("rtsp", i) for i in range(20)})
    finally:
        stop_process(server, 5)


def test_a_source_that_cannot_be_opened_is_a_clear_error(tmp_path):
    (tmp_path / "not-a-video.avi").write_text("hello")
    proc = camera(str(tmp_path / "not-a-video.avi"), "--to", free_endpoint())
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "cannot open" in err
    assert Path(tmp_path / "not-a-video.avi").exists()
