"""A loopback TCP proxy that can drop every connection through it on demand.

Clients connect to ``proxy.port``; each connection is relayed to
``127.0.0.1:upstream_port``. :meth:`CuttingProxy.cut` resets every open
connection at once (both sides see a TCP RST), the way a flapping network or a
restarted load balancer drops clients. New connections are accepted as usual
afterwards, so clients that reconnect go on working.

One thread runs a selector loop over every socket; ``cut`` and ``stop`` hand
their work to that thread, so no socket is closed under a thread that uses it.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
from dataclasses import dataclass


@dataclass
class _Pair:
    client: socket.socket
    upstream: socket.socket
    # bytes waiting to be written to each side
    to_client: bytearray
    to_upstream: bytearray


class CuttingProxy:
    """Relay ``host:port`` to ``host:upstream_port``; ``cut()`` drops every connection."""

    def __init__(self, upstream_port: int, port: int = 0, host: str = "127.0.0.1") -> None:
        self.host = host
        self.upstream_port = upstream_port
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, port))
        self._listener.listen(64)
        self._listener.setblocking(False)
        self.port = int(self._listener.getsockname()[1])
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._pairs: list[_Pair] = []
        self._lock = threading.Lock()
        self._cut_requests = 0
        self._cut_done = threading.Condition(self._lock)
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="cutting-proxy", daemon=True)
        self.accepted = 0
        self.refused = 0
        self.cuts = 0
        self.dropped = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> CuttingProxy:
        self._selector.register(self._listener, selectors.EVENT_READ, "accept")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread.start()
        return self

    def cut(self, timeout: float = 10.0) -> int:
        """Reset every open connection; returns how many were dropped."""
        with self._lock:
            target = self.cuts + 1
            before = self.dropped
            self._cut_requests += 1
        self._wake()
        with self._cut_done:
            self._cut_done.wait_for(lambda: self.cuts >= target, timeout)
            return self.dropped - before

    def open_connections(self) -> int:
        with self._lock:
            return len(self._pairs)

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
        self._wake()
        self._thread.join(timeout=10)

    def __enter__(self) -> CuttingProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the loop thread ---------------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _loop(self) -> None:
        try:
            while True:
                with self._lock:
                    stopping = self._stopping
                    cut = self._cut_requests
                    self._cut_requests = 0
                if stopping:
                    break
                if cut:
                    self._drop_all()
                for key, events in self._selector.select(timeout=0.5):
                    if key.data == "accept":
                        self._accept()
                    elif key.data == "wake":
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(4096)
                    else:
                        self._pump(key.data, key.fileobj, events)
        finally:
            self._drop_all(count=False)
            for sock in (self._listener, self._wake_r, self._wake_w):
                with contextlib.suppress(OSError, KeyError, ValueError):
                    self._selector.unregister(sock)
                sock.close()
            self._selector.close()

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        try:
            upstream = socket.create_connection((self.host, self.upstream_port), timeout=5)
        except OSError:
            _reset(client)
            self.refused += 1
            return
        for sock in (client, upstream):
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pair = _Pair(client, upstream, bytearray(), bytearray())
        self._selector.register(client, selectors.EVENT_READ, pair)
        self._selector.register(upstream, selectors.EVENT_READ, pair)
        with self._lock:
            self._pairs.append(pair)
            self.accepted += 1

    def _pump(self, pair: _Pair, sock: object, events: int) -> None:
        source_is_client = sock is pair.client
        source = pair.client if source_is_client else pair.upstream
        target = pair.upstream if source_is_client else pair.client
        out = pair.to_upstream if source_is_client else pair.to_client
        try:
            if events & selectors.EVENT_WRITE:
                self._flush(pair, source, pair.to_client if source_is_client else pair.to_upstream)
            if events & selectors.EVENT_READ:
                data = source.recv(256 * 1024)
                if not data:
                    self._close(pair)
                    return
                out += data
                self._flush(pair, target, out)
        except OSError:
            self._close(pair)

    def _flush(self, pair: _Pair, sock: socket.socket, buffer: bytearray) -> None:
        if buffer:
            try:
                sent = sock.send(buffer)
            except BlockingIOError:
                sent = 0
            del buffer[:sent]
        wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if buffer else 0)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.modify(sock, wanted, pair)

    def _close(self, pair: _Pair, reset: bool = False) -> None:
        for sock in (pair.client, pair.upstream):
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)
            if reset:
                _reset(sock)
            else:
                with contextlib.suppress(OSError):
                    sock.close()
        with self._lock:
            if pair in self._pairs:
                self._pairs.remove(pair)

    def _drop_all(self, count: bool = True) -> None:
        with self._lock:
            pairs = list(self._pairs)
        for pair in pairs:
            self._close(pair, reset=True)
        if count:
            with self._cut_done:
                self.dropped += len(pairs)
                self.cuts += 1
                self._cut_done.notify_all()


def _reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets a TCP RST, not an orderly FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()
