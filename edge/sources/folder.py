"""Folder sources: images replayed in name order (any layout lineside.edge.labels reads),
or a hot folder watched for new files, as an inspection machine writes them (weld-nugget
ultrasonic scans arrive that way). JPEG and PNG files travel as their own bytes, as a
camera that compresses on board sends them; other images are decoded to grey."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import cv2

from lineside.edge.labels import is_image, list_images
from lineside.edge.sources import SourceEvent, SourceFrame

log = logging.getLogger("lineside.edge.sources")

OWN_BYTES = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png"}


def file_frame(path: Path, encoding: str = "auto") -> SourceFrame | None:
    """One image file as a frame, None when OpenCV cannot read it. `encoding`: "auto"
    sends JPEG/PNG files as they are and decodes the rest; "mono8" always decodes (raw
    pixels); "jpeg"/"png" send files already in that format as they are and re-encode
    the rest on the way (edge-camera, edge-camsim)."""
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        return None
    own = OWN_BYTES.get(path.suffix.lower())
    stamp = time.time_ns()
    if own is not None and encoding in ("auto", own):
        return SourceFrame(None, stamp, path.read_bytes(), own, image.shape, path.name)
    return SourceFrame(image, stamp, shape=image.shape, name=path.name,
                       encoding="mono8" if encoding == "auto" else encoding)


class FolderSource:
    """Every image of a folder once in name order (again and again with `loop`)."""

    def __init__(self, root: Path, loop: bool = False, encoding: str = "auto") -> None:
        self.root, self.loop, self.encoding = root, loop, encoding
        self.stopped = False

    def frames(self) -> Iterator[SourceFrame | SourceEvent]:
        images = list_images(self.root)
        yield SourceEvent("opened", f"{len(images)} image(s) in {self.root}")
        while not self.stopped:
            for path in images:
                if self.stopped:
                    return
                frame = file_frame(path, self.encoding)
                if frame is None:
                    yield SourceEvent("skipped", f"OpenCV cannot read {path}")
                    continue
                yield frame
            if not self.loop:
                yield SourceEvent("ended", f"all {len(images)} image(s) of {self.root} sent")
                return

    def stop(self) -> None:
        self.stopped = True

    def close(self) -> None:
        pass


class WatchedFolder:
    """Each image that appears in a folder, once, oldest first. A file counts as
    written when its size and modification time have not changed for `settle_s` (a
    writer still copying it is not read half-way). Files there at the start are sent
    too; names are remembered while the file exists."""

    def __init__(self, root: Path, settle_s: float = 0.5, poll_s: float = 0.2,
                 encoding: str = "auto") -> None:
        self.root, self.settle_s, self.poll_s, self.encoding = root, settle_s, poll_s, encoding
        self._seen: set[str] = set()
        self._pending: dict[str, tuple[int, int, float]] = {}  # name -> size, mtime, since
        self.stopped = False

    def ready(self, now: float) -> list[Path]:
        """Files that have settled since the last call, oldest first."""
        present = {}
        for path in self.root.iterdir():
            if not (path.is_file() and is_image(path)) or path.name.startswith("."):
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:  # removed between listing and stat
                continue
            present[path.name] = (path, stat.st_size, stat.st_mtime_ns)
        self._seen &= set(present)  # a name may come again once its file was removed
        done = []
        for name, (path, size, mtime) in present.items():
            if name in self._seen:
                continue
            previous = self._pending.get(name)
            if previous is None or previous[:2] != (size, mtime):
                self._pending[name] = (size, mtime, now)
            elif now - previous[2] >= self.settle_s and size > 0:
                done.append((mtime, name, path))
        for _, name, _ in done:
            self._pending.pop(name, None)
            self._seen.add(name)
        for name in set(self._pending) - set(present):
            del self._pending[name]
        return [path for _, _, path in sorted(done)]

    def frames(self) -> Iterator[SourceFrame | SourceEvent]:
        yield SourceEvent("opened", f"watching {self.root} for new images")
        while not self.stopped:
            for path in self.ready(time.monotonic()):
                frame = file_frame(path, self.encoding)
                if frame is None:
                    yield SourceEvent("skipped", f"OpenCV cannot read {path}")
                else:
                    yield frame
            time.sleep(self.poll_s)

    def stop(self) -> None:
        self.stopped = True

    def close(self) -> None:
        self.stopped = True
