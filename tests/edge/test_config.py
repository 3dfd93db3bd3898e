"""Configuration schema: files, flag overrides, per-camera merges and clear errors."""

from __future__ import annotations

import pytest

from lineside.edge.config import ClassRule, ConfigError, load_config
from tests.helpers import CONFIGS

EXAMPLE = CONFIGS / "serve.toml"


def test_example_config_loads_and_cameras_merge_over_defaults():
    config = load_config(EXAMPLE, {})
    assert config.input == ["tcp://127.0.0.1:5555"] and config.metrics == "127.0.0.1:9100"
    default, lane2 = config.for_camera("lane1"), config.for_camera("lane2")
    assert default.overload == "block" and lane2.overload == "drop-oldest"
    assert lane2.roi == [0, 0, 1600, 256] and lane2.deadline_ms == 250
    assert default.rule(3) == ClassRule(max_area=300)
    assert lane2.rule(3) == ClassRule(max_area=300)  # inherited from the defaults
    assert lane2.rule(4).report_only and not default.rule(4).report_only
    assert lane2.thresholds == {4: 0.6} and default.thresholds == {}


def test_flags_override_the_file():
    config = load_config(EXAMPLE, {"bundle": "other", "overload": "drop-newest",
                                   "thresholds": {"2": 0.7}, "input": ["tcp://127.0.0.1:1"]})
    assert config.bundle == "other" and config.input == ["tcp://127.0.0.1:1"]
    assert config.camera.overload == "drop-newest" and config.camera.thresholds == {2: 0.7}


@pytest.mark.parametrize("values, message", [
    ({"bundle": "b", "bogus": 1}, "unknown setting"),
    ({"bundle": "b", "overload": "panic"}, "overload"),
    ({"bundle": "b", "max_batch": 0}, "max_batch"),
    ({"bundle": "b", "output": "http://x"}, "not a ZeroMQ endpoint"),
    ({"bundle": "b", "thresholds": {"1": 1.5}}, "thresholds.1"),
    ({"bundle": "b", "thresholds": {"x": 0.5}}, "class ids are integers"),
    ({"bundle": "b", "rules": {"1": {"max_area": -1}}}, "rules.1.max_area"),
    ({"bundle": "b", "rules": {"1": {"maximum": 3}}}, "unknown setting"),
    ({"bundle": "b", "cameras": {"c": {"roi": [0, 0, 10]}}}, "roi"),
    ({"bundle": "b", "max_wait_ms": "soon"}, "expected float"),
    ({"bundle": "b", "metrics": "9100"}, "HOST:PORT"),
    ({}, "bundle"),
])
def test_bad_values_name_the_key(values, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, values)


def test_bad_toml_file_is_a_config_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[serve\nbundle = ")
    with pytest.raises(ConfigError, match=r"bad\.toml"):
        load_config(path, {})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml", {})


def test_class_value_flags_parse_to_integer_class_ids_and_refuse_garbage():
    from lineside.edge.cli.common import class_values

    assert class_values(["3=0.4", "4=0.6"]) == {3: 0.4, 4: 0.6}
    assert class_values(None) == {}
    for bad in ("x=0.4", "3", "3=high"):
        with pytest.raises(ConfigError, match="--threshold"):
            class_values([bad], float, "--threshold")
