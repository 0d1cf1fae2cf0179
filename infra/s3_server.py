"""A private S3-compatible server for tests and benchmarks: moto's server mode, on a port of ours.

``moto_server`` (PyPI ``moto[server]``) is a real HTTP server speaking the S3
REST protocol (SigV4 requests, multipart uploads, presigned URLs, listing with
delimiters), pure Python, so ``pip`` brings it on any Debian without a binary
download or a JavaScript runtime. It runs as a child process (never in the test
process: its requests would share the tests' GIL), keeps objects in memory,
writes its log under ``base_dir`` and accepts any credentials.

Used by the test suite (``s3_server`` fixture) and bench/storage_clients.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from .ports import accepts_connections, free_port

ACCESS_KEY_ID = "taskgate-test"
SECRET_ACCESS_KEY = "taskgate-test-secret"
REGION = "us-east-1"
_BOOT_TIMEOUT_S = 30.0


class S3BootError(RuntimeError):
    """The S3 server did not start; the message holds the end of its log."""


class S3Server:
    """``start()``, ``create_bucket(name)``, ``stop()``; ``endpoint_url`` while it runs."""

    def __init__(
        self,
        base_dir: Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        command_prefix: tuple[str, ...] = (),
    ) -> None:
        """``command_prefix``: put before the server's command (``ip netns exec <ns>``)."""
        self.base_dir = base_dir
        self.port = port or free_port()
        self.host = host
        self.command_prefix = command_prefix
        self.endpoint_url = f"http://{host}:{self.port}"
        self.log_path = base_dir / "moto.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [
                    *self.command_prefix,
                    sys.executable,
                    "-m",
                    "moto.server",
                    "-H",
                    self.host,
                    "-p",
                    str(self.port),
                ],
                cwd=self.base_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own group: a Ctrl-C of the tests does not kill it before the fixture's stop.
                start_new_session=True,
                env={**os.environ, "MOTO_PORT": str(self.port)},
            )
        deadline = time.monotonic() + _BOOT_TIMEOUT_S
        while not accepts_connections(self.port, timeout_s=0.2, host=self.host):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log_path.read_text(errors="replace")[-2_000:]
                raise S3BootError(f"moto_server did not start on port {self.port}:\n{tail}")
            time.sleep(0.05)

    def create_bucket(self, name: str) -> None:
        """Create the bucket ``name`` (moto takes an unsigned request; it checks no credentials)."""
        request = urllib.request.Request(f"{self.endpoint_url}/{name}", method="PUT")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def incomplete_uploads(self, bucket: str) -> list[str]:
        """Keys of the bucket's multipart uploads begun and neither completed nor aborted."""
        with urllib.request.urlopen(f"{self.endpoint_url}/{bucket}?uploads", timeout=10) as answer:
            root = ElementTree.fromstring(answer.read())
        return sorted(key.text or "" for key in root.iter() if key.tag.endswith("}Key"))

    def stop(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)  # werkzeug ignores SIGTERM
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
