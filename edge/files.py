"""Files written whole or not at all: a reader (another process, the next start after a
power cut) never sees half a file under its real name. Used for engines and their
sidecars, the timing cache and recorded frames."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_synced(folder: Path, prefix: str, data: bytes) -> Path:
    """`data` in a new file of `folder` with a unique temporary name (two processes may
    write at once), flushed to the disk; its path."""
    handle, name = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def write_file_atomically(path: Path, data: bytes) -> int:
    """`data` under `path`, replacing what was there in one rename; the bytes written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.replace(write_synced(path.parent, "." + path.name + ".", data), path)
    return len(data)
