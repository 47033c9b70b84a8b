"""What this machine's CPU can do that a model's dtype depends on."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def native_bf16() -> bool:
    """Whether this machine's CPU computes bf16 natively (else torch emulates it, ~100x slower)."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = set(fh.read().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})
