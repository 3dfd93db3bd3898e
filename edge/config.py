"""The daemon's configuration: one schema shared by `edge-serve`'s flags and config files.

A TOML file gives the base values (a `[serve]` table), command-line flags override them.
Unknown keys and out-of-range values are errors that name the key, so a typo never
silently falls back to a default on the line. Per-camera tables (`[serve.cameras.<id>]`)
override the camera settings (`overload`, `queue_size`, `roi`, `deadline_ms`, `thresholds`,
`min_area`, `rules`) for that camera; other cameras use the top-level values.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import tomllib


class ConfigError(ValueError):
    """A configuration value that is missing, unknown or out of range."""


OVERLOAD_POLICIES = ("block", "drop-oldest", "drop-newest")
INPUT_MODES = ("pull", "sub")
MASK_FORMATS = ("rle", "png")
VERDICTS = ("ERROR", "REJECT")
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class ClassRule:
    """When a class rejects a frame: area above `max_area` pixels (0: any defect) or more
    than `max_count` regions. `report_only` classes are reported but never reject."""

    max_area: int = 0
    max_count: int | None = None
    report_only: bool = False


@dataclass
class CameraSettings:
    overload: str = "block"  # block (backpressure) | drop-oldest | drop-newest
    queue_size: int = 8  # frames waiting for inference, per camera
    roi: list[int] | None = None  # [x, y, width, height] cut before tiling
    deadline_ms: float = 0.0  # results later than this get the fail-safe verdict (0: off)
    thresholds: dict[int, float] = field(default_factory=dict)  # override the bundle's
    min_area: dict[int, int] = field(default_factory=dict)  # override the bundle's
    rules: dict[int, ClassRule] = field(default_factory=dict)

    def rule(self, class_id: int) -> ClassRule:
        return self.rules.get(class_id, ClassRule())


@dataclass
class ServeConfig:
    bundle: str = ""
    # Frames: PULL binds these endpoints; SUB connects to the cameras' PUB endpoints.
    input: list[str] = field(default_factory=lambda: ["tcp://127.0.0.1:5555"])
    input_mode: str = "pull"
    output: str = "tcp://127.0.0.1:5556"  # PUB, bound
    backend: str = "auto"
    precision: str = "fp32"
    threads: int = 0  # inference threads; 0 lets the backend choose
    # Screening classifier bundle: only tiles it flags are segmented ("" = off).
    screen: str = ""
    screen_precision: str = ""  # the classifier's precision ("" = same as `precision`)
    screen_thresholds: dict[int, float] = field(default_factory=dict)  # override its tuned ones
    max_batch: int = 8  # tiles per inference call
    max_wait_ms: float = 2.0  # how long a partial batch waits for more frames
    publish_masks: bool = False  # `mask` topic; off by default for bandwidth
    mask_format: str = "rle"  # rle (per class) | png (label map)
    heartbeat_s: float = 1.0
    failsafe_verdict: str = "ERROR"  # verdict for frames that fail or miss their deadline
    metrics: str = ""  # HOST:PORT for /metrics, /healthz, /readyz ("" = off)
    control: str = ""  # REP endpoint for hot swap and status ("" = off)
    http: str = ""  # HOST:PORT of the read-only operator view ("" = off)
    inject_faults: str = ""  # testing only: "infer-every=N" makes every N-th batch fail
    max_message_bytes: int = 64 * 1024 * 1024  # larger input messages are refused by ZeroMQ
    # CURVE on the results socket, for gateways on other hosts (zmq.auth key files):
    curve_secret: str = ""  # the daemon's secret key file (.key_secret)
    curve_clients: str = ""  # directory of allowed gateways' public keys (.key)
    camera: CameraSettings = field(default_factory=CameraSettings)  # defaults, all cameras
    cameras: dict[str, CameraSettings] = field(default_factory=dict)  # per-camera overrides

    def for_camera(self, camera_id: str) -> CameraSettings:
        return self.cameras.get(camera_id, self.camera)

    def validate(self) -> ServeConfig:
        if not self.bundle:
            raise ConfigError("bundle: a model bundle directory is required")
        for value in [*self.input, self.output] + ([self.control] if self.control else []):
            if not value.startswith(("tcp://", "ipc://", "inproc://")):
                raise ConfigError(f"{value!r} is not a ZeroMQ endpoint (tcp://HOST:PORT)")
        if not self.input:
            raise ConfigError("input: at least one endpoint is required")
        choices = {"input_mode": INPUT_MODES, "mask_format": MASK_FORMATS,
                   "failsafe_verdict": VERDICTS, "precision": PRECISIONS,
                   "screen_precision": ("", *PRECISIONS)}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}: {getattr(self, name)!r} is not one of {allowed}")
        bounds = {"threads": (0, 256), "max_batch": (1, 1024), "max_wait_ms": (0, 10_000),
                  "heartbeat_s": (0.05, 3600), "max_message_bytes": (1024, 2**31)}
        for name, (low, high) in bounds.items():
            _check_range(name, getattr(self, name), low, high)
        for class_id, value in self.screen_thresholds.items():
            _check_range(f"screen_thresholds.{class_id}", value, 0, 1)
        if self.screen_thresholds and not self.screen:
            raise ConfigError("screen_thresholds needs screen (a classifier bundle)")
        if self.curve_clients and not self.curve_secret:
            raise ConfigError("curve_clients needs curve_secret (the daemon's key file)")
        for name in ("curve_secret", "curve_clients"):
            value = getattr(self, name)
            if value and not Path(value).exists():
                raise ConfigError(f"{name}: {value} does not exist")
        for name in ("metrics", "http"):
            value = getattr(self, name)
            host, _, port = value.rpartition(":")
            if value and (not host or not port.isdigit()):
                raise ConfigError(f"{name}: {value!r} is not HOST:PORT")
        for camera_id, settings in [("camera", self.camera), *self.cameras.items()]:
            _validate_camera(camera_id, settings)
        return self


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ConfigError(f"{name}: {value} is outside [{low}, {high}]")


def _validate_camera(camera_id: str, settings: CameraSettings) -> None:
    where = f"cameras.{camera_id}" if camera_id != "camera" else "camera"
    if settings.overload not in OVERLOAD_POLICIES:
        raise ConfigError(f"{where}.overload: {settings.overload!r} is not one of "
                          f"{OVERLOAD_POLICIES}")
    _check_range(f"{where}.queue_size", settings.queue_size, 1, 100_000)
    _check_range(f"{where}.deadline_ms", settings.deadline_ms, 0, 3_600_000)
    if settings.roi is not None and (len(settings.roi) != 4 or min(settings.roi) < 0
                                     or min(settings.roi[2:]) < 1):
        raise ConfigError(f"{where}.roi: expected [x, y, width, height], got {settings.roi}")
    for class_id, value in settings.thresholds.items():
        _check_range(f"{where}.thresholds.{class_id}", value, 0, 1)
    for class_id, value in settings.min_area.items():
        _check_range(f"{where}.min_area.{class_id}", value, 0, 2**31)
    for class_id, rule in settings.rules.items():
        _check_range(f"{where}.rules.{class_id}.max_area", rule.max_area, 0, 2**31)
        if rule.max_count is not None:
            _check_range(f"{where}.rules.{class_id}.max_count", rule.max_count, 0, 2**31)


def build_dataclass(cls: type, values: Any, where: str) -> Any:
    """Build dataclass `cls` from plain TOML/flag values, with errors that name the key."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'config'}: expected a table, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown setting(s) {unknown}; "
                          f"known: {sorted(known)}")
    return cls(**{name: _convert(hints[name], value, f"{where}.{name}".lstrip("."))
                  for name, value in values.items()})


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if is_dataclass(hint):
        return build_dataclass(hint, value, where)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        key_type, value_type = args
        out = {}
        for key, item in value.items():
            try:
                converted_key = key_type(key)
            except ValueError:
                raise ConfigError(f"{where}: key {key!r} must be a {key_type.__name__} "
                                  "(class ids are integers)") from None
            out[converted_key] = _convert(value_type, item, f"{where}.{key}")
        return out
    if origin is list:
        if isinstance(value, str) and args[0] is str:
            return [value]  # one endpoint may be given without a list
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_convert(args[0], item, where) for item in value]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and (not isinstance(value, hint)
                                           or (hint is int and isinstance(value, bool))):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


