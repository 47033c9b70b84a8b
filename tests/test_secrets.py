"""No credential lands in the manifest, transcripts, outputs, logs or error messages, even when the
LLM server echoes the key back (as some do in their 401 answers)."""

from __future__ import annotations

import pyarrow as pa
from explain_helpers import MONTHS, records

from neuronscope.cli import main
from neuronscope.layout import records_key
from neuronscope.redact import redact_url
from neuronscope.schema import RECORDS, conform
from neuronscope.store import Store

SECRET = "sk-neuronscope-FAKE-4f1d9c2a7e"
SENTENCES = [
    f"The {w} report was filed in {m} by the clerk."
    for w, m in zip(
        ["first", "second", "third", "fourth", "fifth", "sixth", "last", "next"],
        ["May", "June", "July", "March", "April", "August", "October", "December"],
    )
]


def test_the_key_never_leaves_the_process(bad_llm_server, ray_local, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NEURONSCOPE_TEST_KEY", SECRET)
    run = tmp_path / "run"
    df = records(SENTENCES, MONTHS, randoms=[f"The river ran {n} miles." for n in ["two", "three", "four", "five"]])
    Store.open(str(run)).write_parquet(records_key(0), conform(pa.Table.from_pandas(df, preserve_index=False), RECORDS))
    main(
        [
            "explain",
            "--records",
            str(run),
            "--llm-backend",
            "openai",
            "--llm-base-url",
            bad_llm_server + "/echo401/v1",
            "--llm-api-key-env",
            "NEURONSCOPE_TEST_KEY",
            "--llm-max-retries",
            "0",
            "--n-explain",
            "4",
            "--n-heldout-top",
            "2",
            "--n-heldout-random",
            "2",
        ]
    )
    out = capsys.readouterr()
    written = [p for p in run.rglob("*") if p.is_file()]
    assert any(p.name == "manifest.json" for p in written) and any("explanations" in str(p) for p in written)
    for p in written:
        assert SECRET.encode() not in p.read_bytes(), p
    assert SECRET not in out.out + out.err
    errors = Store.open(str(run)).read_parquet("explanations/").column("error").to_pylist()
    assert any("HTTP 401" in (e or "") and "Bearer ***" in e for e in errors), errors


def test_urls_lose_their_user_and_password():
    assert redact_url("http://me:hunter2@llm.example:8000/v1") == "http://***@llm.example:8000/v1"
    assert redact_url("https://llm.example/v1") == "https://llm.example/v1"
    assert redact_url(None) is None
