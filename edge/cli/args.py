"""Command-line argument groups generated from the config schema (lineside.edge.config).

Each group adds the flags of some schema fields to a parser and reads them back as config
overrides, the way Polygraphy's `tools/args` groups do: `--precision`, `--backend` or
`--screen` mean the same, with the same choices and defaults, in edge-serve, edge-bench
and edge-eval. `serve_command` builds an edge-serve command line from the same table, so
tools that start a daemon never spell its flags by hand.
"""

from __future__ import annotations

import argparse
import sys
import typing
from dataclasses import MISSING, Field, dataclass, fields
from typing import Any

from lineside.edge.cli.common import class_values
from lineside.edge.config import CameraSettings, ModelSettings, ServeConfig


@dataclass(frozen=True)
class Flag:
    """One schema field as a command-line flag."""

    name: str  # the field name, e.g. "screen_thresholds"
    option: str  # e.g. "--screen-threshold"
    kind: str  # "scalar" | "bool" | "list" | "class-values"
    cast: type
    field: Field

    @property
    def dest(self) -> str:
        return self.name


def _kind(hint: Any) -> tuple[str, type]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        return "bool", bool
    if origin is list:
        return "list", args[0]
    if origin is dict:
        return "class-values", args[1]
    return "scalar", hint


def schema_flags(cls: type) -> dict[str, Flag]:
    """Field name -> Flag for every command-line field of dataclass `cls`."""
    hints = typing.get_type_hints(cls)
    table = {}
    for f in fields(cls):
        if not f.metadata.get("cli", False):
            continue
        kind, cast = _kind(hints[f.name])
        option = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        table[f.name] = Flag(f.name, option, kind, cast, f)
    return table


MODEL_FLAGS = schema_flags(ModelSettings)
# The daemon's own settings and the default camera settings (beside the model group).
DAEMON_FLAGS = {name: flag for name, flag in {**schema_flags(ServeConfig),
                                              **schema_flags(CameraSettings)}.items()
                if name not in MODEL_FLAGS}
# Everything edge-serve takes on its command line.
SERVE_FLAGS = {**MODEL_FLAGS, **DAEMON_FLAGS}


def _schema_default(f: Field) -> Any:
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else None  # type: ignore[misc]


class SchemaArgs:
    """An argument group over some schema flags.

    `defaults="config"`: a flag not given reads as None, so a config file (or the schema
    default) decides, as edge-serve needs. `defaults="schema"`: the schema default shows
    in --help and is the value, for tools without a config file. `many` names fields
    that take several values here (edge-bench measures several precisions in one run);
    `overrides` replaces a default, `aliases` adds option strings, `choices` widens a
    field's choices for one tool (edge-bench also takes ONNX variant keys).
    """

    def __init__(self, title: str, table: dict[str, Flag], *, defaults: str = "config",
                 many: tuple[str, ...] = (), overrides: dict[str, Any] | None = None,
                 exclude: tuple[str, ...] = (),
                 aliases: dict[str, tuple[str, ...]] | None = None,
                 choices: dict[str, tuple[Any, ...]] | None = None) -> None:
        self.title = title
        self.table = {k: v for k, v in table.items() if k not in exclude}
        self.defaults = defaults
        self.many = many
        self.overrides = overrides or {}
        self.aliases = aliases or {}
        self.choices = choices or {}

    def _default(self, flag: Flag) -> Any:
        if flag.name in self.overrides:
            return self.overrides[flag.name]
        if self.defaults != "schema" or flag.kind == "class-values":
            return None
        value = _schema_default(flag.field)
        return [value] if flag.name in self.many else value

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group(self.title)
        for flag in self.table.values():
            meta = flag.field.metadata
            default = self._default(flag)
            help_text = meta["help"]
            if self.defaults == "schema" and default not in (None, "", [], [""]):
                shown = " ".join(map(str, default)) if isinstance(default, list) else default
                help_text += f" (default: {shown})"
            kwargs: dict[str, Any] = {"dest": flag.dest, "help": help_text, "default": default}
            options = (flag.option, *self.aliases.get(flag.name, ()))
            if meta.get("metavar"):
                kwargs["metavar"] = meta["metavar"]
            if flag.kind == "bool":
                group.add_argument(*options, action="store_const", const=True, **kwargs)
                continue
            allowed = self.choices.get(flag.name, meta.get("choices"))
            if allowed:
                kwargs["choices"] = list(allowed)
            if flag.kind in ("list", "class-values"):
                group.add_argument(*options, action="append", **kwargs)
            elif flag.name in self.many:
                group.add_argument(*options, nargs="+", type=flag.cast, **kwargs)
            else:
                group.add_argument(*options, type=flag.cast, **kwargs)

    def values(self, args: argparse.Namespace) -> dict[str, Any]:
        """Config overrides from parsed flags (None: not given). CLASS=VALUE pairs are
        parsed here, with an error naming the flag (ConfigError)."""
        out: dict[str, Any] = {}
        for flag in self.table.values():
            value = getattr(args, flag.dest)
            if flag.kind == "class-values":
                value = class_values(value, flag.cast, flag.option) or None
            out[flag.name] = value
        return out


def model_args(**kwargs: Any) -> SchemaArgs:
    """The model group: backend, precision, threads, batch size, screen, fault injection."""
    return SchemaArgs("model", MODEL_FLAGS, **kwargs)


def model_settings(values: dict[str, Any], **fixed: Any) -> ModelSettings:
    """ModelSettings from a group's values (None and [] mean the schema default)."""
    given = {k: v for k, v in {**values, **fixed}.items() if v is not None}
    settings = ModelSettings(**{k: v for k, v in given.items()
                                if k in {f.name for f in fields(ModelSettings)}})
    settings.validate_model()
    return settings


def serve_args() -> SchemaArgs:
    return SchemaArgs("daemon (flags override --config)", DAEMON_FLAGS)


def serve_command(bundle: str, settings: dict[str, Any] | None = None,
                  extra: list[str] | tuple[str, ...] = (), python: str = sys.executable,
                  module: str = "lineside.edge.cli.serve") -> list[str]:
    """The edge-serve command line for `bundle` with config `settings` (field names of
    ServeConfig/CameraSettings, as in a `[serve]` table), in a new Python process
    (`module`: another entry point that takes edge-serve's flags, such as edge-bench's
    replay daemon)."""
    argv = [python, "-m", module, str(bundle)]
    for name, value in (settings or {}).items():
        if name not in SERVE_FLAGS:
            raise KeyError(f"{name!r} is not an edge-serve setting with a flag; known: "
                           f"{', '.join(sorted(SERVE_FLAGS))}")
        flag = SERVE_FLAGS[name]
        if value is None or value is False:
            continue
        if flag.kind == "bool":
            argv.append(flag.option)
        elif flag.kind == "list":
            for item in value:
                argv += [flag.option, str(item)]
        elif flag.kind == "class-values":
            for class_id, item in value.items():
                argv += [flag.option, f"{class_id}={item}"]
        else:
            argv += [flag.option, str(value)]
    return [*argv, *extra]
