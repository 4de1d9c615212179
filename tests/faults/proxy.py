"""A small TCP proxy for network faults between workers and the broker: added latency, a bandwidth cap, and
a partition (nothing flows either way, new connections hang) that heals.

Threads, one pair of pumps per connection: the suite's traffic is small, and a thread that sleeps is the
simplest honest model of a slow link. A partition holds bytes instead of dropping them, as TCP does while
its retransmissions go unanswered; clients see requests time out, not connections refused.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field

CHUNK = 16 * 1024


@dataclass
class Link:
    """What the link does to every chunk, changeable while it runs."""

    latency_s: float = 0.0
    bytes_per_s: float | None = None  # per direction and connection; None: as fast as loopback


@dataclass
class Proxy:
    listen_port: int
    target_port: int
    host: str = "127.0.0.1"
    link: Link = field(default_factory=Link)
    bytes_forwarded: int = 0

    def __post_init__(self) -> None:
        self._open = threading.Event()
        self._open.set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._server = socket.create_server((self.host, self.listen_port), reuse_port=False)
        self._server.settimeout(0.2)
        self._thread = threading.Thread(target=self._accept, name="proxy-accept", daemon=True)

    def __enter__(self) -> Proxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def partition(self) -> None:
        self._open.clear()

    def heal(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._stop.set()
        self._open.set()
        self._server.close()
        with self._lock:
            for s in self._sockets:
                _close(s)
        self._thread.join(5)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        self._wait_open()  # during a partition a new connection hangs (no SYN-ACK would come back)
        try:
            upstream = socket.create_connection((self.host, self.target_port), timeout=10)
        except OSError:
            _close(client)
            return
        with self._lock:
            self._sockets |= {client, upstream}
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _wait_open(self) -> None:
        while not self._open.wait(0.2):
            if self._stop.is_set():
                return

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not self._stop.is_set():
                data = src.recv(CHUNK)
                if not data:
                    break
                link = self.link
                delay = link.latency_s + (len(data) / link.bytes_per_s if link.bytes_per_s else 0.0)
                if delay:
                    time.sleep(delay)
                self._wait_open()
                dst.sendall(data)
                self.bytes_forwarded += len(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._sockets -= {src, dst}
            _close(src)
            _close(dst)


def _close(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    s.close()
