"""The exceptions of invoicehook, in one tree.

The worker decides what to do with a failed step from the class alone:
``TransientError`` is retried with backoff, ``PermanentError`` goes straight to the dead
letters, anything else is retried like a transient error (a bug may be fixed by a deploy).
"""


class InvoicehookError(Exception):
    """Base of every error raised on purpose by invoicehook."""


class SettingsError(InvoicehookError):
    """A setting is missing or wrong; the message names the key and what it expects."""


class TransientError(InvoicehookError):
    """An outside system failed in a way that may pass (timeout, 5xx, 429, refused connection)."""


class PermanentError(InvoicehookError):
    """Retrying cannot help (bad credentials, rejected recipient); a person must act."""


class BadRequest(InvoicehookError):
    """A webhook body or signature is not acceptable; the message says why."""
