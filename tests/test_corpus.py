"""Corpus specs, skip counters, errors, and windowing."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fakes import CharTokenizer

from neuronscope.corpus import MAX_DOC_BYTES, iter_windows, load_documents
from neuronscope.errors import CorpusError


def test_txt_skips_and_counts(tmp_path):
    p = tmp_path / "c.txt"
    p.write_bytes(
        b"first doc\n\n   \t\nbad \xff\xfe bytes\nnul\x00here\nsecond doc\n" + b"x" * (MAX_DOC_BYTES + 1) + b"\n"
    )
    docs = load_documents(str(p))
    assert list(docs) == ["first doc", "second doc"]
    assert docs.skipped == {"empty": 1, "binary": 2, "too_long": 1}


def test_jsonl_and_parquet(tmp_path):
    j = tmp_path / "c.jsonl"
    rows = [{"body": "one"}, {"body": ""}, {"body": None}, {"body": 3}, {"body": "two"}]
    j.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    docs = load_documents(str(j), text_column="body")
    assert list(docs) == ["one", "two"]
    assert docs.skipped == {"empty": 2, "not_text": 1}
    j.write_text("\n".join(json.dumps(r) for r in rows) + "\n{not json\n")
    with pytest.raises(CorpusError, match=r"c\.jsonl' line 6 is not valid JSON .*'\{not json"):
        list(load_documents(str(j), text_column="body"))
    q = tmp_path / "c.parquet"
    pq.write_table(pa.table({"text": ["a b", " ", None, "c"]}), q)
    docs = load_documents(str(q))
    assert list(docs) == ["a b", "c"] and docs.skipped == {"empty": 2}


def test_directory_of_txt(tmp_path):
    (tmp_path / "b.txt").write_text("bee\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_text("sea\n")
    (tmp_path / "a.txt").write_text("ay\nay2\n")
    (tmp_path / "ignored.md").write_text("no\n")
    assert list(load_documents(str(tmp_path))) == ["ay", "ay2", "bee", "sea"]


def test_errors_name_the_path(tmp_path):
    with pytest.raises(CorpusError, match="nope.txt.*does not exist"):
        load_documents(str(tmp_path / "nope.txt"))
    bad = tmp_path / "c.csv"
    bad.write_text("a\n")
    with pytest.raises(CorpusError, match=r"c\.csv.*unknown extension '\.csv'"):
        load_documents(str(bad))
    with pytest.raises(CorpusError, match="bundled:nope"):
        load_documents("bundled:nope")
    j = tmp_path / "c.jsonl"
    j.write_text('{"body": "x"}\n')
    with pytest.raises(CorpusError, match="text column 'text'"):
        list(load_documents(str(j)))
    q = tmp_path / "c.parquet"
    pq.write_table(pa.table({"body": ["x"]}), q)
    with pytest.raises(CorpusError, match=r"c\.parquet.*no text column 'text'.*body"):
        list(load_documents(str(q)))
    q.write_bytes(b"not parquet at all")
    with pytest.raises(CorpusError, match="not a readable Parquet"):
        list(load_documents(str(q)))
    empty = tmp_path / "e.txt"
    empty.write_text("\n  \n\x00\n")
    with pytest.raises(CorpusError, match=r"e\.txt.*no usable text.*binary"):
        list(load_documents(str(empty)))
    (tmp_path / "d").mkdir()
    with pytest.raises(CorpusError, match="no .txt files"):
        list(load_documents(str(tmp_path / "d")))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("x\n")
    p.chmod(0)
    with pytest.raises(CorpusError, match="c.txt.*unreadable"):
        load_documents(str(p))


def test_windows_concatenate_with_eos_and_stop_at_budget():
    docs = ["abc", "de", "fghij"]  # stream: a b c EOS d e EOS f g h i j  (12 tokens)
    w = list(iter_windows(docs, CharTokenizer(), window=4))
    assert [list(x) for x in w] == [[97, 98, 99, 0], [100, 101, 0, 102], [103, 104, 105, 106]]
    assert all(x.dtype == np.int32 for x in w)
    assert len(list(iter_windows(docs, CharTokenizer(), window=4, max_tokens=9))) == 2
    assert len(list(iter_windows(docs, CharTokenizer(), window=5))) == 2  # partial tail dropped
    assert [list(x) for x in iter_windows(docs, CharTokenizer(), window=4)] == [list(x) for x in w]


def test_bundled_shakespeare_is_plain_text():
    docs = load_documents("bundled:shakespeare")
    texts = list(docs)
    assert len(texts) > 30_000 and not docs.skipped
    assert texts[0].startswith("Now, fair Hippolyta, our nuptial hour\nDraws on apace")
    for d in texts:  # no speaker names, headings, stage directions or Markdown line breaks left
        assert not any(c in d for c in "_*#[") and d == d.strip() and "  \n" not in d, d
