"""The sentence embedder behind clustering, the embedding scorer, controls and the atlas search;
and one embedder served to every workflow of a run (``serve``)."""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable
from functools import cached_property

import numpy as np

from .cpu import native_bf16

_EMBEDDERS: dict[tuple[str, str], object] = {}
_LOCK = threading.Lock()


def resolve_dtype(dtype: str) -> str:
    """``dtype`` (``ExplainConfig.embedder_dtype``) with "auto" made concrete for this machine's
    CPU, where the embedder runs (on a GPU node too: it is small, and the GPUs serve the LLM)."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if native_bf16() else "float32"


def get_embedder(spec: str, dtype: str = "auto"):
    """The sentence-transformers model for ``spec`` in ``dtype`` (``resolve_dtype``), loaded once
    per worker process."""
    dtype = resolve_dtype(dtype)
    with _LOCK:
        if (spec, dtype) not in _EMBEDDERS:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            import torch
            from sentence_transformers import SentenceTransformer

            from .bundled import resolve_embedder

            model = SentenceTransformer(resolve_embedder(spec), device="cpu")
            _EMBEDDERS[spec, dtype] = model.to(getattr(torch, dtype))
        return _EMBEDDERS[spec, dtype]


def embed(embedder, texts: list[str]) -> np.ndarray:
    """Unit-length float32 embeddings (cosine geometry for k-means and the silhouette)."""
    x = np.asarray(embedder.encode(list(texts), normalize_embeddings=True, show_progress_bar=False), dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class Lru:
    """The values of the last ``size`` keys used, each computed once while it stays: ``get`` computes
    a call's new keys in one batch. Thread-safe; the computing runs outside the lock."""

    def __init__(self, size: int):
        self.size = size
        self.values: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    def get(self, keys: list, compute: Callable[[list], Iterable]) -> list:
        """The value of each of ``keys``; ``compute(new keys)`` gives theirs, in order."""
        distinct = list(dict.fromkeys(keys))  # a key recurs across a call's items
        with self.lock:
            known = {k: self.values[k] for k in distinct if k in self.values}
        todo = [k for k in distinct if k not in known]
        if todo:
            known.update(zip(todo, compute(todo)))
        with self.lock:
            for k in _last_seen(keys):  # (re)inserted: another thread may have evicted it meanwhile
                self.values[k] = known[k]
                self.values.move_to_end(k)
            while len(self.values) > self.size:
                self.values.popitem(last=False)
        return [known[k] for k in keys]


class Lrus:
    """One ``Lru`` of ``size`` per owner (an embedder), dropped with its owner."""

    def __init__(self, size: int):
        self.size = size
        self.by: weakref.WeakKeyDictionary[object, Lru] = weakref.WeakKeyDictionary()

    def of(self, owner) -> Lru:
        with _LOCK:
            if owner not in self.by:
                self.by[owner] = Lru(self.size)
            return self.by[owner]


def _last_seen(keys: list) -> list:
    """Each distinct key once, in the order of its last occurrence: the order that marking every
    occurrence as used in turn leaves a cache in."""
    return list(reversed(dict.fromkeys(reversed(keys))))


def _rows(found: list) -> np.ndarray:
    return np.stack(found) if found else np.zeros((0, 0), np.float32)


# Texts embedded once per process and embedder: words, windows and contexts recur across the
# neurons of a run (a whole-model run's neurons share the corpus windows) and across the many
# explanations of one neuron.
CACHE_SIZE = 50_000
_EMBEDDED = Lrus(CACHE_SIZE)


def embed_cached(embedder, texts: list[str]) -> np.ndarray:
    """``embed`` through a per-process cache of the last CACHE_SIZE texts: (len(texts), dim)."""
    return _rows(_EMBEDDED.of(embedder).get(texts, lambda todo: embed(embedder, todo)))


# -- one embedder for a whole run ------------------------------------------------------------------
# A run's workflows embed the same corpus text over and over (the windows, their words and contexts
# recur across neurons) and would each load the model in their own worker process (seconds, and
# about 0.7 GB apiece). ``serve`` loads it once, in a Ray actor that embeds every text once for
# all of them; the workers hold only a ``ServedEmbedder``, its client.

