"""The per-neuron workflow with a scripted test double of the LLM (no engine): row shape, ledger,
transcript, methods, and failures. The real engine is exercised in test_explain_integration."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from explain_helpers import MONTHS, RANDOMS, SENTENCES, WordVocabulary, records
from fakes import Clock, KeywordEmbedder, PlantedEmbedder, ScriptedLLM, agent_of, attempt_of

from neuronscope.config import ExplainConfig
from neuronscope.explain import NeuronOptions, explain_neuron
from neuronscope.llm.agents import Agent
from neuronscope.llm.base import Completion
from neuronscope.results import rows_table
from neuronscope.results.transcript import AgentAnswer, AgentFailure, ClusterEntry, ScoreEntry
from neuronscope.schema import EXPLANATIONS


def _run(llm=None, outputs=None, **cfg):
    """The workflow judged by the scripted simulator (its scores are known), unless cfg says;
    ``outputs``: the neuron's OUTPUT_TOKENS row."""
    df = records(SENTENCES, MONTHS, layer=3, neuron=7, randoms=RANDOMS)
    c = ExplainConfig(
        **{"n_explain": 6, "n_heldout_top": 3, "n_heldout_random": 3, "scorer": "simulation", "candidates": 1, **cfg}
    )
    opts = NeuronOptions(PlantedEmbedder(), outputs=outputs)
    return explain_neuron(3, 7, pa.Table.from_pandas(df), llm or ScriptedLLM(), c, opts)


def test_rows_conform_to_the_schema_and_scores_are_held_out():
    res = _run()
    table = rows_table(res.rows)
    assert table.schema == EXPLANATIONS and table.num_rows == 1
    r = res.rows[0]
    assert r["status"] == "ok" and r["mode"] == 0 and r["n_modes"] == 1 and r["explanation"] == "month names"
    assert r["baseline_explanation"] == "month names" and r["score"] > 0.9 and r["baseline_score"] > 0.9
    assert r["mode_score"] == r["score"] and r["coverage"] == 1.0 and r["method"] == "both"
    assert r["template_version"] == "deconstruct.v5+explain.v4+refine.v3+single_pass.v4+simulate.v2"
    assert r["scorer"] == "simulation" and r["calibrated"] is None
    # the mode's evidence: its activating tokens with counts, its share of the top exemplars
    assert r["mode_share"] == 1.0 and r["mode_tokens"]
    words = [t.rsplit(" (", 1) for t in r["mode_tokens"]]
    assert all(w in MONTHS for w, _ in words) and sum(int(c.rstrip(")")) for _, c in words) == r["mode_size"]
    assert (r["sim_score"], r["sim_baseline_score"], r["sim_mode_score"]) == (
        r["score"],
        r["baseline_score"],
        r["mode_score"],
    )
    # the control: an unrelated explanation, scored on the same held-out exemplars, near 0
    assert r["control_explanation"] and "month" not in r["control_explanation"]
    assert r["control_score"] == r["sim_control_score"] and abs(r["control_score"]) < 0.1
    split = next(t for t in res.transcript if t.agent == "split")
    assert set(r["exemplar_ids"]) == set(split.explain) and not set(split.explain) & set(split.heldout)
    assert not set(split.validation) & set(split.heldout)
    assert r["llm_calls"] == res.ledger.total().calls > 0
    assert r["llm_tokens_in"] > 0 and r["baseline_llm_tokens_in"] > 0
    control = res.ledger.total(["control"]).tokens_in  # the control's scoring: neither method's cost
    assert control > 0 and r["llm_tokens_in"] + r["baseline_llm_tokens_in"] + control == res.ledger.total().tokens_in
    agents = {t.agent for t in res.transcript}
    assert {"split", "deconstruct", "cluster", "explain", "single_pass", "score", "ledger"} <= agents
    purposes = {t.purpose for t in res.transcript if isinstance(t, ScoreEntry)}
    assert purposes == {"mode heldout", "combined heldout", "baseline heldout", "control heldout", "lexical heldout"}
    # the words baseline beside every score, every score with its interval
    assert r["source"] == "llm" and r["lexical_explanation"] and r["mode_lexical_explanation"]
    assert all(w.strip() in MONTHS for w in r["lexical_explanation"].split(","))
    for col in ("score", "mode_score", "baseline_score", "control_score", "lexical_score", "mode_lexical_score"):
        lo, hi = r[col + "_ci"]
        assert lo <= r[col] <= hi, col
    (cands,) = [t for t in res.transcript if t.agent == "candidates"]
    sources = [c["source"] for c in cands.candidates]
    assert sources == ["llm", "words", "llm+words"] and cands.candidates[cands.chosen]["source"] == "llm"


