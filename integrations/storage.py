"""Where invoice PDFs (and the database's backups) are kept: a local folder (a Fly volume)
by default, or an S3-compatible bucket (Tigris, AWS, MinIO, R2…) with ``s3://bucket/prefix``.

Both behind the same small interface: ``put`` (safe to repeat: the same key gets the same
bytes), ``get``, ``describe``, and for big files ``put_file``/``get_file``, which stream
from and to disk instead of holding the file in memory.

boto3 is imported only when a bucket is first used: it costs about 30 MB and half a
second, which a service storing on its volume never pays.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from invoicing.errors import PermanentError, SettingsError, TransientError


class Storage(Protocol):
    def put(self, key: str, data: bytes) -> str: ...

    def get(self, key: str) -> bytes: ...

    def describe(self, key: str) -> str: ...

    def put_file(self, key: str, path: Path) -> str: ...

    def get_file(self, key: str, path: Path) -> None: ...


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
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(path, data)
        except OSError as exc:
            # Retried like an outage: the disk may have room again by the next attempt.
            raise TransientError(f"storage {self.root}: cannot write {key}: {_why(exc)}") from exc
        return str(path)

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def describe(self, key: str) -> str:
        return str(self._path(key))

    def put_file(self, key: str, path: Path) -> str:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        os.close(fd)
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return str(target)

    def get_file(self, key: str, path: Path) -> None:
        shutil.copyfile(self._path(key), path)

    def __repr__(self) -> str:
        return f"FileStorage({str(self.root)!r})"


def _why(exc: OSError) -> str:
    """An OS error as the seller reads it: a full disk says so, and what to do."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"the disk is full ({exc.strerror}); free some space or extend the volume"
    return f"{type(exc).__name__}: {exc}"


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


# --- S3 ---------------------------------------------------------------------------------------

# Errors S3 answers that retrying cannot fix: a person must create the bucket or fix the keys.
_PERMANENT = {
    "NoSuchBucket": "does not exist",
    "AccessDenied": "refuses these credentials (access denied)",
    "AllAccessDisabled": "refuses every access",
    "InvalidAccessKeyId": "does not know AWS_ACCESS_KEY_ID",
    "SignatureDoesNotMatch": "rejects AWS_SECRET_ACCESS_KEY (signature does not match)",
    "InvalidBucketName": "is not a valid bucket name",
    "AccountProblem": "refuses the account",
}
# Big files go up in parts of 8 MB, two at a time: at most ~16 MB of buffers on a 256 MB machine.
_PART_BYTES = 8 * 1024 * 1024
_PARTS_AT_ONCE = 2


