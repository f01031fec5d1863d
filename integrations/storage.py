"""Where invoice PDFs are kept: a local folder (a Fly volume) by default.

S3-compatible stores come in a later issue behind the same two methods.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Protocol

from invoicing.errors import SettingsError


class Storage(Protocol):
    def put(self, key: str, data: bytes) -> str: ...

    def get(self, key: str) -> bytes: ...

    def describe(self, key: str) -> str: ...


class FileStorage:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"storage key escapes the storage folder: {key!r}")
        return path

    def put(self, key: str, data: bytes) -> str:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, data)
        return str(path)

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def describe(self, key: str) -> str:
        return str(self._path(key))

    def __repr__(self) -> str:
        return f"FileStorage({str(self.root)!r})"


def write_atomically(path: Path, data: bytes) -> None:
    """Write then rename: a crash or a reader never meets half a file under the final name."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_url_path(url: str) -> Path:
    """``file://var/x`` is relative to the working folder, ``file:///srv/x`` absolute."""
    rest = url[len("file://") :]
    return Path(rest) if rest else Path(".")


def storage_from_url(url: str) -> Storage:
    if url.startswith("file://"):
        return FileStorage(file_url_path(url))
    raise SettingsError(f"STORAGE_URL: expected file://…, got {url.split(':', 1)[0]!r}")
