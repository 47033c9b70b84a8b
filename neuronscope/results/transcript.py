"""The entries of a neuron's transcript, typed.

A transcript is a list of entries, stored one JSON object per line; each object's "agent" says
its kind. ``Entry.to_json`` writes exactly the objects earlier versions wrote (same keys, same
order) and ``entry_from_json`` reads them back, so stored runs and golden files read as before.
"""

from __future__ import annotations

from dataclasses import Field, dataclass, field, fields
from typing import Any, ClassVar

from ..llm.agents import Agent
from ..llm.base import Message

# Field metadata: OPTIONAL is left out of the object while None (present only in some entries);
# FLAT is a dict whose items are the object's own keys (scorer extras, the ledger's agents).
OPTIONAL = {"optional": True}
FLAT = {"flat": True}


class Entry:
    """One transcript line, a dataclass; ``agent``, its object's first key, names its kind: the
    agent's name for an agent's entries, a fixed word (a class attribute) for the others."""

    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]
    agent: str

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"agent": self.agent}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("flat"):
                out.update(value)
            elif value is not None or not f.metadata.get("optional"):
                out[f.name] = value
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Entry:
        """The entry of a stored object; TypeError when the object lacks or adds a field."""
        flat = next((f.name for f in fields(cls) if f.metadata.get("flat")), None)
        named = {f.name for f in fields(cls)} - {flat}
        rest = {k: v for k, v in d.items() if k not in named and k != "agent"}
        if rest and not flat:
            raise TypeError(f"unexpected keys {sorted(rest)}")
        return cls(**{k: v for k, v in d.items() if k in named}, **({flat: rest} if flat else {}))


@dataclass
class AgentAnswer(Entry):
    """One answer of an agent to one conversation of a batch: parsed, or rejected with the reason."""

    agent: Agent
    item: int  # the conversation's index in its batch
    attempt: int  # 0, then each corrective retry
    messages: list[Message]
    raw: str  # the answer with its prefill
    parsed: Any = field(default=None, metadata=OPTIONAL)
    error: str | None = field(default=None, metadata=OPTIONAL)

    def __post_init__(self) -> None:
        self.agent = Agent(self.agent)  # a stored object holds the plain name


@dataclass
class AgentFailure(Entry):
    """An agent output given up on without failing the neuron (e.g. a missing baseline)."""

    agent: Agent
    error: str

    def __post_init__(self) -> None:
        self.agent = Agent(self.agent)


@dataclass
class SplitEntry(Entry):
    """The window ids of the neuron's exemplar splits."""

    agent = "split"
    max_act: float  # the neuron's scale: its 10 (``exemplars.Scale.peak``)
    explain: list[int]
    heldout: list[int]
    validation: list[int]
    base: float | None = field(default=None, metadata=OPTIONAL)  # the scale's 0, where not 0


@dataclass
class TriageEntry(Entry):
    """Method "triage": whether the neuron gets the full workflow after its single-pass one."""

    agent = "triage"
    baseline_score: float  # the single-pass explanation's held-out score (NaN: none)
    word_modes: int  # modes of the activating words
    full: bool  # the neuron got the full workflow
    withheld: bool = False  # it was due, but the run's token budget could not pay for it
    lexical_score: float | None = field(default=None, metadata=OPTIONAL)  # its words baseline's held-out score


@dataclass
class CandidateEntry(Entry):
    """A mode's candidate explanations, each with its score on the exemplars that decide, and the
    one chosen (the words baseline unless another scores higher)."""

    agent = "candidates"
    scorer: str
    mode: int
    candidates: list[dict]  # {"text", "source", "score"}, in the order judged
    chosen: int  # index into candidates
    judged_on: str  # "validation" or "explain"
    window_ids: list[int]


@dataclass
class ClusterEntry(Entry):
    """One clustering variant's modes (both are computed; ``used`` marks the one the run took)."""

    agent = "cluster"
    variant: str
    used: bool
    k: int
    silhouettes: dict  # candidate k -> silhouette (string keys once read back from JSON)
    merges: list[float]
    n_modes: int
    modes: dict  # window id -> mode (string keys once read back from JSON)


