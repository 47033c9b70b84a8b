"""benchmarks/common.py: the command line a benchmark records, and how it appends to RESULTS.md."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "common.py"
_spec = importlib.util.spec_from_file_location("benchmarks_common", _PATH)
assert _spec and _spec.loader
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)


def test_command_keeps_every_flag_and_quotes_what_a_shell_would_split():
    script = str(_PATH.with_name("quality.py"))
    assert common.command(script, ["--parts", "q2", "--q2-draws", "8"]) == (
        "python benchmarks/quality.py --parts q2 --q2-draws 8"
    )
    assert common.command(script, ["--layers", "1, 5"]) == "python benchmarks/quality.py --layers '1, 5'"


def test_command_names_paths_of_the_machine_by_a_word():
    argv = ["--out", "/scratch/q", "--run=/scratch/r", "--parts", "q2", "--puzzles", "/scratch/p.json"]
    assert common.command("atlas.py", argv) == (
        "python benchmarks/atlas.py --out RUN --run=RUN --parts q2 --puzzles PUZZLES"
    )


def test_sections_are_appended_after_a_title_with_one_blank_line_between(tmp_path):
    results = tmp_path / "RESULTS.md"
    common.append_results("## One\n\nfigures\n", results)
    with open(results, "a") as fh:
        fh.write("notes without a final newline")
    common.append_results("\n## Two\n", results)
    assert results.read_text() == common.TITLE + "\n## One\n\nfigures\nnotes without a final newline\n\n## Two\n"