CAMERA_KEYS = {f.name for f in fields(CameraSettings)}


def read_toml_table(path: str | Path, table: str) -> dict[str, Any]:
    """The `[table]` of a TOML file (or the whole file when it has no such table)."""
    try:
        with open(path, "rb") as handle:
            values = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    return dict(values.get(table, values))


def load_config(path: str | Path | None, overrides: dict[str, Any]) -> ServeConfig:
    """Config from an optional TOML file, then flag overrides (None means not given).

    Camera settings may sit at the top of `[serve]` (they become the defaults for every
    camera) or in `[serve.cameras.<id>]` (one camera, on top of the defaults).
    """
    values = read_toml_table(path, "serve") if path else {}
    for key, value in overrides.items():
        if value is None:
            continue
        if key in CAMERA_KEYS and isinstance(value, dict):
            values.setdefault(key, {}).update(value)  # per-class tables merge
        else:
            values[key] = value
    camera_values = {k: values.pop(k) for k in list(values) if k in CAMERA_KEYS}
    per_camera = values.pop("cameras", {})
    config = build_dataclass(ServeConfig, values, "")
    config.camera = build_dataclass(CameraSettings, camera_values, "camera")
    if not isinstance(per_camera, dict):
        raise ConfigError("cameras: expected a table of camera ids")
    for camera_id, table in per_camera.items():
        override = build_dataclass(CameraSettings, table, f"cameras.{camera_id}")
        merged = replace(config.camera, **{k: getattr(override, k) for k in table})
        for name in ("thresholds", "min_area", "rules"):  # per-class tables merge
            if name in table:
                setattr(merged, name, {**getattr(config.camera, name), **getattr(override, name)})
        config.cameras[camera_id] = merged
    return config.validate()

