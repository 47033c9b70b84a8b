"""Compaction: a layer's finished neurons, one object each, merged into a few part objects.

Per folder, a merge writes the part (one atomic write) and only then deletes the neurons' own
objects. A merge cut short therefore loses nothing; what it leaves is harmless:
- explanations: the part names the objects it replaces in its metadata, and every Parquet read
  of the store skips replaced objects, so no row is seen twice;
- transcripts: readers take a neuron's own object before a part (the same text);
- response cache: entries are keyed by content, so a neuron's answers seen twice are the same.
The next run deletes what a part already holds (``leftovers``). Only neurons that finished
without failing are merged: a failed neuron keeps its own objects, which its retry overwrites.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa

from .. import layout
from ..parts import FolderIndex, neuron_of, part_keys
from ..results import jsonl_lines, part_line

ROW_GROUP_ROWS = 1024  # small row groups: one neuron's rows are read without the rest of the part
READ_THREADS = 16


@dataclass(frozen=True)
class Folder:
    name: str
    ext: str
    replaces: bool  # the part names the objects it replaces (Parquet tables read whole)
    dedupe_on_resume: bool  # a neuron's own object may be deleted once a part holds the neuron


FOLDERS = (
    Folder(layout.EXPLANATIONS, ".parquet", True, True),
    Folder(layout.TRANSCRIPTS, ".jsonl", False, True),
    Folder(layout.LLM_CACHE, ".parquet", False, False),
)


def _merge_parquet(store, keys: list[str]) -> pa.Table:
    table = store.read_parquet_where(keys)
    return table.sort_by([("layer", "ascending"), ("neuron", "ascending")])


def _merge_jsonl(store, keys: list[str], layer: int, neurons: list[int]) -> bytes:
    """One line per neuron: ``{"layer", "neuron", "transcript": [entries]}``; an existing part's lines first."""
    with ThreadPoolExecutor(min(READ_THREADS, len(keys))) as pool:
        blobs = list(pool.map(store.read_bytes, keys))
    lines = []
    for key, blob in zip(keys, blobs):
        text = blob.decode("utf-8")
        if "/part-" in key:
            lines += jsonl_lines(text)
            continue
        entries = [json.loads(ln) for ln in jsonl_lines(text)]
        lines.append(part_line(layer, neuron_of(key), entries))
    return ("\n".join(lines) + "\n").encode("utf-8")


def _merge_folder(store, folder: Folder, layer: int, neurons: list[int]) -> int:
    """Merge the own objects of ``neurons`` in one folder of ``layer``; returns how many."""
    li = FolderIndex(folder.name, store.list(layout.layer_dir(folder.name, layer))).layer(layer)
    own = {n: li.single[n] for n in neurons if n in li.single}
    if folder.dedupe_on_resume:  # a merge retried after its part was written: only its deletes remain
        for n in [n for n in own if li.part_of(n)]:
            store.delete(own.pop(n))
    merged = 0
    for key, chunk in part_keys(folder.name, folder.ext, layer, own):
        inputs = [own[n] for n in chunk]
        stale = [li.failed[n] for n in chunk if n in li.failed]
        existing = [key] if any(k == key for _, k in li.parts) else []  # same set merged before (cache reruns)
        if folder.ext == ".jsonl":
            store.write_bytes(key, _merge_jsonl(store, existing + inputs, layer, chunk))
        else:
            table = _merge_parquet(store, existing + inputs)
            store.write_parquet(
                key, table, replaces=inputs + stale if folder.replaces else None, row_group_size=ROW_GROUP_ROWS
            )
        for k in inputs + stale:
            store.delete(k)
        merged += len(inputs)
    return merged


def compact(store, layer: int, neurons: list[int]) -> dict[str, int]:
    """Merge the per-neuron objects of ``neurons`` (finished, not failed) of ``layer`` into parts,
    folder by folder; returns the objects merged per folder."""
    return {f.name: _merge_folder(store, f, layer, sorted(neurons)) for f in FOLDERS}


def leftovers(explanations: FolderIndex, folder: Folder, index: FolderIndex) -> tuple[list[str], dict[int, set[int]]]:
    """From one listing of a folder: (own objects a part already holds, deletable; neurons per
    layer whose own objects still wait to be merged)."""
    stale: list[str] = []
    waiting: dict[int, set[int]] = {}
    for layer, li in index.layers.items():
        for n, key in li.single.items():
            if folder.dedupe_on_resume and li.part_of(n):
                stale.append(key)
            elif explanations.ok(layer, n):
                waiting.setdefault(layer, set()).add(n)
        stale += [key for n, key in li.failed.items() if explanations.ok(layer, n)]
    return stale, waiting