def test_mode_evidence_round_trips_through_parquet(tmp_path):
    import pyarrow.parquet as pq

    rows = _run().rows
    pq.write_table(rows_table(rows), tmp_path / "x.parquet")
    back = pq.read_table(tmp_path / "x.parquet").to_pylist()
    assert [(b["mode_tokens"], b["mode_share"], b["exemplar_ids"]) for b in back] == [
        (r["mode_tokens"], r["mode_share"], r["exemplar_ids"]) for r in rows
    ]


def test_single_pass_and_neuronscope_only():
    sp = _run(method="single-pass").rows
    assert len(sp) == 1 and sp[0]["n_modes"] == 0 and math.isnan(sp[0]["score"]) and sp[0]["baseline_score"] > 0.9
    assert sp[0]["llm_tokens_in"] == 0 and sp[0]["template_version"] == "single_pass.v4+simulate.v2"
    ns = _run(method="neuronscope").rows
    assert ns[0]["baseline_explanation"] is None and math.isnan(ns[0]["baseline_score"]) and ns[0]["score"] > 0.9
    rows_table(sp + ns)  # both conform


class Recording(ScriptedLLM):
    """Also records each chat call's agent and parameters."""

    def __init__(self, **answers):
        super().__init__(**answers)
        self.calls: list = []

    def chat(self, conversations, params):
        self.calls.append((agent_of(conversations[0]), params))
        return super().chat(conversations, params)


def test_malformed_explain_answers_are_retried_then_the_mode_keeps_its_words():
    llm = Recording(explain="Explanation: weather", single_pass="Explanation: month names")  # the example's answer
    res = _run(llm, max_parse_retries=2, refine_rounds=0)
    (r,) = res.rows
    assert r["status"] == "ok" and r["mode"] == 0, r["error"]
    assert r["source"] == "words" and r["explanation"] == r["mode_lexical_explanation"]
    tries = [t for t in res.transcript if isinstance(t, AgentAnswer) and t.agent == "explain" and t.item == 0]
    assert [t.attempt for t in tries] == [0, 1, 2] and r["malformed_answers"] == 3
    (gave_up,) = [t for t in res.transcript if isinstance(t, AgentFailure) and t.agent == "explain"]
    assert "malformed" in gave_up.error or "example" in gave_up.error
    # The corrective follow-up is in the conversation of the retry.
    assert "Wrong format" in tries[1].messages[-2]["content"]  # before the answer's prefill
    # Retries sample (seeded), since greedy decoding would repeat the malformed answer.
    explain = [p for agent, p in llm.calls if agent == Agent.EXPLAIN]
    assert [(p.temperature > 0, p.seed) for p in explain] == [(False, 0), (True, 1), (True, 2)]
    rows_table(res.rows)


def test_a_modes_candidates_are_the_llms_samples_its_words_and_both_and_the_best_wins():
    llm = Recording()
    res = _run(llm, candidates=3)
    (cands,) = [t for t in res.transcript if t.agent == "candidates"]
    # greedy, then two samples (seeded, distinct seeds); the same answers count once
    explain = [p for agent, p in llm.calls if agent == Agent.EXPLAIN]
    assert [(p.temperature > 0, p.seed) for p in explain] == [(False, 0), (True, 1000), (True, 2000)]
    sources = [c["source"] for c in cands.candidates]
    assert sources == ["llm", "words", "llm+words"] and cands.judged_on == "validation"
    assert cands.candidates[2]["text"].startswith("month names, e.g. ")
    # the scripted simulator knows "month ...": the words alone score nothing, the LLM's answer wins
    scores = {c["source"]: c["score"] for c in cands.candidates}
    assert scores["words"] < scores["llm"] and res.rows[0]["source"] == "llm"


def test_a_deconstruct_answer_malformed_after_its_retries_leaves_its_exemplar_without_features():
    """One exemplar's features are not worth the neuron: it is recorded and explained without them."""
    res = _run(ScriptedLLM(deconstruct="I think it is about months."), max_parse_retries=1)
    r = res.rows[0]
    assert r["status"] == "ok" and r["explanation"] == "month names", r["error"]
    gave_up = [t for t in res.transcript if isinstance(t, AgentFailure) and t.agent == "deconstruct"]
    assert len(gave_up) == 6 and all("no features" in t.error for t in gave_up)
    explain = next(t for t in res.transcript if isinstance(t, AgentAnswer) and t.agent == "explain")
    assert "Features seen: (none)" in explain.messages[-2]["content"]


