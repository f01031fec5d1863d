"""Who may open the admin page and the exports: whoever presents ``ADMIN_TOKEN``.

A script sends ``Authorization: Bearer <token>``; a browser shows its login box (Basic, any
user name, the token as password), which is why a refused request says ``WWW-Authenticate:
Basic``. Without ``ADMIN_TOKEN`` these routes stay closed: an invoice book is not public.
Tokens are compared as digests in constant time, so neither their content nor their length
leaks through timing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping

from invoicing.errors import InvoicehookError
from invoicing.settings import Secret

REALM = 'Basic realm="invoicehook admin", charset="UTF-8"'


class AdminClosed(InvoicehookError):
    """No ADMIN_TOKEN is set: the admin routes answer 503 and say which setting opens them."""

    status = 503


class NotAdmin(InvoicehookError):
    """The request carries no token, or the wrong one: 401 with the browser's login box."""

    status = 401


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(
        hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected.encode()).digest()
    )


def presented_token(headers: Mapping[str, str]) -> str | None:
    """The token a request carries: Bearer, or the password of Basic credentials."""
    value = headers.get("authorization", "")
    scheme, _, credentials = value.partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer" and credentials:
        return credentials
    if scheme.lower() == "basic" and credentials:
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        _, sep, password = decoded.partition(":")
        return password if sep else None
    return None


def check_admin(token: Secret | None, headers: Mapping[str, str]) -> None:
    """Raise unless ``headers`` carry ``token``."""
    if token is None:
        raise AdminClosed("the admin page and exports are closed: set ADMIN_TOKEN to open them")
    given = presented_token(headers)
    if given is None:
        raise NotAdmin("this page needs ADMIN_TOKEN (Authorization: Bearer <token>, or Basic)")
    if not _same(given, token.reveal()):
        raise NotAdmin("wrong ADMIN_TOKEN")
