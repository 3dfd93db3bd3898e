"""PLC writers behind one interface: Modbus TCP (pymodbus) and OPC UA (asyncua).

Both are imported inside their writer, so the gateway loads only the one it uses.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from typing import Any

from lineside.edge.plc.config import PlcConfig


class PlcWriteError(RuntimeError):
    """The PLC refused a write or the connection is gone."""


class PlcWriter(ABC):
    @abstractmethod
    async def connect(self) -> None: ...

    @abstractmethod
    async def write_bit(self, tag: Any, value: bool) -> None: ...

    @abstractmethod
    async def write_u16(self, tag: Any, value: int) -> None: ...

    @abstractmethod
    async def write_u32(self, tag: Any, value: int) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...


class ModbusWriter(PlcWriter):
    """Bits are coils, words are holding registers; 32-bit values take two registers,
    high word first (the order most PLCs' DINT mapping uses)."""

    def __init__(self, config: PlcConfig) -> None:
        from pymodbus.client import AsyncModbusTcpClient

        self.client = AsyncModbusTcpClient(config.host, port=config.port, timeout=2,
                                           retries=0)
        self.unit = config.unit

    async def connect(self) -> None:
        if not await self.client.connect():
            raise PlcWriteError("Modbus TCP connection failed")

    async def _check(self, response: Any, what: str) -> None:
        if response is None or response.isError():
            raise PlcWriteError(f"Modbus {what} refused: {response}")

    async def write_bit(self, tag: Any, value: bool) -> None:
        try:
            response = await self.client.write_coil(int(tag), bool(value), device_id=self.unit)
        except Exception as exc:  # pymodbus raises ConnectionException, ModbusIOException...
            raise PlcWriteError(f"Modbus coil {tag}: {exc}") from exc
        await self._check(response, f"coil {tag}")

    async def write_u16(self, tag: Any, value: int) -> None:
        await self._registers(int(tag), [int(value) & 0xFFFF])

    async def write_u32(self, tag: Any, value: int) -> None:
        value = int(value) & 0xFFFFFFFF
        await self._registers(int(tag), [value >> 16, value & 0xFFFF])

    async def _registers(self, address: int, values: list[int]) -> None:
        try:
            response = await self.client.write_registers(address, values, device_id=self.unit)
        except Exception as exc:
            raise PlcWriteError(f"Modbus registers {address}: {exc}") from exc
        await self._check(response, f"registers {address}")

    async def close(self) -> None:
        self.client.close()


class OpcUaWriter(PlcWriter):
    """Tags are node ids (e.g. `ns=2;s=Line1.Cam0.Reject`); values are written with the
    OPC UA types Boolean, UInt16 and UInt32."""

    def __init__(self, config: PlcConfig) -> None:
        from asyncua import Client

        self.client = Client(config.url, timeout=2)
        self.config = config
        self._connected = False

    async def _secure(self) -> None:
        """Sign (and encrypt) the session with the configured policy and certificates."""
        from asyncua import ua
        from asyncua.crypto import security_policies

        policy, _, mode = self.config.opcua_security.partition(",")
        self.client.application_uri = self.config.opcua_application_uri
        await self.client.set_security(
            getattr(security_policies, f"SecurityPolicy{policy}"),
            self.config.opcua_certificate, self.config.opcua_private_key,
            server_certificate=self.config.opcua_server_certificate or None,
            mode=getattr(ua.MessageSecurityMode, mode or "SignAndEncrypt"))

    async def connect(self) -> None:
        try:
            if self.config.opcua_security:
                await self._secure()
            await self.client.connect()
        except Exception as exc:
            raise PlcWriteError(f"OPC UA connection failed: {exc}") from exc
        self._connected = True

    async def _write(self, tag: Any, value: Any, variant: str) -> None:
        from asyncua import ua

        try:
            node = self.client.get_node(str(tag))
            await node.write_value(ua.DataValue(ua.Variant(value, getattr(ua.VariantType,
                                                                          variant))))
        except Exception as exc:
            raise PlcWriteError(f"OPC UA {tag}: {exc}") from exc

    async def write_bit(self, tag: Any, value: bool) -> None:
        await self._write(tag, bool(value), "Boolean")

    async def write_u16(self, tag: Any, value: int) -> None:
        await self._write(tag, int(value) & 0xFFFF, "UInt16")

    async def write_u32(self, tag: Any, value: int) -> None:
        await self._write(tag, int(value) & 0xFFFFFFFF, "UInt32")

    async def close(self) -> None:
        if self._connected:
            with contextlib.suppress(Exception):  # a dead server cannot be told goodbye
                await self.client.disconnect()
            self._connected = False


def create_writer(config: PlcConfig) -> PlcWriter:
    return ModbusWriter(config) if config.protocol == "modbus" else OpcUaWriter(config)
