"""The daemon's configuration: one schema shared by `edge-serve`'s flags and config files.

A TOML file gives the base values, command-line flags override them; unknown keys and
out-of-range values are errors that name the key, so a typo never silently falls back to
a default on the line.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import tomllib


class ConfigError(ValueError):
    """A configuration value that is missing, unknown or out of range."""


@dataclass
class ServeConfig:
    bundle: str = ""
    # The daemon binds both sockets; cameras PUSH to `input`, gateways SUB to `output`.
    input: str = "tcp://127.0.0.1:5555"
    output: str = "tcp://127.0.0.1:5556"
    backend: str = "auto"
    precision: str = "fp32"
    threads: int = 0  # inference threads; 0 lets the backend choose
    max_batch: int = 8  # tiles per inference call
    max_wait_ms: float = 2.0  # how long a partial batch waits for more frames
    queue_size: int = 8  # frames between stages (backpressure beyond this)
    publish_masks: bool = False  # `mask` topic (per-class RLE); off by default for bandwidth
    heartbeat_s: float = 1.0
    # Per-class overrides of the bundle's post-processing, keyed by class id.
    thresholds: dict[int, float] = field(default_factory=dict)
    min_area: dict[int, int] = field(default_factory=dict)
    # Reject when a class's area exceeds this many pixels (0, the default: any defect).
    max_area: dict[int, int] = field(default_factory=dict)

    def validate(self) -> ServeConfig:
        if not self.bundle:
            raise ConfigError("bundle: a model bundle directory is required")
        for name in ("input", "output"):
            value = getattr(self, name)
            if not value.startswith(("tcp://", "ipc://", "inproc://")):
                raise ConfigError(f"{name}: {value!r} is not a ZeroMQ endpoint (tcp://HOST:PORT)")
        if self.precision not in ("fp32", "fp16", "int8"):
            raise ConfigError(f"precision: {self.precision!r} is not fp32, fp16 or int8")
        bounds = {"threads": (0, 256), "max_batch": (1, 1024), "max_wait_ms": (0, 10_000),
                  "queue_size": (1, 100_000), "heartbeat_s": (0.05, 3600)}
        for name, (low, high) in bounds.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise ConfigError(f"{name}: {value} is outside [{low}, {high}]")
        for name in ("thresholds", "min_area", "max_area"):
            table = getattr(self, name)
            for key, value in table.items():
                if value < 0 or (name == "thresholds" and value > 1):
                    raise ConfigError(f"{name}.{key}: {value} is out of range")
        return self


_CLASS_TABLES = ("thresholds", "min_area", "max_area")


def _coerce(values: dict[str, Any]) -> dict[str, Any]:
    known = {f.name for f in fields(ServeConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown setting(s) {unknown}; known: {sorted(known)}")
    out = dict(values)
    for name in _CLASS_TABLES:
        if name in out:
            try:
                out[name] = {int(k): v for k, v in out[name].items()}
            except (ValueError, AttributeError):
                raise ConfigError(f"{name}: keys must be class ids, e.g. {name}.1 = ...") from None
    return out


def load_config(path: str | Path | None, overrides: dict[str, Any]) -> ServeConfig:
    """Config from an optional TOML file, then flag overrides (None means not given)."""
    values: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as handle:
                values = tomllib.load(handle)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
        values = values.get("serve", values)
    values = _coerce(values)
    for key, value in _coerce({k: v for k, v in overrides.items() if v is not None}).items():
        if key in _CLASS_TABLES:
            values.setdefault(key, {}).update(value)
        else:
            values[key] = value
    return ServeConfig(**values).validate()