def test_the_explainers_see_what_the_neurons_output_promotes_where_the_run_has_it_and_it_is_asked():
    outputs = {"promoted_tokens": [" April", " June", "June"], "promoted_weights": [2.0, 1.5, 1.0]}
    line = "When it fires, the model is pushed towards: April, June"
    for out, asked, shown in ((outputs, True, True), (None, True, False), (outputs, False, False)):
        res = _run(outputs=out, output_evidence=asked)
        assert res.rows[0]["status"] == "ok", res.rows[0]["error"]
        firsts = [t for t in res.transcript if isinstance(t, AgentAnswer) and t.attempt == 0]
        prompts = {t.agent: t.messages[-2]["content"] for t in firsts if t.agent in ("explain", "single_pass")}
        assert set(prompts) == {"explain", "single_pass"}
        assert all((line in p) is shown for p in prompts.values())
        assert all("pushed towards" not in t.messages[-2]["content"] for t in firsts if t.agent == "deconstruct")


@pytest.mark.parametrize("revision,kept", [("Explanation: month names", True), ("Explanation: colours", False)])
def test_refinement_is_kept_only_when_the_validation_score_rises(revision, kept):
    res = _run(ScriptedLLM(explain="Explanation: words", refine=revision), refine_rounds=2)
    decisions = [t for t in res.transcript if t.agent == "refine_decision"]
    assert decisions[0].kept is kept and decisions[0].judged_on == "validation"
    assert decisions[0].new_score > decisions[0].old_score if kept else decisions[0].new_score <= decisions[0].old_score
    r = res.rows[0]
    # A kept revision that fixed every miss ends the loop; a rejected one also stops it (no gain).
    assert r["rounds"] == len(decisions) == 1
    # the LLM's "words" is refined; it and the words baseline tie (the simulator knows neither), so
    # the words stay unless the revision gains
    assert decisions[0].old == "words"
    expected = ("month names", "refined") if kept else (r["mode_lexical_explanation"], "words")
    assert (r["explanation"], r["source"]) == expected
    assert (r["score"] > 0.9) is kept


def test_triage_gives_the_full_workflow_only_where_single_pass_is_weak():
    good = _run(method="triage").rows
    assert len(good) == 1 and good[0]["method"] == "triage/single-pass" and good[0]["n_modes"] == 0
    assert good[0]["baseline_score"] > 0.9 and good[0]["llm_tokens_in"] == 0
    weak = _run(ScriptedLLM(single_pass="Explanation: rivers and lakes"), method="triage").rows
    assert weak[0]["method"] == "triage/neuronscope" and weak[0]["n_modes"] >= 1 and weak[0]["score"] > 0.9
    assert weak[0]["baseline_score"] < 0.6 and weak[0]["llm_tokens_in"] > 0
    rows_table(good + weak)


@pytest.mark.parametrize("method", ["triage", "neuronscope", "both"])
def test_a_neuron_whose_explain_answers_stay_malformed_ends_ok_with_its_words(method):
    """No neuron fails for a weak explainer's loops: its modes keep their words explanations."""
    for single_pass in ("Explanation: rivers and lakes", "Explanation:"):
        res = _run(ScriptedLLM(single_pass=single_pass, explain="Explanation:"), method=method, refine_rounds=0)
        (r,) = res.rows
        assert r["status"] == "ok" and r["n_modes"] == 1 and r["malformed_answers"] > 0, r["error"]
        assert r["source"] == "words" and r["explanation"] == r["mode_lexical_explanation"]
        assert r["method"] == ("triage/neuronscope" if method == "triage" else method)
        assert r["llm_tokens_in"] > 0


