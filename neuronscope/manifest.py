"""The run manifest: what a run folder holds, how it was made, and where each stage stands."""

from __future__ import annotations

import datetime as _dt

from . import __version__
from .errors import ConfigError
from .layout import MANIFEST
from .schema import SCHEMA_VERSION
from .store import Store

MAX_EARLIER = 20  # earlier attempts a stage entry keeps


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def load(store: Store) -> dict:
    if store.exists(MANIFEST):
        return store.read_json(MANIFEST)
    return {
        "neuronscope_version": __version__,
        "schema_version": SCHEMA_VERSION,
        "created": _now(),
        "stages": {},
    }


# Settings that change how a stage runs, not what it writes: a rerun may change them. (The explain
# selection may grow: each neuron's rows depend only on the other settings.)
OPERATIONAL = frozenset(
    {
        "batch_size",
        "num_actors",
        "num_gpus_per_actor",
        "torch_threads",
        "pass_memory_gib",
        "explain.layers",
        "explain.neurons",
        "explain.max_in_flight",
        "explain.workflows_per_worker",
        "explain.budget",
        "explain.dry_run",
        "explain.dry_run_sample",
        "llm.replicas",
        "llm.gpus_per_replica",
        "llm.tensor_parallel_size",
        "llm.timeout_s",
        "llm.max_retries",
        "llm.kv_cache_gib",
        "llm.cpu_reserved_cores",
        "llm.base_url",
        "llm.api_key_env",
        "causal.enabled",
        "causal.batch_size",
    }
)


def changed_settings(old: dict, new: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    """(dotted name, old value, new value) of each result-affecting setting that differs; a setting
    absent from ``old`` (a run made by an older version) is not a change."""
    out = []
    for key, value in new.items():
        name = prefix + key
        if key not in old or name in OPERATIONAL:
            continue
        if isinstance(value, dict) and isinstance(old[key], dict):
            out += changed_settings(old[key], value, name + ".")
        elif old[key] != value:
            out.append((name, old[key], value))
    return out


def begin_stage(store: Store, stage: str, inputs: dict, config: dict) -> dict:
    """Mark ``stage`` running. A run resumed with different inputs is refused, naming the field."""
    m = load(store)
    prev = m["stages"].get(stage)
    if prev is not None:
        for key, value in inputs.items():
            if key in prev.get("inputs", {}) and prev["inputs"][key] != value:
                raise ConfigError(
                    f"run {store.uri} already has a {stage} stage made with {key}={prev['inputs'][key]!r}; "
                    f"refusing to resume it with {key}={value!r} (use a new --out)"
                )
        changes = changed_settings(prev.get("config", {}), config)
        if changes:
            key, old, new = changes[0]
            raise ConfigError(
                f"run {store.uri} already has a {stage} stage made with {key}={old!r}; refusing to resume it "
                f"with {key}={new!r}, which would mix results of two settings (use a new --out, or {key}={old!r})"
            )
    m["stages"][stage] = {
        "status": "running",
        "started": _now(),
        "inputs": inputs,
        "config": config,
        "package_version": __version__,
        "earlier": _earlier(prev),
    }
    store.write_json(MANIFEST, m)
    return m


def _earlier(prev: dict | None) -> list[dict]:
    """The stage's earlier attempts, newest last: one still "running" when the next began was
    interrupted (the stage lease rules out a live one), killed or its machine lost."""
    if not prev or "started" not in prev:  # no attempt began: an entry written by hand or by notes
        return list((prev or {}).get("earlier", []))
    status = "interrupted" if prev.get("status") == "running" else prev.get("status")
    attempt = {"started": prev.get("started"), "finished": prev.get("finished"), "status": status}
    if prev.get("error"):
        attempt["error"] = prev["error"]
    return [*prev.get("earlier", []), attempt][-MAX_EARLIER:]


def end_stage(store: Store, stage: str, status: str, summary: dict | None = None, error: str | None = None) -> None:
    m = load(store)
    entry = m["stages"].setdefault(stage, {})
    entry.update({"status": status, "finished": _now(), "summary": summary or {}})
    if error:
        entry["error"] = error
    store.write_json(MANIFEST, m)


def note_stage(store: Store, stage: str, key: str, value) -> None:
    """Record ``value`` under ``key`` in a running stage's entry (e.g. its scorer self-check)."""
    m = load(store)
    m["stages"].setdefault(stage, {})[key] = value
    store.write_json(MANIFEST, m)
