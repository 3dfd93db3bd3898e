"""PLC gateway against real servers on 127.0.0.1: a pymodbus server and an asyncua server,
with the daemon and the gateway as real processes."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import zmq
import zmq.auth

from tests.helpers import free_endpoint
from tests.system.line import SPLIT_VERDICTS_CONFIG, header, serve, stop_process, strip

pytestmark = pytest.mark.slow

FAULT, HEARTBEAT = 0, 0  # coil 0, holding register 0
BAD = {"reject": 10, "last_frame_id": 100, "verdict": 102, "results": 104, "rejects": 106,
       "line_position": 140}
GOOD = {"reject": 11, "last_frame_id": 120, "verdict": 122, "results": 124, "rejects": 126}
DAEMON_CONFIG = SPLIT_VERDICTS_CONFIG


def free_port() -> int:
    return int(free_endpoint().rsplit(":", 1)[1])


class ModbusPlc:
    """A pymodbus TCP server on its own thread, read back with a Modbus client as an HMI
    or the PLC program would."""

    def __init__(self, port: int | None = None) -> None:
        from pymodbus.client import ModbusTcpClient
        from pymodbus.datastore import (
            ModbusDeviceContext,
            ModbusSequentialDataBlock,
            ModbusServerContext,
        )

        self.port = port or free_port()
        device = ModbusDeviceContext(co=ModbusSequentialDataBlock(1, [False] * 64),
                                     hr=ModbusSequentialDataBlock(1, [0] * 256))
        self.context = ModbusServerContext(devices={1: device}, single=False)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.client = ModbusTcpClient("127.0.0.1", port=self.port)
        deadline = time.monotonic() + 10
        while not self.client.connect():
            assert time.monotonic() < deadline, "Modbus test server did not start"
            time.sleep(0.1)

    def _run(self) -> None:
        from pymodbus.server import StartAsyncTcpServer

        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(StartAsyncTcpServer(context=self.context,
                                                         address=("127.0.0.1", self.port)))

    def coil(self, address: int) -> bool:
        return bool(self.client.read_coils(address, count=1, device_id=1).bits[0])

    def u16(self, address: int) -> int:
        return self.client.read_holding_registers(address, count=1, device_id=1).registers[0]

    def u32(self, address: int) -> int:
        high, low = self.client.read_holding_registers(address, count=2,
                                                       device_id=1).registers
        return high << 16 | low

    def stop(self) -> None:
        from pymodbus.server import ServerAsyncStop

        self.client.close()
        asyncio.run_coroutine_threadsafe(ServerAsyncStop(), self.loop).result(10)


@pytest.fixture
def plc():
    server = ModbusPlc()
    yield server
    server.stop()


def camera_table(name: str, tags: dict[str, int], quote: bool = False) -> str:
    q = (lambda v: f'"{v}"') if quote else (lambda v: str(v))
    lines = [f"[plc.cameras.{name}]"] + [f"{k} = {q(v)}" for k, v in tags.items()]
    return "\n".join(lines)


def modbus_config(tmp_path: Path, port: int, daemon: str, pulse_ms: float = 0,
                  extra: str = "") -> Path:
    path = tmp_path / "plc.toml"
    path.write_text(f"""