def test_triage_held_back_by_the_budget_says_so():
    from neuronscope.results.transcript import TriageEntry

    c = ExplainConfig(n_explain=6, n_heldout_top=3, n_heldout_random=3, method="triage")
    df = records(SENTENCES, MONTHS, layer=3, neuron=7, randoms=RANDOMS)
    weak = ScriptedLLM(single_pass="Explanation: rivers and lakes")
    res = explain_neuron(3, 7, pa.Table.from_pandas(df), weak, c, NeuronOptions(PlantedEmbedder(), full_allowed=False))
    (r,) = res.rows
    assert r["method"] == "triage/single-pass (budget)" and r["n_modes"] == 0 and r["llm_tokens_in"] == 0
    assert r["baseline_explanation"] == "rivers and lakes" and r["baseline_llm_tokens_in"] > 0
    (t,) = [t for t in res.transcript if isinstance(t, TriageEntry)]
    assert t.withheld and not t.full
    # Held back with a malformed single-pass answer, the neuron has no explanation: it fails.
    blank = ScriptedLLM(single_pass="Explanation:")
    (f,) = explain_neuron(
        3, 7, pa.Table.from_pandas(df), blank, c, NeuronOptions(PlantedEmbedder(), full_allowed=False)
    ).rows
    assert f["status"] == "failed" and "single_pass agent answer malformed" in f["error"]


def test_triage_scores_the_baseline_and_its_words_once_under_the_decision_scorer():
    from neuronscope.results.transcript import ScoreEntry, TriageEntry

    llm = ScriptedLLM(single_pass="Explanation: rivers and lakes")
    res = _run(llm, method="triage", simulation_scores=False)
    (triage,) = [t for t in res.transcript if isinstance(t, TriageEntry)]
    scored = [t for t in res.transcript if isinstance(t, ScoreEntry) and t.explanation == "rivers and lakes"]
    assert [t.purpose for t in scored] == ["triage heldout", "baseline heldout"]
    assert res.rows[0]["baseline_score"] == triage.baseline_score == scored[1].score
    assert triage.lexical_score == res.rows[0]["lexical_score"]
    # the simulator ran once per explanation and exemplar set: the baseline's held-out prompts once
    prompts = res.ledger.as_dict()["simulate_baseline"]["calls"]
    assert prompts == len({w for t in scored for w in t.window_ids})


def test_two_planted_modes_are_found():
    class TwoConcepts(ScriptedLLM):
        def chat(self, conversations, params):
            out = super().chat(conversations, params)
            for i, conv in enumerate(conversations):
                if agent_of(conv) == Agent.DECONSTRUCT:
                    text = conv[-1]["content"]
                    out[i] = Completion(
                        "- month name" if any(m in text for m in ("May", "June", "July")) else "- number", 10, 3
                    )
            return out

    class ComponentEmbedder:
        tokenizer = WordVocabulary()

        def encode(self, texts, **_):
            return np.array([[1.0, 0.0] if "month" in t else [0.0, 1.0] for t in texts])

    df = records(SENTENCES, MONTHS, randoms=RANDOMS)
    res = explain_neuron(
        0,
        0,
        df,
        TwoConcepts(),
        ExplainConfig(n_explain=6, n_heldout_top=3, max_modes=3, clustering="components"),
        NeuronOptions(ComponentEmbedder()),
    )
    assert [r["n_modes"] for r in res.rows] == [2, 2] and [r["mode"] for r in res.rows] == [0, 1]
    assert sum(r["mode_size"] for r in res.rows) == 6
    assert len({x for r in res.rows for x in r["exemplar_ids"]}) == 6


@pytest.mark.parametrize("bad", ["empty", "one_top"])
def test_unusable_records_fail_cleanly(bad):
    df = records(SENTENCES, MONTHS, randoms=RANDOMS)
    df = df.iloc[:0] if bad == "empty" else df[(df["kind"] == "random") | (df["rank"] == 0)]
    res = explain_neuron(0, 0, df, ScriptedLLM(), ExplainConfig(), NeuronOptions(PlantedEmbedder()))
    assert res.rows[0]["status"] == "failed" and "at least 2 top" in res.rows[0]["error"]


def test_simulations_are_memoised_within_a_neuron():
    from neuronscope.exemplars import Scale, load
    from neuronscope.llm.base import Ledger, Metered
    from neuronscope.scoring import Judge, SimulationScorer

    top = load(records(SENTENCES, MONTHS)).top
    ledger = Ledger()
    judge = Judge(SimulationScorer(Metered(ScriptedLLM(), ledger)), Scale(5.0))
    first = judge([("month names", top[:2]), ("words", top[:1])])
    again = judge([("words", top[:1]), ("month names", top[:2]), ("month names", top[2:3])])
    assert ledger.total().calls == 4, "3 prompts, then only the 1 new one"
    assert again[0] is first[1] and again[1] is first[0]


