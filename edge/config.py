"""The daemon's configuration: one schema for config files, `edge-serve`'s flags and the
model choice that edge-bench and edge-eval share.

A TOML file gives the base values (a `[serve]` table), command-line flags override them.
Unknown keys and out-of-range values are errors that name the key, so a typo never
silently falls back to a default on the line. Per-camera tables (`[serve.cameras.<id>]`)
override the camera settings (`overload`, `queue_size`, `roi`, `deadline_ms`, `thresholds`,
`min_area`, `rules`) for that camera; other cameras use the top-level values.

Each field's help text, flag name and choices live in its `setting(...)` metadata; the
command-line flags are generated from them (lineside.edge.cli.args), so a setting exists
once, with one default and one set of choices.
"""

from __future__ import annotations

import types
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import tomllib

from lineside.edge.variants import PRECISIONS


class ConfigError(ValueError):
    """A configuration value that is missing, unknown or out of range."""


OVERLOAD_POLICIES = ("block", "drop-oldest", "drop-newest")
INPUT_MODES = ("pull", "sub")
MASK_FORMATS = ("rle", "png")
VERDICTS = ("ERROR", "REJECT")
CURVE_SOCKETS = ("results", "input", "control")
# Inference backends, in the order `auto` tries them (lineside.edge.backends).
BACKENDS = ("tensorrt", "ort-trt", "ort-cuda", "ort-cpu")
BACKEND_CHOICES = ("auto", *BACKENDS)


def setting(default: Any = MISSING, *, help: str, flag: str = "",
            choices: tuple[Any, ...] | None = None, metavar: str = "", cli: bool = True,
            default_factory: Any = MISSING) -> Any:
    """A config field with what its command-line flag needs: help text, an optional flag
    name (default `--field-name`), choices and metavar; `cli=False` for file-only fields."""
    metadata = {"help": help, "flag": flag, "choices": choices, "metavar": metavar,
                "cli": cli}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class ClassRule:
    """When a class rejects a frame: area above `max_area` pixels (0: any defect) or more
    than `max_count` regions. `report_only` classes are reported but never reject."""

    max_area: int = 0
    max_count: int | None = None
    report_only: bool = False


@dataclass
class CameraSettings:
    overload: str = setting("block", choices=OVERLOAD_POLICIES,
                            help="what a full camera queue does: block (backpressure, "
                            "default), drop-oldest or drop-newest")
    queue_size: int = setting(8, help="frames waiting for inference, per camera")
    roi: list[int] | None = setting(None, cli=False,
                                    help="[x, y, width, height] cut before tiling")
    deadline_ms: float = setting(0.0, help="results later than this get the fail-safe "
                                 "verdict (0: off)")
    report_gaps: bool = setting(False, help="PULL mode: report ids missing from a camera's "
                                "count as drops (cameras that count without holes at the "
                                "source, such as edge-camera-bridge's camera block ids); "
                                "SUB mode always does")
    thresholds: dict[int, float] = setting(
        default_factory=dict, flag="--threshold", metavar="CLASS=P",
        help="override a class's probability threshold (repeatable)")
    min_area: dict[int, int] = setting(
        default_factory=dict, metavar="CLASS=PIXELS",
        help="override a class's minimum mask area (repeatable)")
    rules: dict[int, ClassRule] = setting(default_factory=dict, cli=False,
                                          help="per-class reject rules")

    def rule(self, class_id: int) -> ClassRule:
        return self.rules.get(class_id, ClassRule())


