"""A two-node Ray cluster on this machine: a head and a worker node, each one `ray start --block`
in a session of its own, so that stopping a node kills its raylet and every worker it started."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

RAY = str(Path(sys.executable).with_name("ray"))
# `ray start` turns token authentication on; a test cluster on one machine needs none. Every
# process of it, drivers included, must agree, and ray.init() in this process sets
# RAY_AUTH_MODE=token in os.environ: children get it from here, not from os.environ.
AUTH_OFF = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def _node_env() -> dict[str, str]:
    """This process's environment with the test cluster's settings over it."""
    return {**os.environ, **AUTH_OFF}


START_S = 180.0  # a node's start on a loaded 2-core machine
# `ray start` gives every node's workers and drivers ports from 10002-19999 unless told: two nodes
# on one host would hand out the same ports, and a gRPC call meant for one process (an object's
# owner) reaches another. Disjoint ranges, both below the ephemeral ports that ray.init() takes.
WORKER_PORTS = {"head": (10002, 14999), "worker": (15000, 19999)}


@dataclass
class TwoNodes:
    address: str
    head: subprocess.Popen
    worker: subprocess.Popen
    temp: str
    dashboard: str | None = None  # the job server's address, where the head runs one

    def submit(self, entrypoint: str, env_vars: dict[str, str], working_dir: Path) -> subprocess.Popen:
        """`ray job submit --working-dir` of ``entrypoint`` (a shell command), as a user would."""
        runtime_env = {"working_dir": str(working_dir), "env_vars": env_vars}
        return subprocess.Popen(
            [RAY, "job", "submit", f"--address={self.dashboard}", "--runtime-env-json", json.dumps(runtime_env)]
            + ["--", "sh", "-c", entrypoint],  # the CLI quotes each word of the entrypoint
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=_node_env(),
            start_new_session=True,
        )

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a process joining this cluster (a driver)."""
        return {**_node_env(), "RAY_ADDRESS": self.address, **extra}

    def node_of(self, pid: int) -> str | None:
        """ "head" or "worker" for a process one of the nodes started, else None."""
        try:
            sid = os.getsid(pid)
        except ProcessLookupError:
            return None
        return {self.head.pid: "head", self.worker.pid: "worker"}.get(sid)

    def nodes_running(self, name: str) -> set[str]:
        """The nodes on which a Ray worker process now runs ``name`` (an actor class or task)."""
        import psutil

        found = set()
        for p in psutil.process_iter(["pid", "cmdline"]):
            if any(f"ray::{name}" in c for c in p.info["cmdline"] or []):
                found.add(self.node_of(p.info["pid"]))
        return found - {None}

    def stop_worker(self) -> None:
        """The worker node lost at once: its raylet and workers SIGKILLed."""
        _kill(self.worker)


WAIT_S = 600.0  # a driver's wait for a stage on a loaded 2-core machine


def until(what: str, proc: subprocess.Popen, check) -> None:
    """Poll ``check`` until true; fails if ``proc`` (a driver) ended first or after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while not check():
        if proc.poll() is not None:
            raise AssertionError(f"the driver ended before {what}: {proc.stdout.read() if proc.stdout else ''}")
        assert time.monotonic() < deadline, f"no {what} in {WAIT_S:.0f} s"
        time.sleep(0.05)


def finished(proc: subprocess.Popen) -> str:
    """``proc``'s output, once it ended with status 0."""
    out, _ = proc.communicate(timeout=WAIT_S)
    assert proc.returncode == 0, out
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def agent_ports() -> list[str]:
    """Free ports for a node's agents: their defaults (e.g. 52365) are taken by any other Ray on
    the machine, such as another node of the same cluster or the test session's own."""
    names = (
        "dashboard-agent-listen-port",
        "dashboard-agent-grpc-port",
        "runtime-env-agent-port",
        "metrics-export-port",
    )
    return [f"--{name}={free_port()}" for name in names]


def _start(args: list[str], temp: str, node: str) -> subprocess.Popen:
    low, high = WORKER_PORTS[node]
    ports = [f"--min-worker-port={low}", f"--max-worker-port={high}"]
    with open(os.path.join(temp, f"{node}.log"), "w") as f:
        return subprocess.Popen(
            [RAY, "start", "--num-cpus=2", f"--temp-dir={temp}/{node}", "--block", *ports, *agent_ports(), *args],
            stdout=f,
            stderr=subprocess.STDOUT,
            env=_node_env(),
            start_new_session=True,
        )


def _wait_for_nodes(address: str, n: int, nodes: list[subprocess.Popen], temp: str) -> None:
    probe = f"import ray; ray.init(address={address!r}); print(sum(x['Alive'] for x in ray.nodes()))"
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        for node in nodes:
            assert node.poll() is None, f"a Ray node did not start: {_logs(temp)}"
        out = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, env=_node_env(), timeout=120
        )
        if out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == [str(n)]:
            return
        time.sleep(1.0)  # polled until the deadline, not slept on
    raise AssertionError(f"{n} Ray nodes did not come up in {START_S:.0f} s: {_logs(temp)}")


def _wait_for_jobs(dashboard: str, temp: str) -> None:
    """Until a trivial job runs: the job server answers before the head's job agent is up."""
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        out = subprocess.run(
            [RAY, "job", "submit", f"--address={dashboard}", "--", "true"],
            capture_output=True,
            text=True,
            env=_node_env(),
            timeout=120,
        )
        if out.returncode == 0 and "succeeded" in out.stdout:
            return
        time.sleep(1.0)  # polled until the deadline, not slept on
    raise AssertionError(f"the job server at {dashboard} ran no job in {START_S:.0f} s: {_logs(temp)}")


def _logs(temp: str) -> str:
    return "\n".join(Path(temp, name).read_text()[-2000:] for name in ("head.log", "worker.log"))


def _kill(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@contextlib.contextmanager
def _two_nodes(jobs: bool):
    """A head and a worker node of 2 CPUs each; short temp dirs (Ray's sockets live there)."""
    temp = tempfile.mkdtemp(prefix="ns-ray-")
    port, dash = free_port(), free_port()
    dashboard = [f"--include-dashboard={str(jobs).lower()}", f"--dashboard-port={dash}"]
    head = _start(["--head", f"--port={port}", *dashboard, f"--ray-client-server-port={free_port()}"], temp, "head")
    address = f"127.0.0.1:{port}"
    worker = None
    try:
        _wait_for_nodes(address, 1, [head], temp)
        worker = _start([f"--address={address}"], temp, "worker")
        _wait_for_nodes(address, 2, [head, worker], temp)
        if jobs:
            _wait_for_jobs(f"http://127.0.0.1:{dash}", temp)
        yield TwoNodes(address, head, worker, temp, f"http://127.0.0.1:{dash}" if jobs else None)
    finally:
        for node in (worker, head):
            if node is not None:
                _kill(node)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture
def two_nodes():
    with _two_nodes(jobs=False) as cluster:
        yield cluster


@pytest.fixture
def two_nodes_with_jobs():
    """The same, with the head's job server (the dashboard), for `ray job submit`."""
    with _two_nodes(jobs=True) as cluster:
        yield cluster
