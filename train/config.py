"""Training configuration: a YAML or JSON file per architecture, overridable from the CLI.

`edge-train --config configs/unet_r34.yaml epochs=3 optimizer.lr=1e-3 data=/data/steel`
reads the file, applies `key=value` overrides (dotted keys reach into tables; values are
parsed as YAML scalars, so `3` is an int and `true` a bool), and validates the result:
unknown keys and impossible values are errors that name the key.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lineside.edge.config import ConfigError, build_dataclass

LOSSES = ("bce_dice", "bce", "dice", "focal", "tversky", "focal_tversky", "lovasz")
OPTIMIZERS = ("adam", "adamw")
SCHEDULERS = ("cosine", "plateau", "none")


@dataclass
class ModelSettings:
    architecture: str = "mini_unet"
    encoder_name: str | None = None  # smp encoders: resnet18/34/50, efficientnet-b0, mit_b0...
    encoder_weights: str | None = None  # a local file only; nothing is downloaded
    in_channels: int = 1  # 1 (grey) or 3 (grey replicated, for pretrained RGB encoders)
    widths: list[int] | None = None  # MiniUNet only
    norm: str = "batch"  # MiniUNet only: batch | group (exact under CPU DDP)
    gate: bool = False  # per-class presence head (defect/no-defect gate), all architectures
    downsample: int = 1  # classifier only: average-pool the input by this factor first


@dataclass
class OptimizerSettings:
    name: str = "adam"
    lr: float = 5e-3
    weight_decay: float = 0.0
    scheduler: str = "cosine"
    plateau_patience: int = 2


@dataclass
class Augmentation:
    hflip: float = 0.5
    vflip: float = 0.5
    rotate_deg: float = 0.0  # small rotations, applied identically to image and masks
    translate_px: int = 0
    brightness: float = 0.0  # +- fraction of full scale
    contrast: float = 0.0  # +- fraction
    noise_std: float = 0.0  # grey levels


@dataclass
class TrainConfig:
    data: str = ""
    out: str = ""
    model: ModelSettings = field(default_factory=ModelSettings)
    optimizer: OptimizerSettings = field(default_factory=OptimizerSettings)
    augment: Augmentation = field(default_factory=Augmentation)
    loss: str = "bce_dice"
    gate_weight: float = 0.2  # weight of the presence head's BCE in the loss
    epochs: int = 20
    max_minutes: float = 0.0  # stop after the epoch that passes this much time (0: none)
    early_stopping: int = 0  # stop after this many epochs without a better val Dice (0: off)
    batch_size: int = 4
    crop: list[int] = field(default_factory=lambda: [256, 256])
    tile: list[int] = field(default_factory=lambda: [256, 256])  # what the runtime feeds
    samples_per_epoch: int = 128
    defect_share: float = 0.5  # share of crops centred on a defect
    class_weights: list[float] = field(default_factory=list)  # which class those show
    # (empty: as often as strips hold it; [1, 1, 1, 1]: rare classes as often as common)
    workers: int = 2  # DataLoader processes decoding and augmenting (0: in the trainer)
    cache_dir: str = ""  # keep decoded strips here for later epochs ("" : decode each time)
    val_fraction: float = 0.15
    test_fraction: float = 0.0  # stratified held-out test split, scored once at the end
    folds: int = 0  # k-fold: split into `folds` parts ...
    fold: int = 0  # ... and validate on this one
    seed: int = 0
    limit: int = 0  # use only the first N strips (0: all)
    class_ids: list[int] = field(default_factory=lambda: [1, 2, 3, 4])
    label_names: dict[str, int] = field(default_factory=dict)  # LabelMe label -> class id
    resize: list[int] | None = None  # [height, width] for images of differing sizes
    amp: bool = True  # mixed precision, on CUDA only
    channels_last: bool = True  # on CUDA only
    resume: bool = False  # continue from `out`'s last checkpoint when it exists
    init: str = ""  # start from this lineside checkpoint's weights (fine-tuning)

    def validate(self) -> TrainConfig:
        if not self.data:
            raise ConfigError("data: a training data folder is required")
        if not self.out:
            raise ConfigError("out: a checkpoint path is required")
        if self.init and not Path(self.init).is_file():
            raise ConfigError(f"init: {self.init} does not exist")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss: {self.loss!r} is not one of {LOSSES}")
        if self.optimizer.name not in OPTIMIZERS:
            raise ConfigError(f"optimizer.name: {self.optimizer.name!r} not in {OPTIMIZERS}")
        if self.optimizer.scheduler not in SCHEDULERS:
            raise ConfigError(f"optimizer.scheduler: {self.optimizer.scheduler!r} not in "
                              f"{SCHEDULERS}")
        if self.model.in_channels not in (1, 3):
            raise ConfigError("model.in_channels: 1 or 3")
        for name in ("crop", "tile"):
            value = getattr(self, name)
            if len(value) != 2 or min(value) < 8 or any(v % 8 for v in value):
                raise ConfigError(f"{name}: [height, width], multiples of 8, got {value}")
        if self.folds and not 0 <= self.fold < self.folds:
            raise ConfigError(f"fold: {self.fold} is not in [0, {self.folds})")
        if not 0 < self.val_fraction < 1 and not self.folds:
            raise ConfigError("val_fraction: must be in (0, 1)")
        if not 0 <= self.test_fraction < 0.5:
            raise ConfigError("test_fraction: must be in [0, 0.5)")
        if self.workers < 0:
            raise ConfigError("workers: 0 or more")
        if self.class_weights and (len(self.class_weights) != len(self.class_ids)
                                   or min(self.class_weights) < 0):
            raise ConfigError(f"class_weights: one weight >= 0 per class of {self.class_ids}")
        if self.epochs < 1 or self.batch_size < 1 or self.samples_per_epoch < 1:
            raise ConfigError("epochs, batch_size and samples_per_epoch must be positive")
        return self

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _set_dotted(values: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    table = values
    for parent in parents:
        table = table.setdefault(parent, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{key}: {parent} is not a table")
    table[leaf] = value


def parse_overrides(items: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not KEY=VALUE")
        _set_dotted(values, key.strip(), _scalar(text))
    return values


def _scalar(text: str) -> Any:
    """A YAML scalar, except that `1e-3` is a number (YAML 1.1 would keep it a string)."""
    value = yaml.safe_load(text) if text else ""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and \
            isinstance(out.get(key), dict) else value
    return out


def _file_values(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
        values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    values = dict(values or {})
    base = values.pop("base", None)  # a variant names the config it refines
    return _merge(_file_values(path.parent / base), values) if base else values


def load_train_config(path: str | Path | None, overrides: list[str] | None = None,
                      extra: dict[str, Any] | None = None) -> TrainConfig:
    """File, then `extra` (flag values; None = not given), then KEY=VALUE overrides."""
    values = _file_values(Path(path)) if path else {}
    for key, value in (extra or {}).items():
        if value is not None:
            _set_dotted(values, key, value)
    values = _merge(values, parse_overrides(overrides or []))
    return build_dataclass(TrainConfig, values, "").validate()
