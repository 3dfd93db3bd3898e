"""A stage's thread: runs its loop, keeps the first error, and stops the rest on it
(Savant's worker idea). The daemon's health is its workers' health."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("lineside.edge.pipeline")


class Workers:
    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.threads: list[threading.Thread] = []
        self.first_error: BaseException | None = None

    def start(self, name: str, loop: Callable[[], None]) -> None:
        def run() -> None:
            try:
                loop()
            except BaseException as exc:  # keep the first error; stop the others
                log.exception("stage %s failed", name)
                self.first_error = self.first_error or exc
                self.stop.set()

        thread = threading.Thread(target=run, name=f"edge-{name}", daemon=True)
        thread.start()
        self.threads.append(thread)

    def healthy(self) -> bool:
        return bool(self.threads) and all(t.is_alive() for t in self.threads) \
            and self.first_error is None

    def alive(self) -> list[str]:
        """Names of the stage threads still running."""
        return [t.name for t in self.threads if t.is_alive()]

    def join(self, deadline: float | None) -> None:
        """Wait for every stage thread, until `deadline` (time.monotonic()) at most."""
        for thread in self.threads:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(remaining)