@pytest.mark.parametrize("revision,kept", [("Explanation: month names", True), ("Explanation: colours", False)])
def test_the_reader_judge_steers_candidates_and_refinement_and_scores(revision, kept):
    """With the reader judge (the default), no simulation decides anything. The words baseline,
    read literally, beats "words" (an explanation that points at the quiet words); a revision naming
    the kind of thing that fires then beats the words (it covers months the explainer was not
    shown), one that does not is rejected; scores are AUROC beside the words' and the control's."""
    df = records(SENTENCES, MONTHS, layer=3, neuron=7, randoms=RANDOMS)
    cfg = ExplainConfig(
        n_explain=6, n_heldout_top=3, n_heldout_random=3, refine_rounds=1, candidates=1, simulation_scores=True
    )
    assert cfg.scorer == "reader"
    res = explain_neuron(
        3,
        7,
        df,
        ScriptedLLM(explain="Explanation: words", refine=revision),
        cfg,
        NeuronOptions(KeywordEmbedder(), calibrated=True),
    )
    (cands,) = [t for t in res.transcript if t.agent == "candidates"]
    assert cands.candidates[cands.chosen]["source"] == ("refined" if kept else "words")
    (decision,) = [t for t in res.transcript if t.agent == "refine_decision"]
    assert decision.scorer == "reader" and decision.kept is kept
    r = res.rows[0]
    assert r["scorer"] == "reader" and r["calibrated"] is True
    assert (r["explanation"], r["source"]) == (
        ("month names", "refined") if kept else (r["lexical_explanation"], "words")
    )
    assert r["score"] > r["lexical_score"] if kept else r["score"] == r["mode_lexical_score"]
    assert r["lexical_score"] > r["control_score"] and r["baseline_score"] < r["lexical_score"]
    # the paper's score, stored too: the scripted simulator knows months only
    assert (r["sim_score"] > 0.9) is kept and r["sim_baseline_score"] == 0.0 and abs(r["sim_control_score"]) < 0.1
    assert {t.scorer for t in res.transcript if isinstance(t, ScoreEntry)} == {"reader", "simulation"}


@pytest.mark.parametrize("method", ["both", "triage"])
def test_simulation_scores_off_runs_no_simulation_and_leaves_the_sim_columns_empty(method):
    """The decision scorer's scores and control stay; the paper's simulator is never called."""
    df = records(SENTENCES, MONTHS, layer=3, neuron=7, randoms=RANDOMS)
    cfg = ExplainConfig(
        n_explain=6, n_heldout_top=3, n_heldout_random=3, method=method, simulation_scores=False, scorer="embedding"
    )
    llm = ScriptedLLM(explain="Explanation: month names", single_pass="Explanation: colours")
    llm.next_token_logprobs = None  # any simulation would fail the neuron
    res = explain_neuron(3, 7, df, llm, cfg, NeuronOptions(KeywordEmbedder()))
    r = res.rows[0]
    assert r["status"] == "ok", r["error"]
    assert r["score"] == 1.0 and r["baseline_score"] == 0.5 and r["control_score"] == 0.5
    sims = ["sim_mode_score", "sim_score", "sim_baseline_score", "sim_control_score"]
    assert all(math.isnan(r[k]) for k in sims)
    assert "simulate" not in r["template_version"] and not {"simulate", "control"} & set(res.ledger.as_dict())
    assert {t.scorer for t in res.transcript if isinstance(t, ScoreEntry)} == {"embedding"}


def test_a_malformed_refine_answer_keeps_the_explanation():
    res = _run(
        ScriptedLLM(explain="Explanation: words", refine="Explanation: a < b"), refine_rounds=1, max_parse_retries=0
    )
    r = res.rows[0]
    assert r["status"] == "ok" and (r["explanation"], r["source"]) == (r["mode_lexical_explanation"], "words")
    (decision,) = [t for t in res.transcript if t.agent == "refine_decision"]
    assert decision.kept is False and "refine agent answer malformed" in decision.error


