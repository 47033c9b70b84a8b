"""`neuronscope status`: each stage's state, neuron counts, token spend and last error, for a local
and an s3:// run (a small planted run, no model)."""

from __future__ import annotations

import pytest
from atlas_helpers import EXPLAINED, make_run

from neuronscope import manifest
from neuronscope.cli import main
from neuronscope.results import write_result
from neuronscope.schema import explanation_row
from neuronscope.store import Store


def _run(store: Store) -> tuple[int, int]:
    """A run whose record stage is done and whose explain stage failed part way; (recorded, explained)."""
    recs = make_run(store)
    manifest.begin_stage(store, "record", {}, {})
    manifest.end_stage(store, "record", "done", {"shards": 3, "shards_recorded": 3, "n_tokens": 1234})
    manifest.begin_stage(store, "explain", {"records": store.uri}, {"explain": {"layers": None, "neurons": None}})
    manifest.end_stage(store, "explain", "failed", error="LLMError: the LLM endpoint stopped answering")
    return len(recs[["layer", "neuron"]].drop_duplicates()), len(EXPLAINED)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_status_counts_neurons_and_names_the_errors(where, tmp_path, request, capsys):
    uri = str(tmp_path / "run") if where == "local" else f"s3://{request.getfixturevalue('s3_env')}/runs/status"
    recorded, explained = _run(Store.open(uri))
    assert main(["status", uri]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"run {Store.open(uri).uri}"
    assert (
        lines[1].startswith("record: done") and lines[2] == f"  neurons recorded: {recorded}; shards 3/3; tokens 1,234"
    )
    assert lines[3].startswith("explain: failed")
    pending = recorded - explained - 1
    assert lines[4].startswith(f"  neurons: {explained} done, 1 failed, {pending} pending; LLM tokens ")
    assert lines[5] == f"  methods: neuronscope {explained}"
    assert lines[6] == "  last neuron failure: layer 5 neuron 7: explainer answers were malformed 3 times"
    assert lines[7] == "  last error: LLMError: the LLM endpoint stopped answering"


def test_status_counts_the_single_pass_tokens_and_says_what_each_neuron_got(tmp_path, capsys):
    """A triage run: the spend is every neuron's four token columns (what --budget counts), not
    only the full workflow's."""
    store = Store.open(str(tmp_path / "run"))
    _run(store)
    full = dict(llm_tokens_in=3000, llm_tokens_out=400, baseline_llm_tokens_in=500, baseline_llm_tokens_out=60)
    rows = {(3, 0): ("triage/neuronscope", full), (3, 1): ("triage/single-pass", dict(baseline_llm_tokens_in=520))}
    for (layer, neuron), (method, tokens) in rows.items():
        row = explanation_row(layer, neuron, mode=0, n_modes=1, explanation="x", method=method, status="ok", **tokens)
        write_result(store, layer, neuron, [row], [])
    assert main(["status", store.uri]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[4].endswith("; LLM tokens 4,480")
    assert lines[5] == "  methods: neuronscope 1, triage/neuronscope 1, triage/single-pass 1"


def test_status_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["status", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "not a NeuronScope run" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_status_of_a_running_stage_says_who_holds_it(tmp_path, capsys):
    from neuronscope.lease import StageLease

    store = Store.open(str(tmp_path / "run"))
    make_run(store)
    manifest.begin_stage(store, "explain", {"records": store.uri}, {"explain": {"layers": None, "neurons": None}})
    with StageLease(store, "explain") as lease:
        assert main(["status", store.uri]) == 0
        held = capsys.readouterr().out.splitlines()
    assert main(["status", store.uri]) == 0  # the manifest still says running: its process is gone
    lost = capsys.readouterr().out.splitlines()
    at = next(i for i, ln in enumerate(held) if ln.startswith("explain: running"))
    assert lost[at].startswith("explain: running")
    assert held[at + 1].startswith(f"  held by process {lease.owner['pid']} on {lease.owner['host']} (heartbeat ")
    assert lost[at + 1] == "  no process holds it: it was stopped or lost; rerun the stage to resume"


def test_status_shows_the_pace_the_time_to_finish_and_where_a_neuron_s_time_goes(tmp_path, capsys):
    """Pace over the stage's attempts (an interrupted one up to its last neuron), the pending
    neurons' time at that pace, and the median of each phase of the neurons' timings; a neuron
    written before rows had timings (its object lacks the column) still counts, without timings."""
    import datetime as dt
    import json

    from neuronscope.layout import explanation_key
    from neuronscope.results.transcript import TimingEntry

    store = Store.open(str(tmp_path / "run"))
    _run(store)  # 3 done, 1 failed, 1 pending
    old = store.read_parquet(explanation_key(3, 0))
    store.write_parquet(explanation_key(3, 0), old.drop(["timings"]))
    t0 = 1_800_000_000

    def stamp(t: float) -> str:
        return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="seconds")

    timed = {
        1: (t0 - 900, {"queue": 1.0, "read": 0.5, "llm": 10.0, "judge reader": 3.0, "write": 0.2}, 1000),
        2: (t0 + 50, {"queue": 3.0, "read": 0.3, "llm": 20.0, "judge reader": 5.0, "cluster": 2.0, "write": 0.4}, 3000),
    }
    for neuron, (finished, seconds, tokens) in timed.items():
        timing = json.dumps(TimingEntry(finished - 40, finished, seconds).to_json())
        row = explanation_row(
            3, neuron, mode=0, n_modes=1, explanation="x", method="neuronscope", llm_tokens_in=tokens, timings=timing
        )
        write_result(store, 3, neuron, [row], [])
    m = store.read_json("manifest.json")
    entry = m["stages"]["explain"]
    entry["earlier"] = [{"started": stamp(t0 - 1000), "finished": None, "status": "interrupted"}]
    entry["started"], entry["finished"] = stamp(t0), stamp(t0 + 200)
    store.write_json("manifest.json", m)
    assert main(["status", store.uri]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[4].startswith("  earlier attempts: 1 interrupted")
    spent = int(lines[5].rsplit("LLM tokens ", 1)[1].replace(",", ""))
    assert lines[5].startswith("  neurons: 3 done, 1 failed, 1 pending") and spent >= 4000
    seconds = 100 + 200  # the interrupted attempt to its last neuron, then the last attempt
    assert lines[7] == f"  pace: {spent / seconds:,.0f} LLM tokens/s, 0.8 neurons/min over 5 min of explain"
    assert lines[8] == "  to finish: 1 pending, about 75 s at this pace"
    assert lines[9] == (
        "  seconds per neuron, median of 2: total 22.7; "
        "queue 2.00, read 0.40, llm 15.0, judge reader 4.00, cluster 1.00, write 0.30"
    )


def test_status_counts_a_neuron_once_over_its_sides_and_their_tokens(tmp_path, capsys):
    """A neuron with its negative side explained: one neuron, both sides' tokens, the negative
    side's method named; a failed negative side fails its neuron."""
    store = Store.open(str(tmp_path / "run"))
    _run(store)
    tokens = dict(llm_tokens_in=1000, baseline_llm_tokens_in=100)
    sides = [
        explanation_row(3, 0, polarity=p, mode=0, n_modes=1, explanation="x", method="both", **tokens) for p in (1, -1)
    ]
    write_result(store, 3, 0, sides, [])
    failed = explanation_row(3, 3, polarity=-1, status="failed", error="ValueError: too few", method="both")
    write_result(store, 3, 3, [explanation_row(3, 3, mode=0, n_modes=1, method="both", **tokens), failed], [])
    assert main(["status", store.uri]) == 0
    lines = capsys.readouterr().out.splitlines()
    # (3, 0) both sides, (3, 1) and (3, 2) as the run made them; (3, 3) and (5, 7) failed
    assert "neurons: 3 done, 2 failed, 0 pending" in lines[4] and lines[4].endswith("; LLM tokens 3,300")
    assert lines[5] == "  methods: both 1, negative: both 1, neuronscope 2"