@dataclass
class ScoreEntry(Entry):
    """One scored explanation on one exemplar set."""

    agent = "score"
    scorer: str
    purpose: str  # "mode heldout", "combined heldout", "baseline heldout", "control heldout", "triage heldout"
    explanation: str
    window_ids: list[int]
    values: list[float]
    score: float
    extra: dict[str, Any] = field(default_factory=dict, metadata=FLAT)  # the scorer's other metrics


@dataclass
class RefineDecision(Entry):
    """Whether a revised explanation replaced the current one, and on which scores."""

    agent = "refine_decision"
    scorer: str
    mode: int
    round: int
    old: str
    new: str
    old_score: float
    new_score: float
    kept: bool
    judged_on: str  # "validation" or "explain"
    window_ids: list[int]


@dataclass
class RefineFailure(Entry):
    """A refine round whose answers stayed malformed: the explanations stay as they were."""

    agent = "refine_decision"
    round: int
    kept: bool
    error: str


@dataclass
class PolarityEntry(Entry):
    """The rule's verdict on the neuron's negative side (where its records hold one): whether it
    is explained; the entries after this one, up to the timing and ledger, are that side's (those
    before it, the positive side's)."""

    agent = "polarity"
    polarity: int  # the side the entries after this one belong to: -1
    min: float  # the neuron's most negative activation
    max: float  # its highest
    ratio: float | None  # the rule's r: explained where |min| >= r x max (None: off)
    explained: bool


@dataclass
class NeuronError(Entry):
    """Why the neuron failed."""

    agent = "error"
    error: str


@dataclass
class TimingEntry(Entry):
    """Where the neuron's task time went: seconds per phase (``neuronscope.timing``), each
    phase's own time; the transcript's entry runs to the workflow's end, the rows' copy (their
    ``timings`` column) to the transcript's write."""

    agent = "timing"
    started: float  # the task's start, Unix seconds
    finished: float  # when these timings were taken, Unix seconds
    seconds: dict[str, float]  # phase -> seconds, ``queue`` (before ``started``) included

    def total(self) -> float:
        return sum(self.seconds.values())


@dataclass
class LedgerEntry(Entry):
    """The neuron's LLM usage per agent (the transcript's last entry)."""

    agent = "ledger"
    usage: dict[str, dict[str, int]] = field(default_factory=dict, metadata=FLAT)


@dataclass
class OtherEntry(Entry):
    """An object of no known kind (hand-written or from another tool), kept as it is."""

    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.agent = str(self.data.get("agent", ""))

    def to_json(self) -> dict[str, Any]:
        return dict(self.data)


FIXED_KINDS: dict[str, type[Entry]] = {
    "split": SplitEntry,
    "triage": TriageEntry,
    "candidates": CandidateEntry,
    "cluster": ClusterEntry,
    "score": ScoreEntry,
    "error": NeuronError,
    "polarity": PolarityEntry,
    "timing": TimingEntry,
    "ledger": LedgerEntry,
}
AGENT_NAMES = frozenset(Agent)


def _kind_of(d: dict[str, Any]) -> type[Entry]:
    tag = d.get("agent")
    if tag == "refine_decision":
        return RefineFailure if "error" in d else RefineDecision
    if tag in AGENT_NAMES:
        return AgentAnswer if "attempt" in d else AgentFailure
    return FIXED_KINDS.get(str(tag), OtherEntry)


def entry_from_json(d: dict[str, Any]) -> Entry:
    """The typed entry of one stored object; an object that fits no kind is an OtherEntry."""
    cls = _kind_of(d)
    if cls is not OtherEntry:
        try:
            return cls.from_json(d)
        except TypeError:
            pass
    return OtherEntry(dict(d))


def entries_from_json(objects: list[dict[str, Any]]) -> list[Entry]:
    return [entry_from_json(d) for d in objects]


def by_polarity(entries: list[Entry]) -> dict[int, list[Entry]]:
    """A neuron's entries per polarity: those of the workflow's sides, the neuron's own entries
    (the polarity verdict, timing, ledger) left out."""
    out: dict[int, list[Entry]] = {1: []}
    side = out[1]
    for e in entries:
        if isinstance(e, PolarityEntry):
            side = out.setdefault(e.polarity, []) if e.explained else []
        elif not isinstance(e, (TimingEntry, LedgerEntry)):
            side.append(e)
    return out