def test_a_malformed_baseline_keeps_the_neuronscope_explanations():
    res = _run(ScriptedLLM(single_pass="Explanation: a < b"), max_parse_retries=0)
    r = res.rows[0]
    assert r["status"] == "ok" and r["explanation"] == "month names" and r["baseline_explanation"] is None
    assert r["malformed_answers"] == 1 and math.isnan(r["baseline_score"])
    (entry,) = [t for t in res.transcript if t.agent == "single_pass" and not isinstance(t, AgentAnswer)]
    assert "baseline missing" in entry.error
    # with the single-pass method alone there is nothing else to keep: the neuron fails
    res = _run(ScriptedLLM(single_pass="Explanation: a < b"), max_parse_retries=0, method="single-pass")
    assert res.rows[0]["status"] == "failed" and "single_pass agent answer malformed" in res.rows[0]["error"]


def test_the_configured_clustering_decides_the_modes():
    """Both variants are always in the transcript; ExplainConfig.clustering picks the one used."""

    class WordEmbedder:  # the activating words are month names: one group, one mode
        tokenizer = WordVocabulary()

        def encode(self, texts, **_):
            return np.array([[1.0, 0.0] if any(m in t for m in MONTHS) else [0.0, 1.0] for t in texts])

    df = records(SENTENCES, MONTHS, randoms=RANDOMS)
    for variant in ("components", "activation"):
        res = explain_neuron(
            0,
            0,
            df,
            ScriptedLLM(),
            ExplainConfig(n_explain=6, n_heldout_top=3, clustering=variant),
            NeuronOptions(WordEmbedder()),
        )
        used = [t.variant for t in res.transcript if isinstance(t, ClusterEntry) and t.used]
        assert used == [variant] and res.rows[0]["status"] == "ok"


def test_an_explanation_copied_from_the_text_is_rejected_and_counted():
    class Copier(ScriptedLLM):  # first copies the exemplar text, then answers in its own words
        def chat(self, conversations, params):
            out = super().chat(conversations, params)
            for i, conv in enumerate(conversations):
                if agent_of(conv) != Agent.DECONSTRUCT and attempt_of(conv) == 0:
                    text = conv[-2]["content"].split("<text>")[1].replace("<<", "").replace(">>", "")
                    out[i] = Completion(" " + " ".join(text.split()[:5]), 10, 5)
            return out

    res = _run(Copier(), max_parse_retries=1)
    r = res.rows[0]
    assert r["status"] == "ok" and r["explanation"] == "month names" and r["baseline_explanation"] == "month names"
    copies = [t for t in res.transcript if "copies the text" in (getattr(t, "error", None) or "")]
    assert copies and r["malformed_answers"] == len(copies)


def test_the_neuron_s_time_goes_into_its_phases_each_second_once():
    """A clock that moves only on an LLM call (1 s) or an embedding (0.01 s): the LLM's seconds
    are ``llm``'s, the simulation judge's own are none (its LLM calls are ``llm``'s), the
    embeddings are setup's, clustering's; every second is counted once, and the transcript's
    ``timing`` entry, just before the ledger, says so."""
    from neuronscope.results.transcript import LedgerEntry, TimingEntry
    from neuronscope.timing import Timings

    clock, batches = Clock(), []

    class Slow(ScriptedLLM):
        def chat(self, conversations, params):
            clock.advance(1.0)
            batches.append("chat")
            return super().chat(conversations, params)

        def next_token_logprobs(self, prompts, positions, top_k):
            clock.advance(1.0)
            batches.append("logprobs")
            return super().next_token_logprobs(prompts, positions, top_k)

    class SlowEmbedder(PlantedEmbedder):
        def encode(self, texts, **kw):
            clock.advance(0.01)
            return super().encode(texts, **kw)

    timings = Timings(clock)
    df = records(SENTENCES, MONTHS, layer=3, neuron=8, randoms=RANDOMS)
    cfg = ExplainConfig(n_explain=6, n_heldout_top=3, n_heldout_random=3, scorer="simulation", candidates=1)
    res = explain_neuron(3, 8, pa.Table.from_pandas(df), Slow(), cfg, NeuronOptions(SlowEmbedder(), timings=timings))
    assert res.rows[0]["status"] == "ok"
    s = timings.seconds
    assert s["llm"] == pytest.approx(len(batches)) and "logprobs" in batches
    assert s["judge simulation"] < 0.01  # the scorer's own work: no clock moves in it
    assert s["setup"] >= 0.01 and s["cluster"] >= 0.01  # the control's and the modes' embeddings
    assert timings.total() == pytest.approx(clock.now)
    *_, timing, ledger = res.transcript
    assert isinstance(timing, TimingEntry) and isinstance(ledger, LedgerEntry)
    assert timing.seconds == timings.as_dict() and timing.started <= timing.finished
