"""The console's progress lines: one format, on the stderr of the moment, printed once."""

from __future__ import annotations

import re

from neuronscope.logs import printer


def test_progress_lines_go_to_the_current_stderr_once_each(capsys):
    first, second = printer(), printer()  # each CLI call makes its own: no line may double
    first("record: 3/40 windows")
    second("explain 1/4: layer 0 neuron 2: ok")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert re.fullmatch(r"\[ {5}0s\] record: 3/40 windows", lines[0])
    assert lines[1].endswith("s] explain 1/4: layer 0 neuron 2: ok")
