"""An S3 API server on loopback for tests: moto in server mode, a real HTTP server in its own process.

The workflow's storage plugin (snakemake-storage-plugin-s3) talks to it through boto3 exactly as it would talk to
AWS or MinIO: only the endpoint URL differs. The server keeps everything in memory, so stopping it (by its PID)
leaves nothing behind. Credentials are dummies: moto accepts any key.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

MOTO_SERVER = Path(sys.executable).with_name("moto_server")
# moto accepts any key; these only have to be present so that boto3 signs requests instead of looking for
# a ~/.aws/credentials file
ACCESS_KEY = "mimir-test-key"
SECRET_KEY = "mimir-test-secret"  # noqa: S105 - a dummy, never a real secret
REGION = "us-east-1"


def free_port() -> int:
    """A TCP port nobody listens on at the moment (the server binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class S3Server:
    """moto_server on 127.0.0.1 with one bucket, as a context manager: started, waited for, stopped by PID."""

    def __init__(self, bucket: str = "mimir", log: Path | None = None) -> None:
        self.bucket = bucket
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def client(self) -> Any:
        """A boto3 S3 client of this server (path-style addressing: no DNS names for buckets on loopback)."""
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=botocore.config.Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        )

    def start(self, timeout: float = 60) -> S3Server:
        out = self.log.open("wb") if self.log else subprocess.DEVNULL
        # the caller's environment without its AWS settings (no real credentials or profile reach the server)
        env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
        self.process = subprocess.Popen(
            [str(MOTO_SERVER), "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: stopped as one, never by name
        )
        if out is not subprocess.DEVNULL:
            out.close()  # the child has its own copy
        client = self.client()
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self.process.returncode} (log: {self.log})")
            try:
                client.list_buckets()
                break
            except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectionClosedError):
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"moto_server did not answer on {self.url} within {timeout} s") from None
                time.sleep(0.2)
        client.create_bucket(Bucket=self.bucket)
        return self

    def stop(self) -> None:
        """Ends the server's process group (its PID is the group's id), then waits for it."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=20)
        except ProcessLookupError:
            pass

    def objects(self, prefix: str = "") -> dict[str, bytes]:
        """Every object under `prefix` (keys relative to it) with its bytes."""
        client = self.client()
        found: dict[str, bytes] = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                body = client.get_object(Bucket=self.bucket, Key=item["Key"])["Body"].read()
                found[item["Key"][len(prefix) :]] = body
        return found

    def put(self, key: str, body: bytes) -> None:
        self.client().put_object(Bucket=self.bucket, Key=key, Body=body)

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