[plc]
daemon = "{daemon}"
protocol = "modbus"
host = "127.0.0.1"
port = {port}
watchdog_s = 1.5
heartbeat_toggle_s = 0.2
reject_pulse_ms = {pulse_ms}
fault = {FAULT}
heartbeat = {HEARTBEAT}
{extra}
{camera_table("bad", BAD)}
[plc.cameras.bad.area]
1 = 130
{camera_table("good", GOOD)}
""")
    return path


def start_gateway(config: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lineside.edge.cli.plc", "--config",
                             str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def wait_for(condition, timeout_s: float, what: str) -> float:
    began = time.monotonic()
    while not condition():
        assert time.monotonic() - began < timeout_s, f"timed out waiting for {what}"
        time.sleep(0.02)
    return time.monotonic() - began


def heartbeat_toggles(plc: ModbusPlc, seconds: float = 1.0) -> bool:
    seen = {plc.u16(HEARTBEAT)}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and len(seen) < 2:
        seen.add(plc.u16(HEARTBEAT))
        time.sleep(0.02)
    return len(seen) == 2


def test_every_reject_pulses_the_bit_and_counters_match(trained_bundle, plc, tmp_path):
    daemon_config = tmp_path / "serve.toml"
    daemon_config.write_text(DAEMON_CONFIG)
    with serve(trained_bundle, "--config", str(daemon_config)) as d:
        gateway = start_gateway(modbus_config(tmp_path, plc.port, d.results_out,
                                              pulse_ms=150))
        try:
            wait_for(lambda: heartbeat_toggles(plc), 30, "the gateway's heartbeat word")
            assert plc.coil(FAULT) is False
            edges, sampling = [], True

            def sample() -> None:  # a PLC scan cycle of 10 ms watching the reject input
                last = False
                while sampling:
                    value = plc.coil(BAD["reject"])
                    if value and not last:
                        edges.append(time.monotonic())
                    last = value
                    time.sleep(0.01)

            sampler = threading.Thread(target=sample)
            sampler.start()
            for i in range(4):
                d.sender.send(header("bad", 100 + i, (256, 512)), strip(i, (256, 512)))
                d.sender.send(header("good", 200 + i, (256, 512)), strip(i, (256, 512)))
                time.sleep(0.6)
            wait_for(lambda: plc.u32(GOOD["results"]) == 4 and plc.u32(BAD["results"]) == 4,
                     20, "all results in the PLC")
            time.sleep(0.4)
            sampling = False
            sampler.join()
            assert len(edges) == 4  # one pulse per REJECT frame
            assert plc.coil(BAD["reject"]) is False  # pulses end
            assert plc.u32(BAD["rejects"]) == 4 and plc.u32(GOOD["rejects"]) == 0
            assert plc.u32(BAD["last_frame_id"]) == 103 and plc.u32(GOOD["last_frame_id"]) == 203
            assert plc.u16(BAD["verdict"]) == 2 and plc.u16(GOOD["verdict"]) == 1
            assert plc.u32(130) == 256 * 512  # class 1 area of the last bad frame
            assert plc.coil(GOOD["reject"]) is False
        finally:
            stop_process(gateway)


def test_killing_the_daemon_sets_the_fault_bit_and_a_restart_clears_it(
        trained_bundle, plc, tmp_path):
    results_out = free_endpoint()
    config = modbus_config(tmp_path, plc.port, results_out)
    gateway = start_gateway(config)
    try:
        with serve(trained_bundle, results_out=results_out) as d:
            wait_for(lambda: not plc.coil(FAULT) and heartbeat_toggles(plc), 30,
                     "a healthy line")
            d.proc.send_signal(signal.SIGKILL)
            d.proc.wait()
            took = wait_for(lambda: plc.coil(FAULT), 10, "the fault bit")
            # The watchdog period, plus the gateway's 50 ms check and one PLC write, with
            # room for a loaded CI machine.
            assert took <= 1.5 + 1.5
            assert not heartbeat_toggles(plc, 0.6)  # the heartbeat word froze
        with serve(trained_bundle, results_out=results_out):
            wait_for(lambda: not plc.coil(FAULT), 20, "the fault to clear after restart")
            assert heartbeat_toggles(plc)
    finally:
        stop_process(gateway)


def test_lost_plc_connection_sets_the_fault_bit_on_reconnect(trained_bundle, tmp_path):
    first = ModbusPlc()
    port = first.port
    with serve(trained_bundle) as d:
        gateway = start_gateway(modbus_config(tmp_path, port, d.results_out))
        try:
            wait_for(lambda: heartbeat_toggles(first), 30, "a healthy line")
            first.stop()
            time.sleep(1.0)
            second = ModbusPlc(port)  # the PLC comes back on the same address
            try:
                wait_for(lambda: second.coil(FAULT), 15, "the fault bit after reconnect")
                d.sender.send(header("bad", 1, (256, 512)), strip(1, (256, 512)))
                wait_for(lambda: second.u32(BAD["results"]) == 1, 15, "the result")
            finally:
                second.stop()
        finally:
            stop_process(gateway)


def test_curve_admits_the_right_gateway_and_refuses_wrong_keys(trained_bundle, tmp_path):
    keys = tmp_path / "keys"
    allowed = tmp_path / "allowed"
    keys.mkdir()
    allowed.mkdir()
    server_public, server_secret = zmq.auth.create_certificates(keys, "daemon")
    client_public, client_secret = zmq.auth.create_certificates(keys, "gateway")
    _, intruder_secret = zmq.auth.create_certificates(keys, "intruder")
    (allowed / "gateway.key").write_bytes(Path(client_public).read_bytes())
    with serve(trained_bundle, "--curve-secret", server_secret, "--curve-clients", str(allowed),
               curve=(server_public, client_secret)) as d:
        from lineside.edge.client import ResultSubscriber

        intruder = ResultSubscriber(d.results_out, curve=(server_public, intruder_secret))
        plain = ResultSubscriber(d.results_out)
        try:
            for refused in (intruder, plain):
                deadline = time.monotonic() + 3
                while time.monotonic() < deadline:
                    assert refused.receive(0.2) is None, "a client without the keys got data"
            d.sender.send(header("cam0", 1), strip(1))
            got = None
            deadline = time.monotonic() + 30
            while got is None and time.monotonic() < deadline:
                message = d.subscriber.receive(0.5)
                if message and message[0] == "reject":
                    got = message[1]
            assert got is not None and got["frame_id"] == 1
        finally:
            intruder.close()
            plain.close()


def test_curve_on_input_and_control_refuses_clients_without_the_keys(trained_bundle,
                                                                     tmp_path):
    from lineside.edge.client import FrameSender
    from lineside.edge.curve import curve_client

    keys, allowed = tmp_path / "keys", tmp_path / "allowed"
    keys.mkdir()
    allowed.mkdir()
    server_public, server_secret = zmq.auth.create_certificates(keys, "daemon")
    camera_public, camera_secret = zmq.auth.create_certificates(keys, "camera")
    _, intruder_secret = zmq.auth.create_certificates(keys, "intruder")
    (allowed / "camera.key").write_bytes(Path(camera_public).read_bytes())
    frames_in, control = free_endpoint(), free_endpoint()
    with serve(trained_bundle, "--curve-secret", server_secret, "--curve-clients",
               str(allowed), "--curve-socket", "results", "--curve-socket", "input",
               "--curve-socket", "control", "--control", control, frames_in=frames_in,
               curve=(server_public, camera_secret)) as d:
        d.sender.close()  # the plain sender of `serve` has no keys
        for curve in (None, (server_public, intruder_secret)):
            refused = FrameSender(frames_in, curve=curve)
            # The handshake never completes: the frame waits, or send gives up; it never
            # reaches the daemon either way.
            refused.socket.setsockopt(zmq.SNDTIMEO, 1000)
            refused.socket.setsockopt(zmq.LINGER, 0)
            with contextlib.suppress(zmq.Again):
                refused.send(header("cam0", 1), strip(1))
            refused.close()
        context = zmq.Context.instance()
        for curve in (None, (server_public, intruder_secret)):
            request = context.socket(zmq.REQ)
            if curve:
                curve_client(request, *curve)
            request.connect(control)
            request.send_json({"command": "status"})
            assert not request.poll(1500), "the control socket answered a client without keys"
            request.close(linger=0)
        time.sleep(1.0)
        camera = FrameSender(frames_in, curve=(server_public, camera_secret))
        camera.send(header("cam0", 2), strip(2))
        got = []
        deadline = time.monotonic() + 30
        while not got and time.monotonic() < deadline:
            message = d.subscriber.receive(0.5)
            if message and message[0] == "reject":
                got.append(message[1])
        camera.close()
        assert [g["frame_id"] for g in got] == [2]  # only the camera with the keys
        request = context.socket(zmq.REQ)
        curve_client(request, server_public, camera_secret)
        request.connect(control)
        request.send_json({"command": "status"})
        assert request.poll(10_000) and request.recv_json()["counters"]["received"] == 1
        request.close(linger=0)


OPCUA_NAMES = ["Fault", "Heartbeat", "Bad.Reject", "Bad.LastFrame", "Bad.Verdict",
               "Bad.Results", "Bad.Rejects"]


class OpcUaPlc:
    """An asyncua server on its own thread with the nodes a PLC program would expose,
    optionally offering only a signed-and-encrypted endpoint (Basic256Sha256)."""

    def __init__(self, security: tuple[Path, Path] | None = None) -> None:
        self.url = f"opc.tcp://127.0.0.1:{free_port()}/lineside/"
        self.security = security  # (server certificate, server private key)
        self.reader: tuple[Path, Path] | None = None  # a client certificate and key
        self._ready, self._stop = threading.Event(), threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=lambda: self._loop.run_until_complete(self._serve()), daemon=True)
        self._thread.start()
        assert self._ready.wait(30)

    async def _serve(self) -> None:
        from asyncua import Server, ua

        types = {"Fault": ua.VariantType.Boolean, "Bad.Reject": ua.VariantType.Boolean,
                 "Heartbeat": ua.VariantType.UInt16, "Bad.Verdict": ua.VariantType.UInt16}
        server = Server()
        await server.init()
        server.set_endpoint(self.url)
        if self.security:
            server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
            await server.load_certificate(str(self.security[0]))
            await server.load_private_key(str(self.security[1]))
        ns = await server.register_namespace("urn:lineside:test")
        line = await server.nodes.objects.add_object(ns, "Line")
        for name in OPCUA_NAMES:
            variant = types.get(name, ua.VariantType.UInt32)
            default = False if variant == ua.VariantType.Boolean else 0
            var = await line.add_variable(ua.NodeId(f"Line.{name}", ns), name,
                                          ua.Variant(default, variant))
            await var.set_writable()
        async with server:
            self._ready.set()
            while not self._stop.is_set():
                await asyncio.sleep(0.1)

    def value(self, name: str):
        from asyncua import Client
        from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

        async def read():
            client = Client(self.url)
            if self.reader:
                client.application_uri = "urn:lineside:edge-plc"
                await client.set_security(SecurityPolicyBasic256Sha256, str(self.reader[0]),
                                          str(self.reader[1]))
            async with client:
                ns = await client.get_namespace_index("urn:lineside:test")
                return await client.get_node(f"ns={ns};s=Line.{name}").read_value()

        return asyncio.run(read())

    def config(self, path: Path, daemon: str, extra: str = "") -> Path:
        node = "ns=2;s=Line.{}"
        path.write_text(f"""
