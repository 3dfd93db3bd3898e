"""PLC gateway configuration: the shipped examples load; mistakes name the key."""

from __future__ import annotations

import pytest

from lineside.edge.config import ConfigError
from lineside.edge.plc.config import load_plc_config
from tests.helpers import CONFIGS


@pytest.mark.parametrize("name", ["plc-modbus.toml", "plc-opcua.toml"])
def test_examples_load(name):
    config = load_plc_config(CONFIGS / name)
    assert "lane1" in config.cameras and config.fault is not None


def test_modbus_example_map():
    config = load_plc_config(CONFIGS / "plc-modbus.toml")
    lane = config.cameras["lane1"]
    assert (lane.reject, lane.last_frame_id, lane.area[4]) == (10, 100, 116)


@pytest.mark.parametrize("text, message", [
    ("[plc]\nprotocol = 'profinet'\nfault = 0\n[plc.cameras.a]\nreject = 1", "protocol"),
    ("[plc]\nfault = 0", "cameras"),
    ("[plc]\n[plc.cameras.a]\nreject = 1", "fault"),
    ("[plc]\nprotocol = 'opcua'\nfault = 'x'\n[plc.cameras.a]\nreject = 'y'", "url"),
    ("[plc]\nfault = 0\nbogus = 1\n[plc.cameras.a]\nreject = 1", "unknown setting"),
    ("[plc]\nfault = 0\ncurve_server_public = 'k'\n[plc.cameras.a]\nreject = 1", "CURVE"),
])
def test_mistakes_are_named(tmp_path, text, message):
    path = tmp_path / "plc.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_plc_config(path)
