"""Where one unit of work's wall time goes: named phases, each timed by a context manager.

One neuron's task keeps one ``Timings``: the task times its reads and writes, the workflow its
setup and clustering, the metered LLM its waits on the engine and each judge its scoring. A phase
timed inside another is its own, not the outer one's, so the phases add up to the time spent in
any of them and nothing is counted twice (a judge's LLM calls are ``llm``, not the judge's).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# The phases of a neuron's task, in the order they come (``status`` lists them so).
QUEUE = "queue"  # from the driver's submit to the task's start: a free worker, its start, the task's arguments
READ = "read"  # the neuron's records, its output side and its response cache read from the store
LOAD_EMBEDDER = "load embedder"  # the sentence embedder loaded (a worker's own; a served one: none)
SETUP = "setup"  # the split, the judges, the control explanation and the words baseline
LLM = "llm"  # blocked on the LLM (the engine pool or a server), cache hits excepted
JUDGE = "judge"  # a scorer's own time, named "judge SCORER" (its LLM calls are ``llm``)
CLUSTER = "cluster"  # the activating words (and features) embedded and grouped into modes
WORKFLOW = "workflow"  # the rest of the workflow: prompts, parsing, bookkeeping
WRITE = "write"  # the response cache and the transcript written (the rows, written last, are not in it)
ORDER = (QUEUE, READ, LOAD_EMBEDDER, SETUP, LLM, JUDGE, CLUSTER, WORKFLOW, WRITE)


def judge_phase(scorer: str) -> str:
    return f"{JUDGE} {scorer}"


def phase_order(name: str) -> tuple[int, str]:
    """A sort key: the phases in ``ORDER`` (a judge's by its ``judge`` place), then any other."""
    head = JUDGE if name.startswith(JUDGE + " ") else name
    return (ORDER.index(head) if head in ORDER else len(ORDER), name)


class Timings:
    """Seconds per named phase of one unit of work, each phase's own time (not that of the phases
    timed inside it). One unit of work runs on one thread: not thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.started = time.time()  # Unix seconds
        self.clock = clock  # seconds from any origin (tests pass their own)
        self.seconds: dict[str, float] = {}
        self._inner: list[float] = []  # per open phase, the seconds of the phases timed inside it

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = self.clock()
        self._inner.append(0.0)
        try:
            yield
        finally:
            spent = self.clock() - t0
            self.add(name, spent - self._inner.pop())
            if self._inner:
                self._inner[-1] += spent

    def add(self, name: str, seconds: float) -> None:
        """``seconds`` more for ``name`` (a span measured elsewhere, such as a queue's)."""
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def total(self) -> float:
        return sum(self.seconds.values())

    def as_dict(self, digits: int = 4) -> dict[str, float]:
        """Seconds per phase, rounded, in ``phase_order``."""
        return {k: round(self.seconds[k], digits) for k in sorted(self.seconds, key=phase_order)}
