"""The model bundle: a directory with ONNX files and the `manifest.json` that describes them.

One dataclass, written by `edge-export` and read by the runtime (docs/bundle.md). The
runtime checks every file's sha256 before it loads anything, so a bundle that was altered
or half-copied is refused with a message that names the file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"
BUNDLE_FORMAT = 1


class BundleError(RuntimeError):
    """A bundle that cannot be used, with the reason."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class ClassSpec:
    """One defect class and its post-processing."""

    id: int  # ClassId as in the labels (Severstal: 1..4)
    name: str
    threshold: float = 0.5  # pixel probability threshold
    min_area: int = 0  # a class mask with fewer pixels is dropped (Severstal solutions: 600+)
    gate_threshold: float = 0.0  # with a presence gate: below this the class mask is dropped


@dataclass
class ModelFile:
    path: str  # relative to the bundle directory
    sha256: str
    precision: str  # fp32 | fp16 | int8
    target: str = "any"  # any | cpu | tensorrt
    calibration_sha256: str = ""  # INT8: the calibration set its scales came from


@dataclass
class Manifest:
    name: str
    architecture: str
    classes: list[ClassSpec]
    tile_height: int
    tile_width: int
    in_channels: int = 1
    # Normalisation is folded into the graph (uint8 in); recorded for people and tools.
    mean: float = 0.0
    std: float = 1.0
    input_name: str = "frames"
    output_name: str = "probabilities"
    presence_name: str = ""  # second output (N, K) when the model has a presence gate
    task: str = "segmentation"  # or "classification" (a screening classifier's bundle)
    # "scores": the graph takes `thresholds` and returns scores, maxima and areas
    # (export/score_tail.py); "probabilities": float32 maps (bundles made before it).
    output_form: str = "probabilities"
    # "strip": whole frames in one piece (the tile is the frame); "tiles": cut into tiles.
    inference: str = "tiles"
    frame_height: int = 256
    frame_width: int = 1600
    models: dict[str, ModelFile] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    source_checkpoint_sha256: str = ""
    created: str = ""
    # How far (Kaggle Dice, 0..1) another variant of this model may disagree with the one
    # it replaces on the same frames: an engine built on the device is swapped in only
    # within it (edge-build-engine --eval and the daemon's background build check it).
    accuracy_budget: float = 0.01
    format: int = BUNDLE_FORMAT

    @property
    def class_ids(self) -> list[int]:
        return [c.id for c in self.classes]

    @property
    def graph_inputs(self) -> list[str]:
        return [self.input_name, *(["thresholds"] if self.output_form == "scores" else [])]

    @property
    def graph_thresholds(self) -> list[float] | None:
        """What a scored graph's `thresholds` input is fed when a caller gives none: the
        classes' pixel thresholds (None: the graph has no such input)."""
        return [c.threshold for c in self.classes] if self.output_form == "scores" else None

    @property
    def graph_outputs(self) -> list[str]:
        """The model graph's outputs, in order."""
        main = ["scores", "maxima", "areas"] if self.output_form == "scores" \
            else [self.output_name]
        return [*main, *([self.presence_name] if self.presence_name else [])]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Manifest:
        if body.get("format") != BUNDLE_FORMAT:
            raise BundleError(f"bundle format {body.get('format')!r} is not supported "
                              f"(this lineside reads format {BUNDLE_FORMAT})")
        body = dict(body)
        try:
            body["classes"] = [ClassSpec(**c) for c in body["classes"]]
            body["models"] = {k: ModelFile(**v) for k, v in body.get("models", {}).items()}
            return cls(**body)
        except (KeyError, TypeError) as exc:
            raise BundleError(f"manifest.json does not match the schema: {exc}") from None


@dataclass
class Bundle:
    """A bundle directory whose files were checked against its manifest."""

    root: Path
    manifest: Manifest

    def model_path(self, precision: str = "fp32") -> Path:
        if precision not in self.manifest.models:
            raise BundleError(f"bundle {self.root} has no {precision} model; it has "
                              f"{sorted(self.manifest.models)}")
        return self.root / self.manifest.models[precision].path


def write_manifest(root: Path, manifest: Manifest) -> Path:
    path = root / MANIFEST_NAME
    path.write_text(json.dumps(manifest.to_json(), indent=2) + "\n")
    return path


def load_bundle(root: str | Path, verify: bool = True) -> Bundle:
    """Read a bundle's manifest and verify each model file's sha256 before use."""
    root = Path(root)
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(f"{root} is not a model bundle: no {MANIFEST_NAME}")
    try:
        body = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path} is not valid JSON: {exc}") from None
    manifest = Manifest.from_json(body)
    if not manifest.models:
        raise BundleError(f"bundle {root} lists no model files")
    if verify:
        for key, model in manifest.models.items():
            file = root / model.path
            if not file.is_file():
                raise BundleError(f"bundle {root}: {key} model file {model.path} is missing")
            actual = sha256_file(file)
            if actual != model.sha256:
                raise BundleError(
                    f"bundle {root}: {model.path} fails its integrity check (sha256 "
                    f"{actual[:12]}... but the manifest says {model.sha256[:12]}...); "
                    "the file was altered or copied incompletely: re-export or re-copy it")
    return Bundle(root=root, manifest=manifest)
