"""PLC gateway: the daemon's verdicts into Modbus TCP or OPC UA tags, fail-safe."""