SERVED_CACHE_SIZE = 200_000  # texts the served embedder keeps: a whole-model run's recurring text


class EmbedderService:
    """The actor's body: the model (loaded on first use) and one cache of its outputs, shared by
    every caller."""

    def __init__(self, embedder, dtype: str = "auto"):
        self.embedder, self.dtype = embedder, dtype
        self.cache = Lru(SERVED_CACHE_SIZE)

    @cached_property
    def model(self):
        return _model(self.embedder, self.dtype)

    def encode(self, texts: list[str]) -> np.ndarray:
        """The model's normalised output for each text, each new text computed once in one batch."""
        return _rows(self.cache.get(texts, self._encode))

    def _encode(self, texts: list[str]) -> np.ndarray:
        out = self.model.encode(texts, normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)

    def vocabulary(self) -> dict[str, int]:
        return dict(self.model.tokenizer.get_vocab())


class _Vocabulary:
    """The served model's tokenizer as far as the workflows read it (``get_vocab``)."""

    def __init__(self, vocab: dict[str, int]):
        self.vocab = vocab

    def get_vocab(self) -> dict[str, int]:
        return self.vocab


_SERVED: dict[str, ServedEmbedder] = {}  # actor id -> this process's client of it


def _model(embedder, dtype: str):
    """``embedder``'s model: a spec loaded in ``dtype``, or the embedder object itself."""
    return get_embedder(embedder, dtype) if isinstance(embedder, str) else embedder


def _served(actor, embedder, dtype: str) -> ServedEmbedder:
    """This process's one client of ``actor``: each task unpickles its run's embedder anew, and the
    per-process caches (``embed_cached``, the clustering's reference words) key on the object."""
    with _LOCK:
        key = actor._actor_id.hex()
        if key not in _SERVED:
            _SERVED[key] = ServedEmbedder(actor, embedder, dtype)
        return _SERVED[key]


class ServedEmbedder:
    """An embedder whose model runs in an ``EmbedderService`` actor: ``encode`` as
    sentence-transformers' (normalised output), ``tokenizer.get_vocab``. Picklable; unpickled, it is
    its process's one client of the actor. Should the actor die (its process killed for memory,
    say), the client loads ``embedder`` itself and goes on without it: the worker's own model,
    as when nothing is served."""

    def __init__(self, actor, embedder, dtype: str = "auto"):
        self.actor, self.embedder, self.dtype = actor, embedder, dtype
        self.own = None  # the worker's own model, once the actor is gone

    def __reduce__(self):
        return _served, (self.actor, self.embedder, self.dtype)

    def _own(self):
        if self.own is None:
            self.own = _model(self.embedder, self.dtype)
        return self.own

    def encode(self, texts, normalize_embeddings: bool = True, **_) -> np.ndarray:
        if not normalize_embeddings:
            raise ValueError("a served embedder gives normalised embeddings only")
        if self.own is None:
            import ray

            try:
                return ray.get(self.actor.encode.remote(list(texts)))
            except ray.exceptions.RayActorError:
                pass  # gone: the worker's own model from now on
        return self._own().encode(list(texts), normalize_embeddings=True, show_progress_bar=False)

    @cached_property
    def tokenizer(self):
        if self.own is None:
            import ray

            try:
                return _Vocabulary(ray.get(self.actor.vocabulary.remote()))
            except ray.exceptions.RayActorError:
                pass
        return self._own().tokenizer


def serve(embedder, dtype: str = "auto") -> ServedEmbedder:
    """``embedder`` (a spec such as ``cfg.embedder``, loaded in ``dtype``, or an embedder object)
    in one Ray actor for the caller's run; ``stop`` ends it. It takes no CPU of Ray's (it works
    only while the workflows wait on it)."""
    import ray

    service = ray.remote(num_cpus=0)(EmbedderService)
    return ServedEmbedder(service.remote(embedder, dtype), embedder, dtype)


def stop(served: ServedEmbedder) -> None:
    import ray

    ray.kill(served.actor)
    with _LOCK:
        _SERVED.pop(served.actor._actor_id.hex(), None)
