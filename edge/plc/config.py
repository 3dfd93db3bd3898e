"""The PLC gateway's configuration: where the daemon is, which PLC, and the tag map.

Every value the gateway writes is a *tag* with a logical name; the map says where each
tag lives in the PLC: a Modbus coil or holding register, or an OPC UA node id
(docs/plc.md has the full table and an example for a typical PLC).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lineside.edge.config import ConfigError, build_dataclass, read_toml_table

PROTOCOLS = ("modbus", "opcua")
# OPC UA security policies the gateway offers (asyncua's names) and message modes.
OPCUA_POLICIES = ("Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss")
OPCUA_MODES = ("Sign", "SignAndEncrypt")
VERDICT_CODES = {"OK": 1, "REJECT": 2, "ERROR": 3}


@dataclass
class CameraTags:
    """Where one camera's values go. Modbus: coil/register numbers (0-based);
    32-bit values take two registers, high word first. OPC UA: node ids."""

    reject: Any = None  # bit: raised for REJECT and ERROR (level or pulse)
    last_frame_id: Any = None  # 32-bit
    verdict: Any = None  # 16-bit code: 1 OK, 2 REJECT, 3 ERROR
    results: Any = None  # 32-bit running count of results
    rejects: Any = None  # 32-bit running count of REJECT/ERROR verdicts (counter mode)
    line_position: Any = None  # 32-bit: the frame's line position / encoder count, rounded
    area: dict[int, Any] = field(default_factory=dict)  # class id -> 32-bit area (pixels)


@dataclass
class PlcConfig:
    daemon: str = "tcp://127.0.0.1:5556"  # the daemon's PUB endpoint
    protocol: str = "modbus"
    host: str = "127.0.0.1"  # Modbus TCP server (the PLC)
    port: int = 502
    unit: int = 1  # Modbus device id
    url: str = ""  # OPC UA server, e.g. opc.tcp://192.168.0.10:4840
    watchdog_s: float = 3.0  # no daemon heartbeat for this long -> fault bit
    heartbeat_toggle_s: float = 0.5  # how often the heartbeat word toggles while healthy
    reject_pulse_ms: float = 0.0  # 0: the reject bit holds until the next OK; >0: a pulse
    reject_gap_ms: float = 0.0  # pulse mode: least low time between pulses (0: = pulse_ms)
    reject_deadline_ms: float = 2000.0  # a reject not written by then is a fault
    fault_hold_s: float = 1.0  # a fault stays set at least this long, so the PLC sees it
    progress_timeout_s: float = 5.0  # frames in flight and no verdict for this long: fault
    reconnect_max_s: float = 5.0  # backoff ceiling for PLC and daemon reconnects
    fault: Any = None  # bit: line to safe state
    heartbeat: Any = None  # 16-bit word toggled 0/1 while the daemon is alive
    cameras: dict[str, CameraTags] = field(default_factory=dict)
    # OPC UA security (opcua only): "" for none, else POLICY[,MODE] with MODE Sign or
    # SignAndEncrypt (default), e.g. "Basic256Sha256,SignAndEncrypt"; the gateway's
    # certificate and private key, and the PLC's certificate to pin it, come from files.
    opcua_security: str = ""
    opcua_certificate: str = ""  # this gateway's application certificate (DER or PEM)
    opcua_private_key: str = ""  # its private key (PEM)
    opcua_server_certificate: str = ""  # the PLC server's certificate ("" = as offered)
    opcua_application_uri: str = "urn:lineside:edge-plc"  # must match the certificate's
    # CURVE for a daemon on another host (key files from zmq.auth.create_certificates).
    curve_server_public: str = ""  # the daemon's public key file
    curve_client_secret: str = ""  # this gateway's secret key file (.key_secret)

    def validate(self) -> PlcConfig:
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"protocol: {self.protocol!r} is not one of {PROTOCOLS}")
        if self.protocol == "opcua" and not self.url:
            raise ConfigError("url: OPC UA needs the server url (opc.tcp://HOST:PORT)")
        if self.fault is None:
            raise ConfigError("fault: the fault bit is required (it is the line's safe state)")
        if not self.cameras:
            raise ConfigError("cameras: map at least one camera ([plc.cameras.<id>])")
        if self.watchdog_s <= 0 or self.reject_deadline_ms <= 0 or self.progress_timeout_s <= 0:
            raise ConfigError("watchdog_s, reject_deadline_ms and progress_timeout_s must be "
                              "positive")
        if self.reject_pulse_ms < 0 or self.reject_gap_ms < 0 or self.fault_hold_s < 0:
            raise ConfigError("reject_pulse_ms, reject_gap_ms and fault_hold_s must not be "
                              "negative")
        if self.opcua_security:
            policy, _, mode = self.opcua_security.partition(",")
            if policy not in OPCUA_POLICIES or (mode or "SignAndEncrypt") not in OPCUA_MODES:
                raise ConfigError(f"opcua_security: {self.opcua_security!r} is not POLICY[,MODE]"
                                  f" with POLICY in {OPCUA_POLICIES}, MODE in {OPCUA_MODES}")
            for name in ("opcua_certificate", "opcua_private_key"):
                if not getattr(self, name) or not Path(getattr(self, name)).is_file():
                    raise ConfigError(f"{name}: OPC UA security needs this file")
        if bool(self.curve_server_public) != bool(self.curve_client_secret):
            raise ConfigError("CURVE needs both curve_server_public and curve_client_secret")
        return self


def load_plc_config(path: str | Path, overrides: dict[str, Any] | None = None) -> PlcConfig:
    values = read_toml_table(path, "plc")
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return build_dataclass(PlcConfig, values, "plc").validate()
