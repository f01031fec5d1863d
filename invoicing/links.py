"""Signed links to invoice PDFs: the HMAC of the number, with a key kept in the database.

The key is made on first start and stored, so links in old emails keep working after a
restart or a move to another machine that shares the database.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import quote

from sqlalchemy import Engine

from invoicing import records
from invoicing.store import write

KEY_NAME = "link_key"


def load_key(engine: Engine) -> bytes:
    with write(engine) as conn:
        records.set_meta(conn, KEY_NAME, secrets.token_hex(32), only_if_new=True)
        value = records.get_meta(conn, KEY_NAME)
    assert value is not None
    return bytes.fromhex(value)


class LinkSigner:
    def __init__(self, key: bytes, public_url: str) -> None:
        self._key = key
        self.public_url = public_url.rstrip("/")

    def signature(self, number: str) -> str:
        return hmac.new(self._key, number.encode(), hashlib.sha256).hexdigest()[:32]

    def verify(self, number: str, sig: str) -> bool:
        return hmac.compare_digest(self.signature(number).encode(), sig.encode())

    def url(self, number: str) -> str:
        return (
            f"{self.public_url}/invoices/{quote(number, safe='')}.pdf?sig={self.signature(number)}"
        )

    def export_url(self, name: str, expires: int) -> str:
        """A download link for one export file (``2026-11.zip``), valid until ``expires``
        (a Unix time): it opens a month of invoices, so unlike an invoice link it ends."""
        sig = self.signature(f"export:{name}:{expires}")
        return f"{self.public_url}/exports/{quote(name, safe='')}?expires={expires}&sig={sig}"

    def verify_export(self, name: str, expires: str, sig: str, now: float) -> bool:
        # isdigit() alone lets "²" through, which int() refuses (a 500, found by fuzzing).
        if not (expires.isascii() and expires.isdigit()) or int(expires) < now:
            return False
        return self.verify(f"export:{name}:{expires}", sig)

    def __repr__(self) -> str:
        return f"LinkSigner(public_url={self.public_url!r})"
