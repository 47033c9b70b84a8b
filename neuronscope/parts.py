"""Per-layer folders of per-neuron objects and the parts they are compacted into.

A stage that writes one object per finished neuron (explanations, transcripts, LLM response
cache) keeps them under ``FOLDER/layer_LLL/`` (keys built by ``layout.py``):

- ``neuron_NNNNN.EXT``: one neuron (``neuron_NNNNN.failed.EXT``: a neuron whose workflow failed);
- ``part-A-B_C.EXT``: many neurons merged into one object; the name lists them as ranges
  (``00000-00255_00300``), so one listing tells which neurons a part holds, without reading it.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

from .layout import layer_dir

MAX_RANGES_CHARS = 160  # the ranges in a part's name; longer sets are split over several parts
_NAME = re.compile(
    r"^(?P<folder>.+)/layer_(?P<layer>\d+)/(?:neuron_(?P<neuron>\d+)(?P<failed>\.failed)?"
    r"|part-(?P<ranges>\d+(?:-\d+)?(?:_\d+(?:-\d+)?)*))(?P<ext>\.[a-z]+)$"
)


def neuron_of(key: str) -> int:
    """The neuron of a ``neuron_NNNNN...`` key."""
    return int(key.rsplit("/neuron_", 1)[1].split(".")[0])


def ranges(neurons) -> list[tuple[int, int]]:
    """Sorted, merged (first, last) runs of ``neurons``."""
    out: list[list[int]] = []
    for n in sorted(set(neurons)):
        if out and n == out[-1][1] + 1:
            out[-1][1] = n
        else:
            out.append([n, n])
    return [(a, b) for a, b in out]


def _ranges_text(runs) -> str:
    return "_".join(f"{a:05d}" if a == b else f"{a:05d}-{b:05d}" for a, b in runs)


def part_keys(folder: str, ext: str, layer: int, neurons) -> list[tuple[str, list[int]]]:
    """(key, neurons) of the parts that hold ``neurons``: one, or several when one name would
    grow past MAX_RANGES_CHARS (a scattered set)."""
    out: list[list[tuple[int, int]]] = []
    chunk: list[tuple[int, int]] = []
    for a, b in ranges(neurons):
        if chunk and len(_ranges_text(chunk + [(a, b)])) > MAX_RANGES_CHARS:
            out.append(chunk)
            chunk = []
        chunk.append((a, b))
    out += [chunk] if chunk else []
    return [
        (f"{layer_dir(folder, layer)}part-{_ranges_text(c)}{ext}", [n for a, b in c for n in range(a, b + 1)])
        for c in out
    ]


def _parse_ranges(text: str) -> list[tuple[int, int]]:
    runs = []
    for piece in text.split("_"):
        a, _, b = piece.partition("-")
        runs.append((int(a), int(b or a)))
    return runs


@dataclass
class LayerIndex:
    """One layer's objects in a folder: single neurons (ok and failed) and parts."""

    single: dict[int, str] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    parts: list[tuple[list[tuple[int, int]], str]] = field(default_factory=list)

    def part_of(self, neuron: int) -> list[str]:
        """Keys of the parts that hold ``neuron``."""
        out = []
        for runs, key in self.parts:
            i = bisect.bisect_right(runs, (neuron, float("inf"))) - 1
            if i >= 0 and runs[i][0] <= neuron <= runs[i][1]:
                out.append(key)
        return out


class FolderIndex:
    """What one listing of ``folder`` says, per layer. Keys that follow no pattern are ignored
    (and left alone)."""

    def __init__(self, folder: str, keys):
        self.folder = folder
        self.layers: dict[int, LayerIndex] = {}
        for key in keys:
            m = _NAME.match(key)
            if not m or m["folder"] != folder:
                continue
            layer = self.layers.setdefault(int(m["layer"]), LayerIndex())
            if m["ranges"]:
                layer.parts.append((_parse_ranges(m["ranges"]), key))
            elif m["failed"]:
                layer.failed[int(m["neuron"])] = key
            else:
                layer.single[int(m["neuron"])] = key

    @classmethod
    def listing(cls, store, folder: str) -> FolderIndex:
        return cls(folder, store.list(folder + "/"))

    def layer(self, layer: int) -> LayerIndex:
        return self.layers.get(layer) or LayerIndex()

    def in_part(self, layer: int, neuron: int) -> bool:
        return bool(self.layer(layer).part_of(neuron))

    def ok(self, layer: int, neuron: int) -> bool:
        """A finished neuron whose workflow did not fail."""
        return neuron in self.layer(layer).single or self.in_part(layer, neuron)

    def sources(self, layer: int, neuron: int) -> list[str]:
        """Every object that may hold rows of the neuron: its parts, then its own object."""
        li = self.layer(layer)
        return li.part_of(neuron) + [k for k in (li.single.get(neuron), li.failed.get(neuron)) if k]