@dataclass
class ModelSettings:
    """Which model runs, where and how: the part of the config that edge-serve, edge-bench
    and edge-eval share (lineside.edge.pipeline.model composes the model from it)."""

    backend: str = setting("auto", choices=BACKEND_CHOICES,
                           help="inference backend; auto takes the first that loads of "
                           + ", ".join(BACKENDS))
    precision: str = setting("fp32", choices=PRECISIONS,
                             help="which of the bundle's models runs (lineside.edge.variants)")
    threads: int = setting(0, help="inference threads (0: the backend chooses)")
    max_batch: int = setting(8, help="tiles per inference call")
    screen: str = setting("", metavar="BUNDLE",
                          help="screening classifier bundle: segment only the tiles it flags")
    screen_precision: str = setting("", choices=("", *PRECISIONS),
                                    help="the classifier's precision (default: --precision)")
    screen_thresholds: dict[int, float] = setting(
        default_factory=dict, flag="--screen-threshold", metavar="CLASS=P",
        help="override a class's screening threshold (repeatable)")
    inject_faults: str = setting("", metavar="infer-every=N",
                                 help="TESTING ONLY: make every N-th inference call fail, to "
                                 "check that frames get ERROR verdicts and the daemon recovers")

    def validate_model(self) -> None:
        choices = {"backend": BACKEND_CHOICES, "precision": PRECISIONS,
                   "screen_precision": ("", *PRECISIONS)}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}: {getattr(self, name)!r} is not one of {allowed}")
        _check_range("threads", self.threads, 0, 256)
        _check_range("max_batch", self.max_batch, 1, 1024)
        for class_id, value in self.screen_thresholds.items():
            _check_range(f"screen_thresholds.{class_id}", value, 0, 1)
        if self.screen_thresholds and not self.screen:
            raise ConfigError("screen_thresholds needs screen (a classifier bundle)")
        if self.inject_faults:
            from lineside.edge.backends.fault_injection import parse_faults

            try:
                parse_faults(self.inject_faults)
            except ValueError as exc:
                raise ConfigError(f"inject_faults: {exc}") from None

    def model_settings(self) -> ModelSettings:
        """Only the model part (a ServeConfig is one too)."""
        return ModelSettings(**{f.name: getattr(self, f.name) for f in fields(ModelSettings)})


