"""The names every LLM call is booked under, beside the ledger that books them (``base.Ledger``)."""

from __future__ import annotations

from enum import StrEnum


class Agent(StrEnum):
    """Every name an LLM call is booked under: the ledger's keys and agent entries' "agent".

    The first seven each have a prompt template of the same name (``prompts/templates/NAME.vN.txt``).
    """

    DECONSTRUCT = "deconstruct"
    EXPLAIN = "explain"
    REFINE = "refine"
    SINGLE_PASS = "single_pass"
    SIMULATE = "simulate"
    DETECTION = "detection"
    FUZZING = "fuzzing"
    # A scorer's calls for the baseline and for the control, booked apart from the method's.
    SIMULATE_BASELINE = "simulate_baseline"
    DETECTION_BASELINE = "detection_baseline"
    FUZZING_BASELINE = "fuzzing_baseline"
    CONTROL = "control"
