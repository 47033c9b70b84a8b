"""The whole pipeline on the embedded defaults, reduced; and the same under `ray job submit`."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from ray_cluster import agent_ports, free_port

from neuronscope import stages
from neuronscope.cli import build_parser
from neuronscope.cli.flags import config_from_args
from neuronscope.store import Store
from neuronscope.summary import summary_table

REPO = Path(__file__).resolve().parents[1]
SMALL = [
    "--layers",
    "3",
    "--neurons",
    "0-1",
    "--max-tokens",
    "6000",
    "--top-k",
    "10",
    "--random-k",
    "4",
    "--n-explain",
    "6",
    "--n-heldout-top",
    "2",
    "--n-heldout-random",
    "2",
]


def _check_run(run: Path, n_neurons: int) -> pd.DataFrame:
    assert (run / "manifest.json").is_file()
    records = pd.read_parquet(run / "records")  # a user reads each folder as one table
    kinds = set(records["kind"])
    # SmolLM2's MLP is gated (signed activations): its negative side is recorded by default
    assert {"top", "random", "quantile_0", "bottom", "negative_quantile_0"} <= kinds and all(
        k in ("top", "random", "bottom") or k.startswith(("quantile_", "negative_quantile_")) for k in kinds
    )
    expl = pd.read_parquet(run / "explanations")
    per_neuron = expl.drop_duplicates(["layer", "neuron"])
    assert len(per_neuron) == n_neurons
    assert (per_neuron["status"] == "ok").all(), per_neuron["error"].tolist()
    for _, r in expl.iterrows():
        assert r["explanation"].strip() and r["baseline_explanation"].strip()
        assert math.isfinite(r["score"]) and math.isfinite(r["baseline_score"]) and math.isfinite(r["mode_score"])
    assert list((run / "transcripts").rglob("*.jsonl"))
    return expl


@pytest.mark.slow
def test_demo_pipeline_end_to_end(tmp_path, vllm_pool):
    cfg = config_from_args(build_parser().parse_args(["demo", *SMALL]), stages.DEMO_OVERRIDES)
    run = tmp_path / "run"
    stages.run_record(cfg, str(run), print)
    stages.run_explain(cfg, str(run), str(run), print, llm=vllm_pool)
    _check_run(run, 2)
    table = summary_table(Store.open(str(run)))
    lines = table.splitlines()
    sides = pd.read_parquet(run / "explanations").drop_duplicates(["layer", "neuron", "polarity"])
    negative = int((sides["polarity"] < 0).sum())
    assert lines[0].startswith("scorer: reader, self-check passed"), table
    assert len(lines) == 3 + 2 + negative + 1 + (negative > 0) + 1, table
    assert lines[-1].startswith("modes per neuron (2 neurons")
    assert lines[2].split()[4:8] == ["neuronscope", "single-pass", "words", "control"], "every score beside its control"
    rows = lines[3 : 5 + negative]
    assert all(len(ln.split()) == 4 + 4 + 1 for ln in rows), rows
    assert sorted(ln.split()[2] for ln in rows) == ["+", "+"] + ["-"] * negative, rows
    by_stage = Store.open(str(run)).read_json("manifest.json")["stages"]
    assert by_stage["record"]["status"] == by_stage["explain"]["status"] == "done"
    check = by_stage["explain"]["self_check"]
    poly = by_stage["explain"]["summary"]["polysemanticity"]
    assert poly["neurons"] == 2 and sum(poly["modes"].values()) == 2 and set(poly["per_layer"]) == {"3"}
    assert check["scorer"] == "reader" and check["passed"] and check["discrimination"] >= 0.8
    expl = pd.read_parquet(run / "explanations")
    assert (expl["calibrated"] == True).all() and (expl["scorer"] == "reader").all()  # noqa: E712
    assert expl[["control_score", "lexical_score", "lexical_explanation"]].notna().all().all()
    assert expl["sim_score"].isna().all(), "the simulator is off by default: it is blind at 135M"
    # A rerun skips every finished neuron and leaves the results as they were.
    before = pd.read_parquet(run / "explanations")
    stages.run_explain(cfg, str(run), str(run), print, llm=vllm_pool)
    pd.testing.assert_frame_equal(before, pd.read_parquet(run / "explanations"))
    # The causal check of each mode, as the demo runs it after explain.
    stages.run_causal(cfg, str(run), str(run), print)
    assert Store.open(str(run)).read_json("manifest.json")["stages"]["causal"]["status"] == "done"
    assert summary_table(Store.open(str(run))).splitlines()[-1].startswith("causal check (mean ablation")


def _wait_for_http(url: str, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except urllib.error.HTTPError:  # e.g. 401 before the auth token is sent: the server is up
            return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f}s")


@pytest.mark.slow
def test_ray_job_submit_runs_the_pipeline(tmp_path):
    """`ray start --head`, then `ray job submit -- python ray_jobs/demo.py`, as a user would."""
    bindir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # `ray start` turns token auth on by default; the job client sends the token only in token mode.
    env["RAY_AUTH_MODE"] = "token"
    env["PATH"] = f"{bindir}{os.pathsep}{env['PATH']}"
    port, dash = free_port(), free_port()
    tmp_ray = Path("/tmp") / f"nsray{port}"  # Ray's socket paths must stay short
    start = [
        str(bindir / "ray"),
        "start",
        "--head",
        "--block",
        f"--port={port}",
        f"--dashboard-port={dash}",
        "--include-dashboard=true",
        "--num-cpus=2",
        f"--temp-dir={tmp_ray}",
        "--disable-usage-stats",
        f"--ray-client-server-port={free_port()}",
        *agent_ports(),
    ]
    # --block keeps the head in this process tree, so stopping it never touches another Ray on the machine.
    head = subprocess.Popen(
        start, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        _wait_for_http(f"http://127.0.0.1:{dash}/api/version", timeout=120)
        run = tmp_path / "jobrun"
        submit = [
            str(bindir / "ray"),
            "job",
            "submit",
            f"--address=http://127.0.0.1:{dash}",
            "--",
            sys.executable,
            str(REPO / "ray_jobs" / "demo.py"),
            "--out",
            str(run),
            *SMALL[:2],
            "--neurons",
            "0",
            *SMALL[4:],
        ]
        deadline = time.time() + 180
        while True:
            proc = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=1200)
            # the dashboard answers before the node's job agent is up; Ray asks to try again later
            if "No available agent" not in proc.stderr + proc.stdout or time.time() > deadline:
                break
            time.sleep(3)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert f"run: {run}" in proc.stdout
        _check_run(run, 1)
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
