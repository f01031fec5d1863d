"""The exceptions of invoicehook, in one tree.

The worker decides what to do with a failed step from the class alone:
``TransientError`` is retried with backoff, ``PermanentError`` goes straight to the dead
letters, anything else is retried like a transient error (a bug may be fixed by a deploy).
The web layer answers a request from the class too: each request error carries its status.
"""

from __future__ import annotations


class InvoicehookError(Exception):
    """Base of every error raised on purpose by invoicehook."""


class SettingsError(InvoicehookError):
    """A setting is missing or wrong; the message names the key and what it expects."""


class TransientError(InvoicehookError):
    """An outside system failed in a way that may pass (timeout, 5xx, 429, refused connection)."""


class PermanentError(InvoicehookError):
    """Retrying cannot help (bad credentials, rejected recipient); a person must act."""


class BadRequest(InvoicehookError):
    """A request body or signature is not acceptable; the message says why."""

    status = 400

    def __init__(self, message: str, fields: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.fields = fields or {}


class InvalidFields(BadRequest):
    """Fields missing or invalid, each with its reason (a Zap's post)."""

    status = 422

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("some fields are missing or invalid: " + ", ".join(sorted(fields)), fields)


class Unauthorized(InvoicehookError):
    """The request does not carry the source's secret."""

    status = 401


class Rejected(InvoicehookError):
    """An authentic delivery that is not valid: kept (outcome "rejected") and refused.

    Kept so that the seller sees it and can replay it once the cause is fixed; ``cause``
    says what was wrong and gives the answer's status."""

    def __init__(self, cause: BadRequest, *, event_id: str, event_type: str, raw: str) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.event_id = event_id
        self.event_type = event_type
        self.raw = raw
