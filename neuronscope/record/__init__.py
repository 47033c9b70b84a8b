"""The record stage: activation exemplars and stats per MLP neuron, via Ray Data."""

from .driver import record, records_key, stats_key

__all__ = ["record", "records_key", "stats_key"]
