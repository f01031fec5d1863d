"""The HTTP protocol ``invoicehook serve`` runs: uvicorn's httptools one, with a bounded head.

uvicorn's h11 protocol refuses a request line and headers over 16 KiB, but the httptools
one, which it picks whenever httptools is installed (as here, for speed), has no bound: a
client sending one endless header had the server keep all of it in memory. This one counts
the bytes of each request's head as they arrive and answers 431 past ``MAX_HEAD``, then
closes that connection; the others are served as before.
"""

from __future__ import annotations

import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD = 64 * 1024  # request line and headers; Stripe's and Zapier's need a few KiB
log = logging.getLogger("invoicehook.http")
MESSAGE = b"Request line and headers are too large."


class HeadTooLarge(Exception):
    pass


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._in_head = True
        self._too_large = False

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        # A head still incomplete past the bound (one endless header): no more is read.
        if self._in_head and self._head_bytes > MAX_HEAD and not self.transport.is_closing():
            self._refuse()

    def on_headers_complete(self) -> None:
        # A head that came whole in one read (up to 256 KiB) is measured here.
        size = len(self.url) + sum(len(name) + len(value) for name, value in self.headers)
        if size > MAX_HEAD:
            self._too_large = True
            raise HeadTooLarge  # httptools stops; uvicorn answers through send_400_response
        self._in_head = False
        self._head_bytes = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True  # what comes next on this connection is the next request's head

    def send_400_response(self, msg: str) -> None:
        if self._too_large:
            self._refuse()
        else:
            super().send_400_response(msg)

    def _refuse(self) -> None:
        log.warning("a request's line and headers were over %d bytes: refused (431)", MAX_HEAD)
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: text/plain; charset=utf-8\r\n"
            b"content-length: " + str(len(MESSAGE)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + MESSAGE
        )
        self.transport.close()