class S3Storage:
    """Objects in ``bucket`` under ``prefix/``. Endpoint and credentials are given, else
    botocore's usual chain finds them (AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID, …)."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.bucket = bucket
        self.timeout = timeout  # seconds S3 may stay silent, per attempt
        self.prefix = prefix.strip("/")
        self.endpoint = endpoint
        self.region = region
        self._access = (access_key_id, secret_access_key)
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def where(self) -> str:
        """The bucket and endpoint, as an error message names them."""
        return f"bucket {self.bucket!r} at {self.endpoint or 'the default AWS endpoint'}"

    def _key(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"storage key escapes the storage prefix: {key!r}")
        return f"{self.prefix}/{key}" if self.prefix else key

    def client(self) -> Any:
        # Built on first use, once per process (boto3 clients are thread-safe; sessions not).
        with self._lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                key_id, secret = self._access
                self._client = boto3.session.Session().client(
                    "s3",
                    endpoint_url=self.endpoint,
                    region_name=self.region,
                    aws_access_key_id=key_id,
                    aws_secret_access_key=secret,
                    config=Config(
                        connect_timeout=min(5.0, self.timeout),
                        read_timeout=self.timeout,
                        retries={"mode": "standard", "max_attempts": 3},
                    ),
                )
            return self._client

    def _call(self, what: str, key: str, run: Any) -> Any:
        """Run one S3 call, turning botocore's errors into ours: a clear message naming
        the bucket and endpoint, transient or permanent as retrying may or may not help."""
        from boto3.exceptions import S3UploadFailedError
        from botocore import exceptions as boto

        try:
            return run(self.client())
        except S3UploadFailedError as exc:
            # boto3's transfer folds S3's answer into its message: "An error occurred (Code)…"
            code = str(exc).partition("An error occurred (")[2].partition(")")[0]
            if code in _PERMANENT:
                raise PermanentError(
                    f"S3 {what} of {key!r}: {self.where} {_PERMANENT[code]}"
                ) from None
            raise TransientError(f"S3 {what} of {key!r}: {self.where}: {exc}") from None
        except boto.ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if what == "check" and status == 404:  # HEAD answers have no body, no code
                code = "NoSuchBucket"
            elif code in ("NoSuchKey", "404"):
                raise FileNotFoundError(f"s3://{self.bucket}/{self._key(key)}") from None
            if code in _PERMANENT:
                raise PermanentError(
                    f"S3 {what} of {key!r}: {self.where} {_PERMANENT[code]}"
                ) from None
            if status == 403:
                raise PermanentError(
                    f"S3 {what} of {key!r}: {self.where} answered 403 {code}: "
                    "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                ) from None
            if status >= 500 or status in (408, 429) or code in ("SlowDown", "RequestTimeout"):
                raise TransientError(
                    f"S3 {what} of {key!r}: {self.where} answered {status} {code}"
                ) from None
            raise PermanentError(
                f"S3 {what} of {key!r}: {self.where} answered {status} {code}: "
                f"{error.get('Message', '')}"
            ) from None
        except boto.NoCredentialsError:
            raise SettingsError(
                f"AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY: not set, and {self.where} "
                "needs them (`fly storage create` sets them as secrets)"
            ) from None
        except (boto.ReadTimeoutError, boto.ConnectTimeoutError):
            raise TransientError(
                f"S3 {what} of {key!r}: {self.where} did not answer within {self.timeout:g} s"
            ) from None
        except (boto.EndpointConnectionError, boto.ConnectionError, boto.HTTPClientError) as exc:
            raise TransientError(f"S3 {what} of {key!r}: {self.where} unreachable: {exc}") from None
        except boto.BotoCoreError as exc:
            raise TransientError(f"S3 {what} of {key!r}: {self.where}: {exc}") from None

    def put(self, key: str, data: bytes) -> str:
        # PUT replaces the object whole: repeating it with the same bytes is harmless.
        self._call(
            "put",
            key,
            lambda s3: s3.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=_media(key)
            ),
        )
        return self.describe(key)

    def get(self, key: str) -> bytes:
        answer = self._call(
            "get", key, lambda s3: s3.get_object(Bucket=self.bucket, Key=self._key(key))
        )
        return bytes(answer["Body"].read())

    def describe(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def _transfer(self) -> Any:
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(
            multipart_threshold=_PART_BYTES,
            multipart_chunksize=_PART_BYTES,
            max_concurrency=_PARTS_AT_ONCE,
        )

    def put_file(self, key: str, path: Path) -> str:
        """Upload a file from disk in parts: never the whole file in memory."""
        extra = {"ContentType": _media(key)}
        self._call(
            "upload",
            key,
            lambda s3: s3.upload_file(
                str(path), self.bucket, self._key(key), ExtraArgs=extra, Config=self._transfer()
            ),
        )
        return self.describe(key)

    def get_file(self, key: str, path: Path) -> None:
        self._call(
            "download",
            key,
            lambda s3: s3.download_file(
                self.bucket, self._key(key), str(path), Config=self._transfer()
            ),
        )

    def list_keys(self, folder: str) -> list[str]:
        """The keys under ``folder/`` (relative to the prefix), in order."""
        start = self._key(folder.strip("/")) + "/"

        def run(s3: Any) -> list[str]:
            found: list[str] = []
            for page in s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=start
            ):
                found += [item["Key"] for item in page.get("Contents", [])]
            return found

        strip = len(self.prefix) + 1 if self.prefix else 0
        return sorted(key[strip:] for key in self._call("list", folder, run))

    def check(self) -> str:
        """Reachable and writable: an object written, read back and deleted."""
        key = ".invoicehook-check"
        self._call("check", key, lambda s3: s3.head_bucket(Bucket=self.bucket))
        self.put(key, b"ok")
        if self.get(key) != b"ok":
            raise PermanentError(f"{self.where}: what was written could not be read back")
        self._call(
            "delete", key, lambda s3: s3.delete_object(Bucket=self.bucket, Key=self._key(key))
        )
        return f"writable (s3://{self.bucket}/{self.prefix} at {self.endpoint or 'AWS'})"

    def __repr__(self) -> str:
        return f"S3Storage({self.describe('')!r}, endpoint={self.endpoint!r})"


def _media(key: str) -> str:
    if key.endswith(".pdf"):
        return "application/pdf"
    if key.endswith(".db"):
        return "application/vnd.sqlite3"
    return "application/octet-stream"


def s3_location(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` → (bucket, prefix), or a SettingsError naming STORAGE_URL."""
    parts = urlsplit(url)
    bucket = parts.netloc
    if not 3 <= len(bucket) <= 63 or bucket != bucket.lower() or "_" in bucket:
        raise SettingsError(
            f"STORAGE_URL: expected s3://bucket/prefix with a bucket name of 3 to 63 "
            f"lower-case letters, digits, dots or hyphens, got {url!r}"
        )
    return bucket, parts.path.strip("/")


def storage_from_url(
    url: str,
    *,
    endpoint: str | None = None,
    region: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    timeout: float = 30.0,
) -> Storage:
    if url.startswith("file://"):
        return FileStorage(file_url_path(url))
    if url.startswith("s3://"):
        bucket, prefix = s3_location(url)
        return S3Storage(
            bucket,
            prefix,
            endpoint=endpoint,
            region=region,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            timeout=timeout,
        )
    raise SettingsError(f"STORAGE_URL: expected file://… or s3://…, got {url.split(':', 1)[0]!r}")
