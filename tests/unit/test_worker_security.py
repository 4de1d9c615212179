"""kafka_hint: which step of a secured connection failed, never with a secret in it (local sockets only)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from worker.security import kafka_hint

PASSWORD = "s3cret-canary"


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts and closes: a TLS handshake with it fails."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join()
    server.close()


def _args(port: int, protocol: str) -> dict[str, object]:
    return {
        "bootstrap_servers": [f"127.0.0.1:{port}"],
        "security_protocol": protocol,
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "worker",
        "sasl_plain_password": PASSWORD,
    }


def test_a_closed_port_is_reported_as_a_tcp_failure() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connections are refused
        hint = kafka_hint(_args(port, "SASL_SSL"), timeout_s=2)
    assert hint.startswith(f"; TCP connection to 127.0.0.1:{port} failed")
    assert PASSWORD not in hint


def test_a_server_without_tls_fails_the_handshake(silent_server: int) -> None:
    hint = kafka_hint(_args(silent_server, "SASL_SSL"), timeout_s=2)
    assert f"TLS handshake with 127.0.0.1:{silent_server} failed" in hint and PASSWORD not in hint


def test_sasl_without_tls_points_at_the_login(silent_server: int) -> None:
    hint = kafka_hint(_args(silent_server, "SASL_PLAINTEXT"), timeout_s=2)
    assert "SASL SCRAM-SHA-512 login as 'worker'" in hint and PASSWORD not in hint


def test_missing_tls_files_are_named(silent_server: int) -> None:
    args = {**_args(silent_server, "SSL"), "ssl_cafile": "/nonexistent/ca.crt"}
    assert "cannot load the TLS files" in kafka_hint(args, timeout_s=2)


def test_plaintext_or_no_servers_give_no_hint(silent_server: int) -> None:
    assert kafka_hint(_args(silent_server, "PLAINTEXT"), timeout_s=2) == ""
    assert kafka_hint({"bootstrap_servers": []}) == ""
