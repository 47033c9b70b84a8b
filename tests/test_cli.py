"""The command line: bad input is a clear error that names the value, with exit status 2."""

from __future__ import annotations

import pytest

from neuronscope.cli import main


@pytest.fixture
def run_cli(ray_local, capsys):
    def run(*argv: str) -> tuple[int, str]:
        code = main(list(argv))
        out = capsys.readouterr()
        return code, out.out + out.err

    return run


def test_unknown_model(run_cli, tmp_path):
    code, out = run_cli("record", "--out", str(tmp_path / "r"), "--model", "bundled:nope")
    assert code == 2 and "unknown bundled model 'bundled:nope'" in out
    code, out = run_cli("record", "--out", str(tmp_path / "r"), "--model", str(tmp_path / "no-such-model"))
    assert code == 2 and "no-such-model" in out


@pytest.mark.parametrize(
    "flag,value,fragment",
    [
        ("--layers", "30", "layer 30 is out of range: this model has 30 layers (0-29)"),
        ("--neurons", "0,1536", "neuron 1536 is out of range: this model has 1536 neurons (0-1535)"),
        ("--top-k", "0", "record.top_k='0'"),
    ],
)
def test_out_of_range_selection(run_cli, tmp_path, flag, value, fragment):
    code, out = run_cli("record", "--out", str(tmp_path / "r"), flag, value)
    assert code == 2 and fragment in out


def test_empty_and_unreadable_corpus(run_cli, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n   \n\t\n")
    code, out = run_cli(
        "record", "--out", str(tmp_path / "r1"), "--corpus", str(empty), "--layers", "0", "--neurons", "0"
    )
    assert code == 2 and "empty.txt" in out
    code, out = run_cli("record", "--out", str(tmp_path / "r2"), "--corpus", str(tmp_path / "missing.jsonl"))
    assert code == 2 and "missing.jsonl" in out
    folder_as_file = tmp_path / "corpus.txt"
    folder_as_file.mkdir()
    code, out = run_cli("record", "--out", str(tmp_path / "r3"), "--corpus", str(folder_as_file / "x.txt"))
    assert code == 2 and "x.txt" in out


def test_unwritable_output_keeps_existing_data(run_cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("precious")
    code, out = run_cli("record", "--out", str(blocker / "run"), "--layers", "0", "--neurons", "0")
    assert code == 2 and str(blocker / "run") in out and "not a directory" in out
    assert blocker.read_text() == "precious"


def test_explain_without_records(run_cli, tmp_path):
    code, out = run_cli("explain", "--records", str(tmp_path / "nothing"))
    assert code == 2 and "no activation records under" in out and "neuronscope record" in out


def test_a_rerun_with_another_top_k_is_refused(run_cli, tmp_path):
    from neuronscope import manifest
    from neuronscope.config import RecordConfig
    from neuronscope.store import Store

    run = Store.open(str(tmp_path / "run"))
    manifest.begin_stage(run, "record", {}, RecordConfig(layers="0", neurons="0").model_dump())
    manifest.end_stage(run, "record", "done", {})
    before = run.read_bytes("manifest.json")
    code, out = run_cli("record", "--out", run.uri, "--layers", "0", "--neurons", "0", "--top-k", "5")
    assert code == 2 and f"top_k={RecordConfig().top_k}" in out and "top_k=5" in out and "new --out" in out
    assert run.read_bytes("manifest.json") == before


@pytest.mark.parametrize(
    "argv,hub",
    [
        (["record", "--out", "r"], False),
        (["record", "--out", "r", "--model", "HuggingFaceTB/SmolLM2-360M"], True),
        (["explain", "--records", "r", "--llm-model", "Qwen/Qwen3-0.6B"], True),
        (["show", "r", "--layer", "0", "--neuron", "0"], False),
    ],
)
def test_the_hub_is_offline_unless_a_hub_id_is_named(argv, hub, tmp_path):
    from neuronscope.cli import build_parser
    from neuronscope.cli.flags import names_a_hub_id

    assert names_a_hub_id(build_parser().parse_args(argv)) is hub
    folder = tmp_path / "my-model"
    folder.mkdir()
    assert names_a_hub_id(build_parser().parse_args(["record", "--out", "r", "--model", str(folder)])) is False


@pytest.mark.slow
def test_a_normal_record_run_prints_only_its_own_lines(tmp_path):
    """What a user sees: the CLI's progress lines and result, none of Ray's routine logging."""
    import subprocess
    import sys

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "neuronscope.cli",
            "record",
            "--out",
            str(tmp_path / "run"),
            "--layers",
            "0",
            "--neurons",
            "0-1",
            "--max-tokens",
            "1024",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    noise = [ln for ln in proc.stderr.splitlines() if not ln.startswith("[")]
    assert noise == [], noise
    assert "record: done" in proc.stderr and proc.stdout.splitlines()[-1] == f"run: {tmp_path / 'run'}"