@dataclass
class ServeConfig(ModelSettings):
    bundle: str = setting("", cli=False, help="model bundle directory (from edge-export)")
    # Frames: PULL binds these endpoints; SUB connects to the cameras' PUB endpoints.
    input: list[str] = setting(default_factory=lambda: ["tcp://127.0.0.1:5555"],
                               metavar="ENDPOINT",
                               help="frames endpoint (repeatable): bound for PULL, connected "
                               "for SUB; default tcp://127.0.0.1:5555")
    input_mode: str = setting("pull", choices=INPUT_MODES,
                              help="pull (default, backpressure) or sub (camera broadcasts)")
    output: str = setting("tcp://127.0.0.1:5556", metavar="ENDPOINT",
                          help="endpoint to bind for results (PUB)")
    max_wait_ms: float = setting(2.0, help="how long a partial batch waits for more frames "
                                 "while the model is busy (an idle model never waits)")
    decide_workers: int = setting(0, help="post-processing threads (0: auto, a quarter of "
                                  "the cores, 1 to 4); results keep per-camera order")
    publish_masks: bool = setting(False, flag="--masks",
                                  help="also publish masks on the `mask` topic")
    mask_format: str = setting("rle", choices=MASK_FORMATS,
                               help="rle (per class) or png (label map)")
    heartbeat_s: float = setting(1.0, help="seconds between heartbeat events")
    stall_s: float = setting(5.0, help="a stage with work and no progress for this long is "
                             "stalled: the heartbeat says so and /healthz answers 503")
    stall_exit_s: float = setting(30.0, help="exit non-zero (for the supervisor to restart "
                                  "the daemon) after a stall this long; 0: never")
    failsafe_verdict: str = setting("ERROR", choices=VERDICTS,
                                    help="verdict for frames that fail or miss their deadline")
    metrics: str = setting("", metavar="HOST:PORT",
                           help="serve /metrics, /healthz, /readyz (e.g. 127.0.0.1:9100)")
    control: str = setting("", metavar="ENDPOINT",
                           help="REP socket for hot swap and status (e.g. tcp://127.0.0.1:5557)")
    bundle_root: str = setting("", metavar="DIR",
                               help="hot swaps load only bundles inside this directory "
                               "(default: the directory that holds the bundle)")
    http: str = setting("", metavar="HOST:PORT",
                        help="read-only operator web view (e.g. 127.0.0.1:8080); off by default")
    max_message_bytes: int = setting(64 * 1024 * 1024,
                                     help="larger input messages are refused by ZeroMQ")
    camera_ids: list[str] = setting(default_factory=list, flag="--camera-id",
                                    metavar="ID", help="accept frames only from these cameras "
                                    "(repeatable; default: any, up to --max-cameras)")
    max_cameras: int = setting(64, help="frames from more distinct cameras than this are "
                               "refused with an error event (bounds per-camera state)")
    # CURVE on the results socket, for gateways on other hosts (zmq.auth key files):
    curve_secret: str = setting("", metavar="FILE",
                                help="daemon secret key file: CURVE on the results socket "
                                "(for gateways on other hosts)")
    curve_clients: str = setting("", metavar="DIR",
                                 help="directory of allowed clients' public key files")
    curve_sockets: list[str] = setting(
        default_factory=lambda: ["results"], flag="--curve-socket", choices=CURVE_SOCKETS,
        help="which bound sockets run CURVE with --curve-secret (repeatable): results, "
        "input (PULL; cameras need the daemon's public key), control")
    # Learning from the line (docs/operations.md): record, shadow, promote, roll back.
    record: str = setting("", metavar="DIR",
                          help="record frames worth labelling into DIR: every REJECT and "
                          "ERROR, uncertain frames, a sample of OK ones (off by default)")
    record_ok_fraction: float = setting(0.05, help="fraction of OK frames recorded")
    record_band: float = setting(0.1, help="a frame is uncertain when a class's maximum "
                                 "probability (or presence) is this close to its threshold")
    record_rate: float = setting(0.0, help="recordings per second per camera at most "
                                 "(0: no limit; the quota still applies)")
    record_quota_mb: float = setting(2048.0, help="disk quota of the recording folder; the "
                                     "oldest recordings are deleted to stay within it")
    shadow: str = setting("", metavar="BUNDLE",
                          help="candidate bundle run beside the serving one on spare capacity; "
                          "its verdicts go to the `shadow` topic, never to the PLC")
    promote_min_frames: int = setting(200, help="`promote` needs the shadow model compared "
                                      "on at least this many frames")
    promote_min_agreement: float = setting(0.98, help="`promote` needs at least this verdict "
                                           "agreement between shadow and serving model")
    promote_min_dice: float = setting(0.9, help="`promote` needs at least this mean Dice "
                                      "of the shadow's masks against the serving model's")
    promote_dice_tolerance: float = setting(0.0, help="`promote` with a held-out folder "
                                            "needs the shadow's Dice there at least the "
                                            "serving model's minus this")
    rollback_keep_s: float = setting(600.0, help="after a swap or promote, keep the previous "
                                     "model loaded this long for an instant `rollback`")
    camera: CameraSettings = setting(default_factory=CameraSettings, cli=False,
                                     help="defaults for every camera")
    cameras: dict[str, CameraSettings] = setting(default_factory=dict, cli=False,
                                                 help="per-camera overrides")

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
        self.validate_model()
        choices = {"input_mode": INPUT_MODES, "mask_format": MASK_FORMATS,
                   "failsafe_verdict": VERDICTS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}: {getattr(self, name)!r} is not one of {allowed}")
        bounds = {"max_wait_ms": (0, 10_000), "heartbeat_s": (0.05, 3600),
                  "decide_workers": (0, 64),
                  "stall_s": (0.1, 3600), "stall_exit_s": (0, 86_400),
                  "max_cameras": (1, 100_000), "record_ok_fraction": (0, 1),
                  "record_band": (0, 1), "record_rate": (0, 100_000),
                  "record_quota_mb": (1, 1e9), "promote_min_frames": (0, 10**9),
                  "promote_min_agreement": (0, 1), "promote_min_dice": (0, 1),
                  "promote_dice_tolerance": (0, 1),
                  "rollback_keep_s": (0, 86_400 * 7),
                  "max_message_bytes": (1024, 2**31)}
        for name, (low, high) in bounds.items():
            _check_range(name, getattr(self, name), low, high)
        if self.curve_clients and not self.curve_secret:
            raise ConfigError("curve_clients needs curve_secret (the daemon's key file)")
        unknown = sorted(set(self.curve_sockets) - set(CURVE_SOCKETS))
        if unknown:
            raise ConfigError(f"curve_sockets: {unknown} are not among {CURVE_SOCKETS}")
        if "input" in self.curve_sockets and self.curve_secret and self.input_mode == "sub":
            raise ConfigError("curve_sockets: input runs CURVE only in pull mode (in sub "
                              "mode the daemon connects to the cameras)")
        for name in ("curve_secret", "curve_clients", "bundle_root", "shadow"):
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

    def bundles_allowed(self) -> Path:
        """The directory hot swaps may load bundles from."""
        return Path(self.bundle_root or Path(self.bundle).resolve().parent).resolve()

    def curve_on(self, socket: str) -> bool:
        return bool(self.curve_secret) and socket in self.curve_sockets


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

