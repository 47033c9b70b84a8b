"""The whole-model neuron atlas: one table, search indexes and a static site per run."""

from .build import atlas_store, build_atlas, load_index
from .search import AtlasIndex, Hit

__all__ = ["AtlasIndex", "Hit", "atlas_store", "build_atlas", "load_index"]
