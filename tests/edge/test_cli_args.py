"""Command-line flags come from the config schema: every setting has one flag, one default
and one set of choices, in edge-serve, edge-bench and edge-eval alike."""

from __future__ import annotations

import argparse
from dataclasses import fields

import pytest

from lineside.edge.cli.args import (
    MODEL_FLAGS,
    SERVE_FLAGS,
    model_args,
    model_settings,
    serve_args,
    serve_command,
)
from lineside.edge.config import (
    BACKEND_CHOICES,
    CameraSettings,
    ConfigError,
    ServeConfig,
    load_config,
)
from lineside.edge.variants import PRECISIONS


def test_every_setting_is_a_flag_or_marked_file_only():
    for cls in (ServeConfig, CameraSettings):
        for f in fields(cls):
            assert "help" in f.metadata, f"{cls.__name__}.{f.name} has no setting() metadata"
            assert (f.name in SERVE_FLAGS) == f.metadata["cli"], f.name
    assert {"roi", "rules", "cameras", "camera", "bundle"}.isdisjoint(SERVE_FLAGS)


def test_choices_come_from_the_schema():
    parser = argparse.ArgumentParser()
    model_args().add_to(parser)
    by_dest = {a.dest: a for a in parser._actions}
    assert tuple(by_dest["backend"].choices) == BACKEND_CHOICES
    assert tuple(by_dest["precision"].choices) == PRECISIONS


def test_serve_command_round_trips_into_the_same_config():
    settings = {"backend": "ort-cpu", "precision": "int8", "max_batch": 14,
                "screen": "s/", "screen_thresholds": {3: 0.25}, "input": ["tcp://a:1",
                                                                           "tcp://b:2"],
                "publish_masks": True, "queue_size": 64, "overload": "drop-oldest",
                "thresholds": {1: 0.4}, "min_area": {2: 100}, "heartbeat_s": 0.5}
    argv = serve_command("bundle/", settings)[3:]  # after `python -m lineside.edge.cli.serve`
    from lineside.edge.cli.serve import build_parser

    ap, model, daemon = build_parser()
    args = ap.parse_args(argv)
    config = load_config(None, {"bundle": args.bundle, **model.values(args),
                                **daemon.values(args)})
    assert config.bundle == "bundle/" and config.input == ["tcp://a:1", "tcp://b:2"]
    assert (config.backend, config.precision, config.max_batch) == ("ort-cpu", "int8", 14)
    assert config.screen_thresholds == {3: 0.25} and config.publish_masks
    assert config.camera.queue_size == 64 and config.camera.overload == "drop-oldest"
    assert config.camera.thresholds == {1: 0.4} and config.camera.min_area == {2: 100}
    assert config.heartbeat_s == 0.5
    with pytest.raises(KeyError, match="roi"):
        serve_command("b", {"roi": [0, 0, 1, 1]})


def test_flags_not_given_leave_the_config_file_in_charge(tmp_path):
    path = tmp_path / "serve.toml"
    path.write_text('[serve]\nbundle = "b"\nprecision = "int8"\nqueue_size = 3\n')
    parser = argparse.ArgumentParser()
    model, daemon = model_args(), serve_args()
    model.add_to(parser)
    daemon.add_to(parser)
    args = parser.parse_args(["--max-batch", "4"])
    config = load_config(path, {**model.values(args), **daemon.values(args)})
    assert (config.precision, config.max_batch, config.camera.queue_size) == ("int8", 4, 3)


def test_tool_groups_take_schema_defaults_several_values_and_bad_pairs_fail_clearly():
    parser = argparse.ArgumentParser()
    group = model_args(defaults="schema", many=("precision",), overrides={"max_batch": 7},
                       aliases={"max_batch": ("--batch",)})
    group.add_to(parser)
    values = group.values(parser.parse_args(["--precision", "fp32", "int8"]))
    assert values["precision"] == ["fp32", "int8"] and values["max_batch"] == 7
    assert values["backend"] == "auto"
    assert group.values(parser.parse_args(["--batch", "3"]))["max_batch"] == 3
    with pytest.raises(ConfigError, match="--screen-threshold"):
        group.values(parser.parse_args(["--screen-threshold", "x=1"]))
    with pytest.raises(ConfigError, match="needs screen"):
        model_settings({"screen_thresholds": {1: 0.5}})
    assert set(MODEL_FLAGS) <= set(SERVE_FLAGS)
