"""Bad input, table-driven: each case exits 2 with one line that names the bad thing, and loses
nothing already written. (The README's troubleshooting section lists the same cases.)"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from explain_helpers import MONTHS, records

from neuronscope.cli import main
from neuronscope.layout import records_key
from neuronscope.schema import RECORDS, conform
from neuronscope.store import Store

RECORD = ["--layers", "0", "--neurons", "0", "--max-tokens", "256"]
UNREACHABLE_LLM = ["--llm-backend", "openai", "--llm-base-url", "http://127.0.0.1:9/v1"]


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _corpus(kind: str, tmp: Path) -> str:
    if kind == "parquet_without_text":
        pq.write_table(pa.table({"body": ["some words"]}), tmp / "c.parquet")
        return str(tmp / "c.parquet")
    return _write(
        tmp / {"jsonl_broken_line": "c.jsonl"}.get(kind, "c.txt"),
        {
            "invalid_utf8": b"\xff\xfe\xfa\xfb\n\xc3\x28\n",
            "nul_bytes": b"plain words\x00 and a NUL\n",
            "one_50mb_line": b"word " * (10 * 1024 * 1024) + b"\n",
            "only_blank_lines": b"\n  \n\t\n\n",
            "jsonl_broken_line": b'{"text": "fine"}\n{"text": "also fine"}\n{"text": "cut sho\n',
        }[kind],
    )


def _records(tmp: Path, kind: str) -> str:
    run = tmp / "run"
    store = Store.open(str(run))
    df = records(
        [f"The report was filed in {m} by the clerk." for m in sorted(MONTHS)[:8]],
        MONTHS,
        randoms=[f"The river ran {n} miles." for n in ["two", "three", "four", "five"]],
    )
    if kind == "corrupt_parquet":
        store.write_bytes(records_key(0), b"PAR1 this is not a parquet file")
    elif kind == "wrong_schema":
        store.write_parquet(records_key(0), pa.table({"layer": [0], "neuron": [0], "tokens": [["a"]]}))
    else:
        bad = math.nan if kind == "nan" else math.inf
        df.at[0, "activations"] = [bad] + list(df.at[0, "activations"])[1:]
        df.at[0, "max_act"] = bad
        store.write_parquet(records_key(0), conform(pa.Table.from_pandas(df, preserve_index=False), RECORDS))
    (run / "precious.txt").write_text("mine")
    return str(run)


def _bad_corpus(tmp: Path, kind: str) -> tuple[list[str], str]:
    corpus = _corpus(kind, tmp)
    return ["record", "--out", str(tmp / "run"), "--corpus", corpus, *RECORD], Path(corpus).name


def _bad_records(tmp: Path, kind: str) -> tuple[list[str], str]:
    run = _records(tmp, kind)
    return ["explain", "--records", run, *UNREACHABLE_LLM], "records"


@pytest.mark.parametrize(
    "make,kind,fragment",
    [
        (_bad_corpus, "invalid_utf8", "holds no usable text (skipped: {'binary': 2})"),
        (_bad_corpus, "nul_bytes", "holds no usable text (skipped: {'binary': 1})"),
        (_bad_corpus, "one_50mb_line", "holds no usable text (skipped: {'too_long': 1})"),
        (_bad_corpus, "only_blank_lines", "holds no usable text (skipped: {'empty': 2})"),
        (_bad_corpus, "parquet_without_text", "has no text column 'text'; columns: ['body']"),
        (_bad_corpus, "jsonl_broken_line", "line 3 is not valid JSON"),
        (_bad_records, "corrupt_parquet", "is not a readable Parquet file"),
        (_bad_records, "wrong_schema", "is missing column(s) ['kind', 'rank', 'window_id'"),
        (_bad_records, "nan", "activations that are not finite"),
        (_bad_records, "inf", "activations that are not finite"),
    ],
)
def test_bad_input_file(cli, tmp_path, make, kind, fragment):
    """A bad corpus or bad records: the error names the file (or the records) and the fault."""
    argv, named = make(tmp_path, kind)
    line = cli(2, *argv)
    assert fragment in line and named in line
    if make is _bad_records:  # the run keeps what it held beside the bad records
        assert (tmp_path / "run" / "precious.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "yaml_text,fragment",
    [
        ("record:\n  top_kk: 5\n", "record.top_kk"),
        ("record:\n  top_k: lots\n", "record.top_k='lots'"),
        ("record:\n  neurons: 0-5000\n  layers: '0'\n", "neuron 1536 is out of range"),
        ("record:\n  layers: '3-x'\n", "record.layers='3-x': layer selection '3-x' is not an index or a range"),
        ("recrod:\n  top_k: 5\n", "recrod"),
    ],
)
def test_bad_config(cli, tmp_path, yaml_text, fragment):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml_text)
    line = cli(2, "record", "--out", str(tmp_path / "run"), "--config", str(cfg), "--max-tokens", "256")
    assert fragment in line


def test_non_finite_activations_fail_their_neuron_with_the_reason():
    from neuronscope.exemplars import load

    df = records([f"The report was filed in {m}." for m in sorted(MONTHS)[:3]], MONTHS)
    df.at[1, "activations"] = list(df.at[1, "activations"])[:-1] + [math.nan]
    with pytest.raises(ValueError, match=r"window 1001 \(top rank 1\) has activations that are not finite"):
        load(df)


def test_run_folder_that_is_a_file(cli, tmp_path):
    f = tmp_path / "run"
    f.write_text("precious")
    line = cli(2, "record", "--out", str(f), *RECORD)
    assert str(f) in line and f.read_text() == "precious"


@pytest.mark.parametrize(
    "kind,fragment",
    [
        ("missing_files", "config.json"),
        ("unsupported_architecture", "'bert'"),
    ],
)
def test_bad_model(cli, tmp_path, kind, fragment):
    model = tmp_path / "model"
    model.mkdir()
    if kind == "unsupported_architecture":
        (model / "config.json").write_text(
            json.dumps(
                {"model_type": "bert", "architectures": ["BertModel"], "num_hidden_layers": 2, "intermediate_size": 8}
            )
        )
    line = cli(2, "record", "--out", str(tmp_path / "run"), "--model", str(model), *RECORD)
    assert fragment in line and str(model) in line


def test_store_errors(cli, tmp_path, s3_env, monkeypatch):
    line = cli(2, "record", "--out", "s3://no-such-bucket-here/run", *RECORD)
    assert "no-such-bucket-here" in line
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    line = cli(2, "record", "--out", f"s3://{s3_env}/run", *RECORD)
    assert s3_env in line and "wrong-secret" not in line


def test_a_run_the_credentials_may_read_but_not_write_is_refused_and_keeps_its_objects(
    cli, s3_env, seaweedfs, monkeypatch
):
    from s3_server import READER_KEY, READER_SECRET

    run = Store.open(f"s3://{s3_env}/run")
    run.write_bytes(records_key(0), b"rows recorded before the credentials changed")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", READER_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", READER_SECRET)
    line = cli(2, "record", "--out", run.uri, *RECORD)
    assert f"permission denied by {seaweedfs.endpoint} to write to run location {run.uri}" in line, line
    assert "(AccessDenied)" in line and READER_SECRET not in line
    assert Store.open(run.uri).read_bytes(records_key(0)) == b"rows recorded before the credentials changed"


@pytest.fixture
def cli(ray_local, capsys):
    """Run the CLI; assert its exit status and that it printed exactly one error line; return it."""

    def run(expected: int, *argv: str) -> str:
        code = main(list(argv))
        out = capsys.readouterr()
        errors = [ln for ln in (out.out + out.err).splitlines() if ln.startswith("error:")]
        assert code == expected and len(errors) == 1 and "Traceback" not in out.err, (code, out.out, out.err)
        return errors[0]

    return run


def test_bad_corpus_shards_in_s3_are_named_by_their_object(cli, s3_env, seaweedfs, tmp_path):
    """A corpus of several shards in a bucket: a broken line names its object and line; a glob
    that matches nothing, or a missing bucket, name the spec."""
    client = seaweedfs.client()
    client.put_object(Bucket=s3_env, Key="corpus/a.jsonl", Body=b'{"text": "fine words here"}\n' * 40)
    client.put_object(Bucket=s3_env, Key="corpus/b.jsonl", Body=b'{"text": "fine"}\n{"text": "also"}\n{"text": "cut\n')
    run = ["record", "--out", str(tmp_path / "run"), "--layers", "0", "--neurons", "0"]
    line = cli(2, *run, "--corpus", f"s3://{s3_env}/corpus/*.jsonl")
    assert f"corpus 's3://{s3_env}/corpus/b.jsonl' line 3 is not valid JSON" in line, line
    line = cli(2, *run, "--corpus", f"s3://{s3_env}/corpus/*.parquet")
    assert f"corpus glob 's3://{s3_env}/corpus/*.parquet' matches no file" in line, line
    line = cli(2, *run, "--corpus", "s3://no-such-corpus-bucket/corpus/*.jsonl")
    assert "no-such-corpus-bucket" in line, line
