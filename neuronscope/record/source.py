"""The corpus as a Ray Dataset of windows, made on the workers.

The driver lists the shards from metadata (names, sizes, ETags or mtimes: ``corpus.py``) and
builds a dataset: Ray Data's ``read_binary_files`` reads each shard (local files on the driver's
node, ``s3://`` objects with the run store's endpoint and credentials), and a ``map_batches``
stage parses, cleans, tokenizes and windows one whole shard per call (``corpus.shard_windows``:
window ids are (shard, window in shard), so they do not depend on which worker read what). The
rows stream on to the recorders; the driver never holds the corpus. Each shard's document and
skip counts reach the driver through a small actor (:class:`Tally`), not through the rows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import numpy as np

from ..config import RecordConfig
from ..corpus import (
    BUNDLED_CORPORA,
    Documents,
    Shard,
    fingerprint,
    list_local,
    select_shards,
    shard_rows,
    shard_windows,
)
from ..errors import CorpusError
from ..store import Store

_TOKENIZERS: dict[str, Any] = {}  # per worker process: model spec -> its tokenizer


@dataclass(frozen=True)
class CorpusSource:
    """A corpus as the driver holds it: the spec, its shards' metadata and how to read them."""

    spec: str
    shards: list[Shard]
    filesystem: Any = field(default=None, repr=False)  # pyarrow S3 filesystem for s3:// shards

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.spec, self.shards)

    @property
    def bundled(self) -> bool:
        return self.spec in BUNDLED_CORPORA

    def describe(self) -> str:
        if self.bundled:
            return f"corpus {self.spec}"
        size = sum(s.size for s in self.shards) / (1 << 20)
        return f"corpus {self.spec} ({len(self.shards)} shard{'s' * (len(self.shards) != 1)}, {size:.1f} MiB)"

    def paths(self) -> dict[str, Shard]:
        """Each shard by the path Ray Data's reader reports for it."""
        if self.filesystem is not None:
            return {s.name.removeprefix("s3://"): s for s in self.shards}
        return {os.path.abspath(os.path.expanduser(s.name)): s for s in self.shards}


class _S3Objects:
    """A ``corpus.Lister`` of S3 objects, through the run store's S3 client (versions: ETags)."""

    def stat(self, target: str) -> tuple[int, str] | None:
        u = urlparse(target)
        key = u.path.lstrip("/")
        if not key or key.endswith("/"):
            return None
        return Store.open(f"s3://{u.netloc}").object_info(key)

    def walk(self, folder: str) -> list[tuple[str, int, str]] | None:
        return Store.open(folder).list_info("") or None


def list_corpus(spec: str) -> CorpusSource:
    """The shards of ``spec`` from metadata alone; CorpusError (or StoreError) names what is wrong."""
    if spec.startswith("s3://"):
        shards = select_shards(spec, _S3Objects())
        bucket = urlparse(spec).netloc
        filesystem, _ = Store.open(f"s3://{bucket}").arrow_filesystem()
        return CorpusSource(spec, shards, filesystem)
    if "://" in spec:
        raise CorpusError(f"corpus {spec!r}: use a local path, a glob, an s3:// URI or one of {list(BUNDLED_CORPORA)}")
    return CorpusSource(spec, list_local(spec))


def _remote_tally():
    import ray

    @ray.remote(num_cpus=0)
    class Tally:
        """Per shard, what its reader found: documents, skipped rows by reason, windows."""

        def __init__(self):
            self.shards: dict[int, dict] = {}

        def report(self, shard: int, counts: dict) -> None:
            self.shards[shard] = counts  # cumulative: a later report of the shard replaces it

        def counts(self) -> dict[int, dict]:
            return self.shards

    return Tally


def new_tally():
    return _remote_tally().remote()


def _tokenizer(model: str):
    if model not in _TOKENIZERS:
        from transformers import AutoTokenizer

        from ..models.bundled import resolve_model

        # resolved here, on the worker's node: a path resolved on the driver need not exist there
        _TOKENIZERS[model] = AutoTokenizer.from_pretrained(resolve_model(model).path)
    return _TOKENIZERS[model]


