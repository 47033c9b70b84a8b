"""Where a unit of work's time goes: phases timed by a context manager, each holding its own time
(a clock the test moves, no sleeps)."""

from __future__ import annotations

import pytest
from fakes import Clock

from neuronscope.timing import Timings, judge_phase, phase_order


def test_a_phase_inside_another_is_its_own_time_not_the_outer_ones():
    clock = Clock()
    t = Timings(clock)
    with t.phase("workflow"):
        clock.advance(1)
        with t.phase(judge_phase("reader")):
            clock.advance(2)
            with t.phase("llm"):  # the judge's LLM call: llm's, not the judge's
                clock.advance(4)
        with t.phase("llm"):
            clock.advance(8)
        clock.advance(16)
    t.add("queue", 0.5)
    assert t.seconds == {"workflow": 17, "judge reader": 2, "llm": 12, "queue": 0.5}
    assert t.total() == clock.now + 0.5  # every second counted once
    assert list(t.as_dict()) == ["queue", "llm", "judge reader", "workflow"]


def test_a_phase_that_raises_still_counts_and_leaves_the_outer_one_right():
    clock = Clock()
    t = Timings(clock)
    with t.phase("workflow"):
        with pytest.raises(RuntimeError), t.phase("read"):
            clock.advance(3)
            raise RuntimeError("store down")
        clock.advance(1)
    assert t.seconds == {"read": 3, "workflow": 1}


def test_phases_list_in_the_order_a_task_runs_them_then_any_other():
    names = ["write", "zeta", judge_phase("simulation"), "llm", "queue", judge_phase("reader"), "read"]
    assert sorted(names, key=phase_order) == [
        "queue",
        "read",
        "llm",
        "judge reader",
        "judge simulation",
        "write",
        "zeta",
    ]
