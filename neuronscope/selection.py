"""Parsing of index selections such as ``3,5-7`` for layers and neurons."""

from __future__ import annotations

from .errors import ConfigError


def parse_selection(spec: str | list[int] | None, upper: int, what: str) -> list[int]:
    """Indices named by ``spec`` (``None``/``"all"`` = every index below ``upper``), sorted and unique.

    Raises ConfigError naming the offending piece when it is malformed or outside ``[0, upper)``.
    """
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "all")):
        return list(range(upper))
    if isinstance(spec, int):
        spec = [spec]
    items: list[int] = []
    if isinstance(spec, str):
        for piece in spec.split(","):
            piece = piece.strip()
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
    else:
        items = [int(i) for i in spec]
    if not items:
        raise ConfigError(f"{what} selection {spec!r} selects nothing")
    bad = [i for i in items if i < 0 or i >= upper]
    if bad:
        raise ConfigError(f"{what} {bad[0]} is out of range: this model has {upper} {what}s (0-{upper - 1})")
    return sorted(set(items))
