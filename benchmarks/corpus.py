"""Benchmark: the record stage over a corpus in S3 against the same corpus in local files.

The corpus is JSONL shards of Shakespeare's speeches (``recording.py``'s), about ``--tokens``
tokens in shards of ``--shard-tokens``; the S3 copy sits in a SeaweedFS server started on this
machine (the test extra's ``weed``). The subject is ``recording.py``'s tiny random-weight llama, so
that reading and tokenizing the corpus, where the two differ, is the work rather than the forward.
Each run is a whole ``record`` stage in a fresh driver process that starts its own Ray
(``recording.py --driver-child``); local and S3 take turns, ``--rounds`` each, so that load from
other processes hits both alike.

ratio = median stage seconds from local files / from S3 (goal >= 0.90); beside it each side's time
to the first batch a recorder folded (goal <= 15 s at 1 M tokens) and the driver's peak RSS.
Appends a section to benchmarks/RESULTS.md; the last printed line is ``ratio=.. first_batch_s=..``.
Run: ``python benchmarks/corpus.py`` (a few minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from common import append_results, header, run_child
from recording import _shards, _tiny_model
from s3_server import serve

RECORDING = str(Path(__file__).with_name("recording.py"))


def _upload(server, folder: Path) -> str:
    """The shards of ``folder`` put into a new bucket; the S3 spec of the same glob."""
    bucket, client = server.new_bucket(), server.client()
    for f in sorted(folder.glob("*.jsonl")):
        client.upload_file(str(f), bucket, f"shards/{f.name}")
    return f"s3://{bucket}/shards/*.jsonl"


def _runs(specs: dict[str, str], model: str, rounds: int, threads: int) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {name: [] for name in specs}
    for _ in range(rounds):
        for name, spec in specs.items():
            out[name].append(run_child(RECORDING, "--driver-child", spec, "--model", model, "--threads", threads))
    return out


def _section(args, runs: dict[str, list[dict]], mb: float, ratio: float, wall: float) -> str:
    lines = header("Corpus from S3 against local files", __file__) + [
        f"The whole `record` stage over {runs['local'][0]['tokens']:,} tokens of JSONL shards "
        f"({runs['local'][0]['shards']} shards, {mb:.0f} MB) from local files and from a SeaweedFS S3 "
        "server on this machine, each run in a fresh driver process with its own Ray; a tiny "
        "random-weight llama as the subject, so that reading and tokenizing the corpus is the work; "
        f"one recorder, {args.threads} torch threads; local and S3 taking turns, {args.rounds} runs each.",
        "",
        "| corpus | stage s, each run | median | first batch s (median) | driver peak RSS MB (max) |",
        "|---|---|---|---|---|",
    ]
    for name, rs in runs.items():
        secs = [r["seconds"] for r in rs]
        lines.append(
            f"| {name} | {', '.join(f'{s:.1f}' for s in secs)} | {statistics.median(secs):.1f} | "
            f"{statistics.median(r['first_batch_s'] for r in rs):.1f} | {max(r['peak_rss_mb'] for r in rs):.0f} |"
        )
    lines += [
        "",
        f"ratio = median local s / median S3 s = **{ratio:.3f}** (goal >= 0.90).",
        "",
        f"Wall time of the benchmark: {wall:.0f} s.",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=1_000_000, help="corpus tokens")
    p.add_argument("--shard-tokens", type=int, default=250_000, help="tokens per JSONL shard")
    p.add_argument("--rounds", type=int, default=3, help="runs of each side, taking turns")
    p.add_argument("--threads", type=int, default=2, help="torch threads of the recorder")
    p.add_argument("--no-append", action="store_true", help="print, do not append to RESULTS.md")
    args = p.parse_args()
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="ns-corpus-") as tmp, serve() as server:
        model = _tiny_model(Path(tmp) / "model")
        folder = Path(tmp) / "corpus"
        mb = _shards(folder, args.tokens, args.shard_tokens) / (1 << 20)
        specs = {"local": f"{folder}/*.jsonl", "S3": _upload(server, folder)}
        os.environ.update(server.env())  # the children read the bucket with these
        runs = _runs(specs, model, args.rounds, args.threads)
    ratio = statistics.median(r["seconds"] for r in runs["local"]) / statistics.median(r["seconds"] for r in runs["S3"])
    text = _section(args, runs, mb, ratio, time.time() - t0)
    if not args.no_append:
        append_results(text)
    print(text)
    first = statistics.median(r["first_batch_s"] for r in runs["S3"])
    print(f"ratio={ratio:.3f} first_batch_s={first:.1f}")


if __name__ == "__main__":
    main()
