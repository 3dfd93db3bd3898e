"""ZeroMQ CURVE (encryption and client authentication) for lineside's sockets, both sides.

Key files are zmq.auth's certificate format (`zmq.auth.create_certificates`). A bound
daemon socket is a CURVE server with the daemon's secret key; the daemon's ZAP handler
(started in lineside.edge.daemon) admits only clients whose public key file is in
`curve_clients`. A camera, gateway or operator connects as a CURVE client with the
daemon's public key and its own secret key.
"""

from __future__ import annotations

import zmq
import zmq.auth


def curve_server(sock: zmq.Socket, secret_file: str) -> None:
    """Make `sock` a CURVE server with the key pair in `secret_file`."""
    public, secret = zmq.auth.load_certificate(secret_file)
    if secret is None:
        raise RuntimeError(f"{secret_file} holds no secret key")
    sock.curve_secretkey, sock.curve_publickey, sock.curve_server = secret, public, True


def curve_client(sock: zmq.Socket, server_public_file: str, client_secret_file: str) -> None:
    """Make `sock` a CURVE client of the server whose public key is in the first file."""
    server_public, _ = zmq.auth.load_certificate(server_public_file)
    public, secret = zmq.auth.load_certificate(client_secret_file)
    if secret is None:
        raise RuntimeError(f"{client_secret_file} holds no secret key")
    sock.curve_serverkey = server_public
    sock.curve_publickey, sock.curve_secretkey = public, secret
