"""A TCP proxy in front of a local fake (moto's S3, the Google fake, the Stripe fake) that a
test switches between three states, as an outside system behaves on a bad day:

- ``up()``: every byte is passed both ways;
- ``down()``: connections are refused outright, and those open are cut (an outage);
- ``hang()``: connections are accepted and requests read, but nothing is answered, ever
  (a server that hangs): only the client's own timeout gets it out.

A request swallowed while hung never reaches the server behind, so it cannot have taken
effect there; its connection is closed once the proxy is up again (the client gave up on it
long before). Used by tests/test_faults_*.py through ``FaultProxy(port).start()``.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading


class FaultProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.state = "up"
        self.swallowed = 0  # requests (reads) a hang kept from the server
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._listen()
        threading.Thread(target=self._accept, name="fault-proxy", daemon=True).start()
        return self

    def _listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener

    def up(self) -> None:
        self.state = "up"

    def hang(self) -> None:
        self.state = "hang"

    def down(self) -> None:
        """Refused and cut: every open connection is closed, new ones are reset at once."""
        self.state = "down"
        with self._lock:
            for sock in list(self._open):
                _close(sock)

    def stop(self) -> None:
        self._stopping.set()
        if self._listener is not None:
            _close(self._listener)
        with self._lock:
            for sock in list(self._open):
                _close(sock)

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.state == "down":
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                _close(client)  # a reset: "connection refused" as far as the client can tell
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        poisoned = False  # a request was swallowed: this connection can never be answered
        with self._lock:
            self._open.add(client)
        try:
            while not self._stopping.is_set():
                if self.state == "down":
                    return
                if poisoned and self.state == "up":
                    return  # the client gave up on it long ago; cut it now
                watched = [client] + ([upstream] if upstream is not None else [])
                readable, _, _ = select.select(watched, [], [], 0.05)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is client:
                        if self.state == "hang" or poisoned:
                            poisoned = True
                            self.swallowed += 1
                            continue
                        if upstream is None:
                            upstream = socket.create_connection(self.target, timeout=5)
                            upstream.settimeout(None)
                            with self._lock:
                                self._open.add(upstream)
                        upstream.sendall(data)
                    elif not poisoned:
                        client.sendall(data)
        except (OSError, ValueError):  # cut by down() or stop() meanwhile
            return
        finally:
            with self._lock:
                self._open.discard(client)
                if upstream is not None:
                    self._open.discard(upstream)
            _close(client)
            if upstream is not None:
                _close(upstream)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
