"""Parsing of index selections such as ``3,5-7`` for layers and neurons."""

from __future__ import annotations

import numpy as np

from .errors import ConfigError


def _all(spec: str | list[int] | int) -> bool:
    return isinstance(spec, str) and spec.strip().lower() in ("", "all")


def _indices(spec: str | list[int] | int, what: str) -> list[int]:
    """The indices ``spec`` names, unchecked against any bound; ConfigError names a malformed piece."""
    if isinstance(spec, int):
        spec = [spec]
    items = [int(i) for i in spec] if not isinstance(spec, str) else _pieces(spec, what)
    if not items:
        raise ConfigError(f"{what} selection {spec!r} selects nothing")
    return items


def _pieces(spec: str, what: str) -> list[int]:
    items: list[int] = []
    for piece in (p.strip() for p in spec.split(",")):
        if not piece:
            continue
        try:
            if "-" in piece:
                lo_s, hi_s = piece.split("-", 1)
                lo, hi = int(lo_s), int(hi_s)
                if hi < lo:
                    raise ConfigError(f"{what} range {piece!r} is empty (end before start)")
                items.extend(range(lo, hi + 1))
            else:
                items.append(int(piece))
        except ValueError:
            raise ConfigError(f"{what} selection {piece!r} is not an index or a range like 3-7") from None
    return items


def check_selection(spec: str | None, what: str) -> str | None:
    """``spec`` unchanged when its syntax is sound (bounds need the model: parse_selection checks
    them); else ValueError with parse_selection's message, so that pydantic reports it at load."""
    if spec is not None and not _all(spec):
        try:
            _indices(spec, what)
        except ConfigError as e:
            raise ValueError(str(e)) from None
    return spec


def parse_selection(spec: str | list[int] | None, upper: int, what: str) -> list[int]:
    """Indices named by ``spec`` (``None``/``"all"`` = every index below ``upper``), sorted and unique.

    Raises ConfigError naming the offending piece when it is malformed or outside ``[0, upper)``.
    """
    if spec is None or _all(spec):
        return list(range(upper))
    items = _indices(spec, what)
    bad = [i for i in items if i < 0 or i >= upper]
    if bad:
        raise ConfigError(f"{what} {bad[0]} is out of range: this model has {upper} {what}s (0-{upper - 1})")
    return sorted(set(items))


def selected(layer, neuron, layers: str | None, neurons: str | None) -> np.ndarray:
    """Mask over the (``layer[i]``, ``neuron[i]``) pairs present of those the ``layers`` x
    ``neurons`` selections name; each selection is bounded by the largest index present."""
    layer, neuron = np.asarray(layer, dtype=np.int64), np.asarray(neuron, dtype=np.int64)
    if not layer.size:
        return np.zeros(0, dtype=bool)
    ls = parse_selection(layers, int(layer.max()) + 1, "layer")
    ns = parse_selection(neurons, int(neuron.max()) + 1, "neuron")
    return np.isin(layer, ls) & np.isin(neuron, ns)
