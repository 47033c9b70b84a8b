"""The record stage: activation exemplars and stats per MLP neuron, via Ray Data."""

from .driver import record

__all__ = ["record"]
