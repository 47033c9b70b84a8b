"""The seeded hashes that order the recorder's samples: random tokens, strata windows, histogram rows.

A sample key is (level, hash): a 5-bit level from the item's hash alone (the same for every
neuron) above a 58-bit hash of (item, neuron). Keys are a uniform random order per neuron, and
once a neuron's sample is full only items of the lowest levels can enter it, so a batch hashes
the pairs of those items only.
"""

from __future__ import annotations

import torch

SAMPLE_LEVELS = 32  # 5 bits above the 58-bit hash: keys stay non-negative
LEVEL_SHIFT = 58


def as_int64(c: int) -> int:
    """A 64-bit constant as the wrapping int64 that torch holds."""
    return c - (1 << 64) if c >= 1 << 63 else c


_C1, _C2, _GOLD = as_int64(0xBF58476D1CE4E5B9), as_int64(0x94D049BB133111EB), as_int64(0x9E3779B97F4A7C15)
_WINDOW_SALT = as_int64(0x2545F4914F6CDD1D)  # window hashes: independent of the token hashes
_NEGATIVE_SALT = as_int64(0xC2B2AE3D27D4EB4F)  # the negative side's neuron hashes


def srl(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift on int64 (torch's >> is arithmetic)."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def mix64(x: torch.Tensor) -> torch.Tensor:
    """splitmix64 finalizer in wrapping int64 arithmetic: a cheap, well-mixed integer hash."""
    x = x ^ srl(x, 30)
    x = x * _C1
    x = x ^ srl(x, 27)
    x = x * _C2
    return x ^ srl(x, 31)


def token_hash(seed: int, token_code: torch.Tensor) -> torch.Tensor:
    return mix64(token_code.to(torch.int64) * _GOLD + seed)


def window_hash(seed: int, window_ids: torch.Tensor) -> torch.Tensor:
    """A seeded hash per window (the strata's keys), unrelated to its tokens' hashes."""
    return token_hash(seed ^ _WINDOW_SALT, window_ids)


def neuron_hash(seed: int, layer: int, neurons: torch.Tensor, sign: int = 1) -> torch.Tensor:
    """A seeded hash per recorded neuron of a layer: each neuron samples its own tokens and
    windows; the negative side (``sign`` -1) its own windows again."""
    h = mix64(neurons.to(torch.int64) + ((layer + 1) << 32) + as_int64((seed * _GOLD) % (1 << 64)))
    return h if sign > 0 else mix64(h ^ _NEGATIVE_SALT)


def level(item_hash: torch.Tensor) -> torch.Tensor:
    """The sample level of an item (token or window): the top 5 bits of its hash."""
    return srl(item_hash, 64 - 5)


def pair_keys(item_hash: torch.Tensor, nh: torch.Tensor) -> torch.Tensor:
    """Sample keys of (item, neuron) pairs, elementwise (broadcasting): the item's level above
    a 58-bit hash of the pair."""
    return (level(item_hash) << LEVEL_SHIFT) | srl(mix64(item_hash ^ nh), 64 - LEVEL_SHIFT)


def keys_from_hashes(th: torch.Tensor, nh: torch.Tensor) -> torch.Tensor:
    """(tokens, neurons) sample keys from token hashes ``th`` and neuron hashes ``nh``."""
    return pair_keys(th[:, None], nh[None, :])


def sample_keys(seed: int, layer: int, neurons: torch.Tensor, token_code: torch.Tensor) -> torch.Tensor:
    """(tokens, neurons) non-negative int64 keys for the random sample; token_code = wid<<20 | pos."""
    return keys_from_hashes(token_hash(seed, token_code), neuron_hash(seed, layer, neurons))


def strata_keys(seed: int, layer: int, neurons: torch.Tensor, window_ids: torch.Tensor, sign: int = 1) -> torch.Tensor:
    """(windows, neurons) non-negative int64 keys of the strata of one side (``sign``)."""
    return keys_from_hashes(window_hash(seed, window_ids), neuron_hash(seed, layer, neurons, sign))
