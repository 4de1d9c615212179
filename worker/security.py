"""Why a secured Kafka connection failed, in one line, for the start-up error message.

kafka-python reports a bad CA or a refused SASL login only as "Unable to bootstrap" after its timeout (the
broker drops the connection after a failed SCRAM exchange). When that happens the worker probes the first
bootstrap server once more itself: TCP, then the TLS handshake with the configured CA. The answer names the
step that failed and the setting to check; it never holds a password.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Mapping
from typing import Any


def _host_port(server: str) -> tuple[str, int]:
    host, _, port = server.rpartition(":")
    return (host.strip("[]") or server, int(port)) if port.isdigit() else (server, 9092)


def tls_context(kafka_args: Mapping[str, Any]) -> ssl.SSLContext:
    """The context kafka-python builds from the same arguments: CA (else the system store), hostname check."""
    ctx = ssl.create_default_context(cafile=kafka_args.get("ssl_cafile"))
    if kafka_args.get("ssl_certfile"):
        ctx.load_cert_chain(
            kafka_args["ssl_certfile"], kafka_args.get("ssl_keyfile"), kafka_args.get("ssl_password")
        )
    return ctx


def kafka_hint(kafka_args: Mapping[str, Any], timeout_s: float = 5.0) -> str:
    """A short explanation (starting with "; ") of why connecting with these arguments failed, or ""."""
    protocol = str(kafka_args.get("security_protocol", "PLAINTEXT"))
    servers = kafka_args.get("bootstrap_servers") or []
    if not servers:
        return ""
    host, port = _host_port(str(servers[0]))
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except OSError as exc:
        return f"; TCP connection to {host}:{port} failed: {exc.strerror or type(exc).__name__}"
    with sock:
        if protocol.endswith("SSL"):
            try:
                ctx = tls_context(kafka_args)
            except (OSError, ssl.SSLError) as exc:
                return f"; cannot load the TLS files (SENTIMENT_KAFKA_SSL_*): {_reason(exc)}"
            try:
                with ctx.wrap_socket(sock, server_hostname=host):
                    pass
            except ssl.SSLCertVerificationError as exc:
                return (
                    f"; TLS certificate check of {host}:{port} failed: {exc.verify_message} "
                    "(is SENTIMENT_KAFKA_SSL_CAFILE the CA that signed the broker's certificate?)"
                )
            except (OSError, ssl.SSLError) as exc:
                return (
                    f"; TLS handshake with {host}:{port} failed: {_reason(exc)} (does it speak {protocol}?)"
                )
    if protocol.startswith("SASL"):
        return (
            f"; {host}:{port} accepts the connection"
            + (" and its TLS certificate" if protocol.endswith("SSL") else "")
            + f", so the SASL {kafka_args.get('sasl_mechanism')} login as "
            f"{kafka_args.get('sasl_plain_username')!r} was most likely refused "
            "(check SENTIMENT_KAFKA_SASL_USERNAME and the password; the broker log names the cause)"
        )
    return ""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    return getattr(exc, "strerror", None) or type(exc).__name__