def _shard_windows(batch: dict, *, shards: dict[str, Shard], cfg: RecordConfig, max_windows, tally):
    """Ray Data map stage: each row a whole shard (path, bytes) -> its windows, in order."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    tokenizer = _tokenizer(cfg.model)
    for path, data in zip(batch["path"], batch["bytes"]):
        shard = shards[str(path)]
        # one shard of many may hold nothing usable: the driver checks the corpus as a whole
        docs = Documents(shard.name, shard_rows(shard.name, bytes(data), cfg.text_column), required=False)
        n = 0
        for ids, tokens in shard_windows(shard, docs, tokenizer, cfg.window, max_windows):
            n += len(ids)
            yield {"window_id": ids, "tokens": tokens}
            _report(tally, shard, docs, n)  # a reader the pass's limit stops early still counts what it read
        _report(tally, shard, docs, n)


def _report(tally, shard: Shard, docs: Documents, windows: int) -> None:
    import ray

    counts = {"docs": docs.n_docs, "skipped": dict(docs.skipped), "windows": windows}
    ray.get(tally.report.remote(shard.index, counts))


def windows_dataset(source: CorpusSource, cfg: RecordConfig, tally, data_tasks: int):
    """The corpus's windows as a Ray Dataset of {window_id, tokens} rows, made by at most
    ``data_tasks`` reading and ``data_tasks`` windowing tasks at a time. They ask for no CPU: the
    recorders hold the CPUs they feed. With ``max_tokens``, the first whole windows in id order."""
    import ray

    shards = source.paths()
    if source.bundled:
        ds = ray.data.from_items([{"path": source.spec, "bytes": b""}])
        shards = {source.spec: source.shards[0]}
    else:
        paths = sorted(shards, key=lambda p: shards[p].index)
        # local files are read where they are: on the driver's node (Ray's own node-id label)
        here = {} if source.filesystem is not None else {"ray.io/node-id": ray.get_runtime_context().get_node_id()}
        ds = ray.data.read_binary_files(
            paths,
            filesystem=source.filesystem,
            include_paths=True,
            num_cpus=0,
            concurrency=data_tasks,
            override_num_blocks=len(paths),
            label_selector=here or None,
        )
    max_windows = None if cfg.max_tokens is None else max(1, cfg.max_tokens // cfg.window)
    ds = ds.map_batches(
        _shard_windows,
        batch_size=1,
        batch_format="numpy",
        num_cpus=0,
        compute=ray.data.TaskPoolStrategy(size=data_tasks),
        fn_kwargs={"shards": shards, "cfg": cfg, "max_windows": max_windows, "tally": tally},
    )
    if max_windows is not None:
        # the first max_windows windows in shard order: blocks leave in order, whatever finished first
        ds = ds.limit(max_windows)
        ds.context.execution_options.preserve_order = True
    return ds


def corpus_totals(spec: str, counts: dict[int, dict], windows: int, window: int) -> dict:
    """The pass's skip counters; CorpusError when the corpus gave no window."""
    skipped: dict[str, int] = {}
    for c in counts.values():
        for reason, k in c["skipped"].items():
            skipped[reason] = skipped.get(reason, 0) + k
    if not windows:
        if not sum(c["docs"] for c in counts.values()):
            detail = f" (skipped: {dict(sorted(skipped.items()))})" if skipped else ""
            raise CorpusError(f"corpus {spec!r} holds no usable text{detail}")
        raise CorpusError(f"corpus {spec!r} is too short: fewer than {window} tokens (one window)")
    return dict(sorted(skipped.items()))


def corpus_error(e: BaseException, spec: str) -> CorpusError | None:
    """The corpus fault a Ray task died of (a CorpusError raised reading a shard, or the OSError of
    a shard that could not be read), as a one-line CorpusError; None if it is not one."""
    from ray.exceptions import RayError

    seen: set[int] = set()
    x: BaseException | None = e
    while x is not None and id(x) not in seen:
        seen.add(id(x))
        if isinstance(x, RayError):
            x = getattr(x, "cause", None) or x.__cause__
            continue
        first = (str(x.args[0]) if x.args else str(x)).strip().splitlines()
        if isinstance(x, CorpusError):
            return CorpusError(first[0] if first else str(x))
        if isinstance(x, OSError):
            return CorpusError(f"corpus {spec!r}: a shard could not be read: {first[0] if first else x}")
        x = x.__cause__
    return None


def local_windows(cfg: RecordConfig, tokenizer) -> tuple[np.ndarray, np.ndarray, dict]:
    """(ids, (n, window) tokens, skip counters) of a bundled or local corpus, read in this
    process with the record stage's windowing (tests and benchmarks)."""
    from pathlib import Path

    source = list_corpus(cfg.corpus)
    if source.filesystem is not None:
        raise CorpusError(f"corpus {cfg.corpus!r}: only local corpora are read in-process")
    max_windows = None if cfg.max_tokens is None else max(1, cfg.max_tokens // cfg.window)
    ids: list[np.ndarray] = []
    rows: list[np.ndarray] = []
    counts: dict[int, dict] = {}
    for shard in source.shards:
        left = None if max_windows is None else max_windows - sum(len(i) for i in ids)
        if left == 0:
            break
        data = b"" if source.bundled else Path(shard.name).expanduser().read_bytes()
        docs = Documents(shard.name, shard_rows(shard.name, data, cfg.text_column), required=False)
        n = 0
        for i, t in shard_windows(shard, docs, tokenizer, cfg.window, left):
            ids.append(i)
            rows.append(t)
            n += len(i)
        counts[shard.index] = {"docs": docs.n_docs, "skipped": dict(docs.skipped), "windows": n}
    n = sum(len(i) for i in ids)
    skipped = corpus_totals(cfg.corpus, counts, n, cfg.window)
    return np.concatenate(ids), np.concatenate(rows), skipped
