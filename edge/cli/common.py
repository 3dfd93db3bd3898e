"""What every `edge-*` command shares: help formatting and logging set-up."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from typing import TypeVar

from lineside.edge.config import ConfigError

Value = TypeVar("Value")


def parser(prog: str, description: str, examples: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog=prog, description=description, epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter)


def class_values(pairs: list[str] | None, cast: Callable[[str], Value] = float,
                 flag: str = "") -> dict[int, Value]:
    """`["3=0.4", "4=0.6"]` (a repeatable CLASS=VALUE flag) -> `{3: 0.4, 4: 0.6}`."""
    values: dict[int, Value] = {}
    for pair in pairs or []:
        key, _, value = pair.partition("=")
        try:
            values[int(key)] = cast(value)
        except ValueError:
            raise ConfigError(
                f"{flag or 'class value'}: expected CLASS=VALUE with an integer class id, "
                f"got {pair!r}") from None
    return values


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per log record, for journald/Loki/Elastic pipelines."""

    def format(self, record: logging.LogRecord) -> str:
        body = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
                "logger": record.name, "thread": record.threadName,
                "message": record.getMessage()}
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body)


def setup_logging(verbose: bool = False, json_lines: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLinesFormatter() if json_lines else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
