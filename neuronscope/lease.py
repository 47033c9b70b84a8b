"""One process per stage of a run: a lease object in the run's store.

Two ``neuronscope explain`` processes on one run would both see the same neurons pending and
explain them twice, racing on the manifest. The first to create ``locks/<stage>.json`` (a
create-only write: a hard link locally, ``If-None-Match: *`` on S3) holds the stage; it rewrites
the object's heartbeat while it works and deletes it when done. A lease whose heartbeat is older
than ``stale_after_s`` belongs to a process that died without cleaning up, and is taken over.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid

from .errors import NeuronScopeError, StoreError
from .layout import lease_key
from .store import Store

BEAT_S = 20.0
STALE_AFTER_S = 120.0  # six missed heartbeats: the holder is gone (clocks of two hosts may differ a little)


class RunLockedError(NeuronScopeError):
    """Another live process holds the stage of this run."""


def read_holder(store: Store, key: str) -> dict | None:
    """The lease object at ``key``; None when no process holds it."""
    try:
        return json.loads(store.read_bytes(key))
    except StoreError:
        if not store.exists(key):
            return None  # never taken, or released before our read
        raise
    except ValueError:
        return {"beat": 0.0}  # unreadable: treat as stale rather than lock the run forever


def holder_line(store: Store, stage: str) -> str:
    """For ``status``: who holds a stage the manifest calls running, or that nobody does."""
    held = read_holder(store, lease_key(stage))
    if held is None:
        return "  no process holds it: it was stopped or lost; rerun the stage to resume"
    age = time.time() - float(held.get("beat", 0.0))
    return f"  held by process {held.get('pid')} on {held.get('host')} (heartbeat {age:.0f}s ago)"


class StageLease:
    """Context manager holding ``stage`` of the run in ``store`` for this process."""

    def __init__(self, store: Store, stage: str, beat_s: float = BEAT_S, stale_after_s: float = STALE_AFTER_S):
        self.store, self.stage, self.key = store, stage, lease_key(stage)
        self.beat_s, self.stale_after_s = beat_s, stale_after_s
        self.owner = {"host": socket.gethostname(), "pid": os.getpid(), "id": uuid.uuid4().hex}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self, since: float) -> bytes:
        return json.dumps({**self.owner, "since": since, "beat": time.time()}).encode()

    def _holder(self) -> dict | None:
        return read_holder(self.store, self.key)

    def acquire(self) -> None:
        since = time.time()
        for _ in range(3):  # a release or takeover can interleave; a few tries settle it
            if self.store.write_bytes_if_absent(self.key, self._body(since)):
                self._thread = threading.Thread(target=self._beat, args=(since,), daemon=True, name="lease")
                self._thread.start()
                return
            held = self._holder()
            if held is None:
                continue
            age = time.time() - float(held.get("beat", 0.0))
            if age < self.stale_after_s and not self._dead_here(held):
                raise RunLockedError(self._refusal(held, age))
            self.store.delete(self.key)  # a dead holder's lease
        raise RunLockedError(
            f"could not take the {self.stage} lease {self.store.url(self.key)}: it keeps changing hands"
        )

    def _dead_here(self, held: dict) -> bool:
        """The holder ran on this host and its process is gone (killed, crashed): no need to wait."""
        if held.get("host") != self.owner["host"] or not isinstance(held.get("pid"), int):
            return False
        try:
            os.kill(held["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False  # alive, another user's
        return False

    def _refusal(self, held: dict, age: float) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(held.get("since", 0.0))))
        return (
            f"the {self.stage} stage of {self.store.uri} is already running in process {held.get('pid')} on "
            f"{held.get('host')} (since {started}, heartbeat {age:.0f}s ago); wait for it to finish, or if that "
            f"process is gone, rerun in {max(0.0, self.stale_after_s - age):.0f}s, when its lease expires"
        )

    def _beat(self, since: float) -> None:
        while not self._stop.wait(self.beat_s):
            try:
                held = self._holder()
                if held is None or held.get("id") != self.owner["id"]:
                    return  # taken over after we stalled: never overwrite the new holder
                self.store.write_bytes(self.key, self._body(since))
            except StoreError:
                continue  # a store hiccup: the next beat retries, well before the lease goes stale

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            held = self._holder()
            if held is not None and held.get("id") == self.owner["id"]:
                self.store.delete(self.key)
        except StoreError:
            pass  # the store is unreachable now: the lease simply expires (and the stage's own error shows)

    def __enter__(self) -> StageLease:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
