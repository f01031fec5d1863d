"""A small HTTP/1.1 load generator: persistent connections, one request in flight on each.

It speaks just enough HTTP for our routes (a status line, headers, a ``Content-Length``
body) on raw asyncio transports, so that the client spends far less CPU per request than
the server it measures. Requests are prepared bytes; latency is measured from the write
of a request to the last byte of its response.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from bench.harness import BenchError, percentile

T = TypeVar("T")


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        if at < 0:
            waiter.set_exception(BenchError("response without Content-Length"))
            return
        eol = head.find(b"\r\n", at + 2)
        length = int(head[at + 17 : eol if eol > 0 else None])
        total = end + 4 + length
        if len(self.buffer) < total:
            return
        status = int(self.buffer[9:12])
        body = bytes(self.buffer[end + 4 : total])
        del self.buffer[:total]
        waiter.set_result((status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"server closed the connection: {exc}"))
        self.transport = None

    async def request(self, data: bytes) -> tuple[int, bytes]:
        if self.transport is None:
            raise ConnectionError("connection is closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@dataclass
class Load:
    """What one run of requests gave: latencies in seconds, in the order requests were sent."""

    latencies: list[float]
    wall: float  # seconds from the first request written to the last response read
    client_cpu: float  # CPU seconds the generator used meanwhile
    statuses: Counter[int] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)  # JSON "status" of the bodies
    errors: int = 0

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.wall if self.wall else 0.0

    def ms(self, q: float) -> float:
        return percentile(sorted(self.latencies), q) * 1000


class Pool:
    """``size`` persistent connections to ``host:port``, opened and used once before any
    timing, so that no measured request pays for a connection being set up or accepted."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self.host = host
        self.port = port
        self.size = size
        self.connections: list[_Connection] = []

    async def open(self, timeout: float = 30) -> Pool:
        """Open every connection, or reopen the ones the server closed (uvicorn closes a
        connection idle for 5 s), and send one request on each, all before any timing."""
        loop = asyncio.get_running_loop()
        check = f"GET /bench-connection-check HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode()

        async def ready(conn: _Connection | None) -> _Connection:
            for _ in range(3):  # the server may close an idle connection as we use it
                if conn is None or conn.transport is None:
                    _, conn = await loop.create_connection(_Connection, self.host, self.port)
                try:
                    # No route answers this (404: no database, no body to read); it opens the
                    # connection on the server's side too.
                    await conn.request(check)
                    return conn
                except ConnectionError:
                    conn.close()
                    conn = None
            raise ConnectionError("the server keeps closing new connections")

        known: list[_Connection | None] = list(self.connections)
        known += [None] * (self.size - len(known))
        try:
            self.connections = list(
                await asyncio.wait_for(asyncio.gather(*(ready(c) for c in known)), timeout)
            )
        except (TimeoutError, OSError) as exc:
            raise BenchError(f"could not open {self.size} connections: {exc!r}") from None
        return self

    def close(self) -> None:
        for conn in self.connections:
            conn.close()

    async def __aenter__(self) -> Pool:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def run(self, requests: list[bytes], concurrency: int, timeout: float = 120) -> Load:
        """Send ``requests``, ``concurrency`` in flight at a time; bounded by ``timeout``."""
        await self.open()
        connections = self.connections[:concurrency]
        latencies = [0.0] * len(requests)
        bodies: list[bytes] = [b""] * len(requests)
        statuses = [0] * len(requests)
        pending = iter(range(len(requests)))

        async def drive(conn: _Connection) -> None:
            for i in pending:
                start = time.perf_counter()
                try:
                    statuses[i], bodies[i] = await conn.request(requests[i])
                except (ConnectionError, BenchError):
                    conn.close()
                    return  # the others carry on with the remaining requests
                latencies[i] = time.perf_counter() - start

        cpu0, t0 = time.process_time(), time.perf_counter()
        try:
            await asyncio.wait_for(asyncio.gather(*(drive(c) for c in connections)), timeout)
        except TimeoutError:
            raise BenchError(f"{len(requests)} requests did not finish in {timeout:g} s") from None
        finally:
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        done = [i for i, status in enumerate(statuses) if status]
        load = Load([latencies[i] for i in done], wall, cpu, Counter(statuses[i] for i in done))
        load.errors = len(requests) - len(done)  # refused, dropped or malformed answers
        for i in done:
            load.outcomes[_outcome(bodies[i])] += 1
        return load


def _outcome(body: bytes) -> str:
    if body.startswith(b"{"):
        try:
            return str(json.loads(body).get("status", "?"))
        except ValueError:
            return "bad json"
    return body[:20].decode(errors="replace")


def run_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when it is there (it is a dependency of the service): a lighter client."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)
