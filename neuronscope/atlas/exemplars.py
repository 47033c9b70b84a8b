"""Every exemplar of a run in the order its neuron's page shows them, as columns, built in Arrow
and numpy: a whole-model run has millions of exemplars of 64 tokens, too many for Python objects.

The texts are stored once per distinct token list (a whole-model run's neurons share the corpus
windows); each exemplar names its text and carries its activations as little-endian float32,
base64-encoded. Exemplars are made a layer at a time (a whole model's do not fit in memory at once);
the texts are the whole run's, their index grown layer by layer."""

from __future__ import annotations

import base64
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


@dataclass
class Exemplars:
    slices: dict  # (layer, neuron) -> (offset, length) of its exemplars in the columns below
    kind: np.ndarray  # str objects
    rank: np.ndarray
    window_id: np.ndarray
    max_act: np.ndarray  # float64, rounded: shown with 3 decimals
    max_pos: np.ndarray
    text: np.ndarray  # index of the exemplar's token list in the run's ``Texts``
    starts: np.ndarray  # offset of each exemplar's activations in ``acts``; one more at the end
    acts: np.ndarray  # float32, every exemplar's activations one after the other

    def columns(self, key: tuple[int, int]) -> dict:
        """The neuron's exemplars as JSON-ready columns (empty for a neuron without records)."""
        a, n = self.slices.get(key, (0, 0))
        s = slice(a, a + n)
        acts = self.acts[self.starts[a] : self.starts[a + n]] if n else self.acts[:0]
        return {
            **{c: getattr(self, c)[s].tolist() for c in ("kind", "rank", "window_id", "max_act", "max_pos", "text")},
            "n": np.diff(self.starts[a : a + n + 1]).tolist() if n else [],
            "acts": base64.b64encode(acts.astype("<f4").tobytes()).decode("ascii"),
        }


def large_lists(column: pa.ChunkedArray) -> pa.Array:
    """A list column as one array with 64-bit offsets: a whole model's exemplar texts pass the 2 GiB
    that 32-bit offsets can address (46,080 neurons x ~100 windows x 64 tokens)."""
    t = column.type
    value = pa.large_string() if pa.types.is_string(t.value_type) else t.value_type
    return column.cast(pa.large_list(value)).combine_chunks()


def _text_codes(lists: pa.Array) -> pa.DictionaryArray:
    """One code per distinct token list. Lists are compared as their texts joined by NUL, the length
    leading, so two lists join alike only when equal; tokens holding a NUL are escaped first (rare:
    the scan for one is much cheaper than the escaping)."""
    flat = pc.list_flatten(lists)
    if pc.any(pc.match_substring(flat, "\x00")).as_py():
        flat = pc.replace_substring(pc.replace_substring(flat, "\\", "\\\\"), "\x00", "\\0")
    offsets = pc.subtract(lists.offsets, lists.offsets[0])
    nul, bar = pa.scalar("\x00", pa.large_string()), pa.scalar("|", pa.large_string())
    joined = pc.binary_join(pa.LargeListArray.from_arrays(offsets, flat), nul)
    keyed = pc.binary_join_element_wise(pc.cast(pc.list_value_length(lists), pa.large_string()), joined, bar)
    return pc.dictionary_encode(keyed)


class Texts:
    """The run's distinct token lists in order of first appearance (layers ascending, rows in stored
    order), grown a layer at a time: only each layer's distinct keys go through Python."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}  # a list's ``_text_codes`` key -> its place in the run's texts
        self.parts: list[pa.Array] = []  # the lists each layer added, in order

    def codes(self, lists: pa.Array) -> np.ndarray:
        """Each list's place in the run's texts; lists not seen before are added."""
        local = _text_codes(lists)
        rows = local.indices.to_numpy()
        seen = len(self.index)
        keys = local.dictionary.to_pylist()
        place = np.fromiter((self.index.setdefault(k, len(self.index)) for k in keys), np.int64, len(keys))
        # a layer's dictionary is in first-appearance order, so its new lists come in that order
        first = np.unique(rows, return_index=True)[1]
        self.parts.append(lists.take(pa.array(first[place >= seen], pa.int64())))
        return place[rows]

    def lists(self) -> pa.Array:
        """large_list<large_string>: every distinct token list, each once."""
        return pa.concat_arrays(self.parts) if self.parts else pa.array([], pa.large_list(pa.large_string()))


def page_order(records: pa.Table) -> np.ndarray:
    """Row order of the pages: by layer and neuron; top exemplars first, then the other kinds
    (random, quantile_*) by name; by rank within a kind."""
    kinds = pc.dictionary_encode(records["kind"].combine_chunks())
    names = kinds.dictionary.to_pylist()
    place = sorted(range(len(names)), key=lambda i: (names[i] != "top", names[i]))
    kind_key = np.argsort(np.asarray(place, np.int64))[kinds.indices.to_numpy()]
    cols = [records[c].to_numpy() for c in ("rank", "neuron", "layer")]
    return np.lexsort((cols[0], kind_key, cols[1], cols[2]))


def _slices(layer: np.ndarray, neuron: np.ndarray) -> dict:
    """(layer, neuron) -> (offset, length) of its rows in sorted columns."""
    key = layer.astype(np.int64) << 32 | neuron.astype(np.int64)
    if not len(key):
        return {}
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    ends = np.r_[starts[1:], len(key)]
    return {(int(k >> 32), int(k & 0xFFFFFFFF)): (int(a), int(b - a)) for k, a, b in zip(key[starts], starts, ends)}


def exemplars(records: pa.Table, texts: Texts) -> Exemplars:
    """The exemplars of ``records`` (a layer's) in page order; their token lists join ``texts``."""
    text = texts.codes(large_lists(records["tokens"]))
    perm = pa.array(page_order(records), pa.int64())
    t = records.select(["layer", "neuron", "kind", "rank", "window_id", "max_act", "max_pos"]).take(perm)
    acts = large_lists(records["activations"]).take(perm)
    lens = pc.list_value_length(acts).to_numpy(zero_copy_only=False)
    col = {c: t[c].to_numpy() for c in t.column_names}
    return Exemplars(
        slices=_slices(col["layer"], col["neuron"]),
        kind=t["kind"].to_numpy().astype(object),
        rank=col["rank"],
        window_id=col["window_id"],
        max_act=np.round(col["max_act"].astype(np.float64), 4),
        max_pos=col["max_pos"],
        text=text[perm.to_numpy()],
        starts=np.r_[0, np.cumsum(lens)].astype(np.int64),
        acts=pc.list_flatten(acts).to_numpy(zero_copy_only=False).astype(np.float32),
    )