[plc]
daemon = "{daemon}"
protocol = "opcua"
url = "{self.url}"
watchdog_s = 2.0
fault = "{node.format('Fault')}"
heartbeat = "{node.format('Heartbeat')}"
{extra}
[plc.cameras.bad]
reject = "{node.format('Bad.Reject')}"
last_frame_id = "{node.format('Bad.LastFrame')}"
verdict = "{node.format('Bad.Verdict')}"
results = "{node.format('Bad.Results')}"
rejects = "{node.format('Bad.Rejects')}"
""")
        return path

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def test_opcua_gateway_writes_the_node_map(trained_bundle, tmp_path):
    plc = OpcUaPlc()
    daemon_config = tmp_path / "serve.toml"
    daemon_config.write_text(DAEMON_CONFIG)
    try:
        with serve(trained_bundle, "--config", str(daemon_config)) as d:
            gateway = start_gateway(plc.config(tmp_path / "plc.toml", d.results_out))
            try:
                wait_for(lambda: plc.value("Heartbeat") == 1, 30, "the heartbeat node")
                for i in range(3):
                    d.sender.send(header("bad", 10 + i, (256, 512)), strip(i, (256, 512)))
                wait_for(lambda: plc.value("Bad.Results") == 3, 30, "three results")
                assert plc.value("Bad.Rejects") == 3 and plc.value("Bad.LastFrame") == 12
                assert plc.value("Bad.Verdict") == 2 and plc.value("Bad.Reject") is True
                assert plc.value("Fault") is False
            finally:
                stop_process(gateway)
    finally:
        plc.stop()


def make_certificate(folder: Path, name: str, uri: str) -> tuple[Path, Path]:
    from asyncua.crypto.cert_gen import setup_self_signed_certificate
    from cryptography.x509.oid import ExtendedKeyUsageOID

    cert, key = folder / f"{name}.der", folder / f"{name}.pem"
    asyncio.run(setup_self_signed_certificate(
        key, cert, uri, "127.0.0.1",
        [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH],
        {"commonName": name, "organizationName": "lineside test"}))
    return cert, key


def test_opcua_with_basic256sha256_sign_and_encrypt(trained_bundle, tmp_path):
    server_cert, server_key = make_certificate(tmp_path, "plc", "urn:lineside:test-plc")
    client_cert, client_key = make_certificate(tmp_path, "gateway", "urn:lineside:edge-plc")
    plc = OpcUaPlc(security=(server_cert, server_key))
    plc.reader = (client_cert, client_key)
    try:
        with serve(trained_bundle) as d:
            plain = start_gateway(plc.config(tmp_path / "plain.toml", d.results_out))
            try:  # the server offers no unsecured endpoint: a plain gateway writes nothing
                time.sleep(4)
                assert plc.value("Heartbeat") == 0
            finally:
                stop_process(plain)
            secured = start_gateway(plc.config(
                tmp_path / "secured.toml", d.results_out,
                f'opcua_security = "Basic256Sha256,SignAndEncrypt"\n'
                f'opcua_certificate = "{client_cert}"\nopcua_private_key = "{client_key}"\n'
                f'opcua_server_certificate = "{server_cert}"'))
            try:
                wait_for(lambda: plc.value("Heartbeat") == 1, 30, "the heartbeat node")
                d.sender.send(header("bad", 7, (256, 512)), strip(7, (256, 512)))
                wait_for(lambda: plc.value("Bad.LastFrame") == 7, 30, "the verdict")
                assert plc.value("Fault") is False
            finally:
                stop_process(secured)
    finally:
        plc.stop()


def test_a_stalled_daemon_and_frames_without_verdicts_set_the_fault_bit(
        trained_bundle, plc, tmp_path):
    daemon_config = tmp_path / "serve.toml"
    daemon_config.write_text(DAEMON_CONFIG)
    for stall_s, expect in ((1.0, "daemon stalled"), (120.0, "frames in flight")):
        # hang-after=2: the warm-up call and one frame, then the model never returns.
        # The deadline lies well after the gateway's fault (and ends the daemon's drain).
        with serve(trained_bundle, "--config", str(daemon_config), "--inject-faults",
                   "hang-after=2", "--max-batch", "2", "--stall-s", str(stall_s),
                   "--deadline-ms", "6000",
                   "--stall-exit-s", "0", "--heartbeat-s", "0.25") as d:
            gateway = start_gateway(modbus_config(tmp_path, plc.port, d.results_out,
                                                  extra="progress_timeout_s = 1.0"))
            try:
                wait_for(lambda: heartbeat_toggles(plc) and not plc.coil(FAULT), 30,
                         "a healthy line")
                for i in range(3):
                    d.sender.send(header("bad", i, (256, 512)), strip(i, (256, 512)))
                wait_for(lambda: plc.u32(BAD["results"]) == 1, 20, "the first verdict")
                hung_at = time.monotonic()
                took = wait_for(lambda: plc.coil(FAULT), 15, "the fault bit")
                # stall_s (or progress_timeout_s), a heartbeat period, one PLC write,
                # with room for a loaded CI machine.
                assert took <= min(stall_s, 1.0) + 0.25 + 2.0, took
                assert time.monotonic() - hung_at > 0.5  # not before the stall
            finally:
                stop_process(gateway)
            assert expect in gateway.stderr.read()


class DroppingProxy:
    """Between daemon and gateway: forwards the daemon's PUB messages, drops every n-th
    `reject` and `event` message (a lossy link or a subscriber that fell behind)."""

    def __init__(self, upstream: str, every: int) -> None:
        self.endpoint = free_endpoint()
        self.every = every
        self.dropped: list[tuple[str, int]] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(upstream,), daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    def _run(self, upstream: str) -> None:
        import json

        context = zmq.Context.instance()
        sub, pub = context.socket(zmq.SUB), context.socket(zmq.PUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(upstream)
        pub.bind(self.endpoint)
        self._ready.set()
        count = 0
        try:
            while not self._stop.is_set():
                if not sub.poll(100):
                    continue
                parts = sub.recv_multipart()
                topic = parts[0].decode()
                if topic in ("reject", "event"):
                    count += 1
                    if count % self.every == 0:
                        self.dropped.append((topic, json.loads(parts[1])["seq"]))
                        continue
                pub.send_multipart(parts)
        finally:
            sub.close(0)
            pub.close(0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


def test_messages_lost_between_daemon_and_gateway_fault_it_and_are_named(
        trained_bundle, plc, tmp_path):
    daemon_config = tmp_path / "serve.toml"
    daemon_config.write_text(DAEMON_CONFIG)
    with serve(trained_bundle, "--config", str(daemon_config), "--heartbeat-s", "0.25") as d:
        proxy = DroppingProxy(d.results_out, every=10)
        gateway = start_gateway(modbus_config(tmp_path, plc.port, proxy.endpoint))
        faults = []
        try:
            wait_for(lambda: heartbeat_toggles(plc), 30, "the gateway's heartbeat word")
            for i in range(12):
                d.sender.send(header("bad", i, (256, 512)), strip(i, (256, 512)))
            wait_for(lambda: any(t == "reject" for t, _ in proxy.dropped), 30,
                     "a dropped result")
            wait_for(lambda: faults.append(plc.coil(FAULT)) or any(faults), 10,
                     "the fault bit")
        finally:
            stop_process(gateway)
            proxy.close()
    log = gateway.stderr.read()
    assert "messages from the daemon lost" in log
    for topic, seq in proxy.dropped:
        assert f"{topic} seq {seq}..{seq} " in log, (topic, seq)


@pytest.mark.parametrize("pulse_ms", [0, 20])  # level (count the counter) and pulse mode
def test_ten_quick_rejects_are_ten_countable_events_at_the_plc(trained_bundle, plc,
                                                               tmp_path, pulse_ms):
    daemon_config = tmp_path / "serve.toml"
    daemon_config.write_text(DAEMON_CONFIG)
    with serve(trained_bundle, "--config", str(daemon_config)) as d:
        gateway = start_gateway(modbus_config(tmp_path, plc.port, d.results_out,
                                              pulse_ms=pulse_ms))
        try:
            wait_for(lambda: heartbeat_toggles(plc) and not plc.coil(FAULT), 30,
                     "a healthy line")
            rising, counted, sampling = [], [], True

            def scan() -> None:  # a PLC scan cycle of 5 ms: edges and counter increments
                last_bit, last_count = False, plc.u32(BAD["rejects"])
                while sampling:
                    bit, count = plc.coil(BAD["reject"]), plc.u32(BAD["rejects"])
                    if bit and not last_bit:
                        rising.append(time.monotonic())
                    counted.append(count - last_count)
                    last_bit, last_count = bit, count
                    time.sleep(0.005)

            scanner = threading.Thread(target=scan)
            scanner.start()
            for i in range(10):  # published back to back, well under 5 ms apart
                d.sender.send(header("bad", i, (256, 512), line_position=1000.0 + 10 * i),
                              strip(i, (256, 512)))
            wait_for(lambda: plc.u32(BAD["rejects"]) == 10, 30, "ten rejects")
            time.sleep(1.5 if pulse_ms else 0.2)  # the pulse train runs out
            sampling = False
            scanner.join()
            assert sum(counted) == 10  # counter mode: every reject counts
            assert plc.u32(BAD["line_position"]) == 1090  # the ejector's encoder count
            if pulse_ms:
                assert len(rising) == 10  # pulse mode: one rising edge per reject
                assert plc.coil(BAD["reject"]) is False
            assert plc.coil(FAULT) is False
        finally:
            stop_process(gateway)
