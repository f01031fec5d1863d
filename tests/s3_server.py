"""A real S3 server on 127.0.0.1 for tests: moto's, in a thread of the test process.

Reach it through the ``s3_server`` fixture (tests/conftest.py), one server for the whole
session; each test makes its own bucket (``new_bucket``), so tests never see each other's
objects. ``env`` gives the variables a service (in process or a subprocess) needs, the same
ones `fly storage create` sets for Tigris.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

ACCESS_KEY_ID = "tid_test_access_key"
SECRET_ACCESS_KEY = "tsec_test_secret_key"
REGION = "auto"  # what Tigris is given; moto accepts it for objects


class S3Server:
    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        # moto's server logs every request through werkzeug, even with verbose=False.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.endpoint = ""

    def start(self) -> S3Server:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        self._server.stop()

    def client(self) -> Any:
        """A boto3 S3 client of this server, to look at what a test stored."""
        import boto3

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
        )

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def new_bucket(self) -> str:
        """A bucket no other test uses."""
        return self.create_bucket(f"invoices-{uuid.uuid4().hex[:12]}")

    def env(self, bucket: str, prefix: str = "invoices") -> dict[str, str]:
        """STORAGE_URL and the AWS variables for ``bucket`` here, for a runtime's
        ``load_settings`` or a subprocess's environment."""
        return {
            "STORAGE_URL": f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}",
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "AWS_REGION": REGION,
        }

    def read(self, bucket: str, key: str) -> bytes:
        return bytes(self.client().get_object(Bucket=bucket, Key=key)["Body"].read())

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        found = self.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
        return sorted(item["Key"] for item in found.get("Contents", []))
