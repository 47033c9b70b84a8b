"""`neuronscope score`: any explanation a user writes, scored against one neuron's held-out
exemplars by the same scorers, split and control as the explain workflow."""

from __future__ import annotations

from dataclasses import dataclass

from . import layout, manifest
from .config import RunConfig
from .errors import ConfigError, NeuronScopeError
from .report import judged
from .results import neuron_rows, read_explanations
from .store import Store

# The explain settings a run's split is made with, and its decision scorer: taken from the run.
SPLIT_SETTINGS = ("n_explain", "n_heldout_top", "n_heldout_random", "n_validation_top", "n_validation_random", "scorer")


@dataclass(frozen=True)
class Hypothesis:
    """An explanation of one neuron of a run, to be scored."""

    run: str  # the run folder or s3:// URI
    layer: int
    neuron: int
    text: str


def run_config(store: Store, cfg: RunConfig) -> RunConfig:
    """``cfg`` with the explain settings the run was explained with, so that the held-out split
    is the workflow's own (flags given now still win over nothing else: the run's split must hold)."""
    done = (manifest.load(store)["stages"].get("explain") or {}).get("config", {}).get("explain")
    if not done:
        return cfg
    keep = {k: done[k] for k in SPLIT_SETTINGS if k in done}
    return cfg.model_copy(update={"explain": cfg.explain.model_copy(update=keep)})


def _other_explanations(store: Store, layer: int, neuron: int) -> list[str]:
    df = read_explanations(store, ["layer", "neuron", "status", "explanation", "baseline_explanation"])
    df = df[(df["status"] == "ok") & ~((df["layer"] == layer) & (df["neuron"] == neuron))]
    return sorted(set(df["explanation"].dropna()) | set(df["baseline_explanation"].dropna()))


def score_hypothesis(h: Hypothesis, scorers: list[str] | None, cfg: RunConfig, llm=None, embedder=None) -> dict:
    """The explanation, the neuron's words baseline and a control explanation on the neuron's
    held-out exemplars, each with its 95 % interval, under ``scorers`` (None: the run's decision
    scorer): {"scores": {scorer: {"score", "interval", "lexical", "lexical_interval", "control",
    "control_interval", "metric", ...}}, "default", "lexical_explanation", "control_explanation", "heldout"}."""
    from .exemplars import SplitSizes, lexical_explanation, load, shown_words, split
    from .llm.base import Ledger, Metered
    from .models.embedder import get_embedder
    from .scoring import Judge, make_scorer
    from .scoring.controls import control_explanation

    layer, neuron, text = h.layer, h.neuron, h.text
    if not text.strip():
        raise ConfigError("the explanation to score is empty")
    store = Store.open(h.run)
    rec = neuron_rows(store, layout.prefix(layout.RECORDS), layer, neuron)
    if rec is None or rec.empty:
        raise NeuronScopeError(f"run {store.uri} has no records for layer {layer} neuron {neuron}")
    cfg = run_config(store, cfg)
    try:
        sp = split(load(rec), SplitSizes.of(cfg.explain))
    except ValueError as e:
        raise NeuronScopeError(f"layer {layer} neuron {neuron} of {store.uri}: {e}") from None
    embedder = embedder or get_embedder(cfg.explain.embedder, cfg.explain.embedder_dtype)
    control = control_explanation(layer, neuron, _other_explanations(store, layer, neuron), embedder, text)
    lexical = lexical_explanation(sp.explain, sp.scale)
    metered = Metered(llm, Ledger()) if llm is not None else None
    out = {}
    for name in scorers or [cfg.explain.scorer]:
        scorer = make_scorer(
            name,
            llm=metered,
            embedder=embedder,
            hard_negatives=cfg.explain.hard_negatives,
            shown=shown_words(sp.explain, sp.scale),
        )
        judge = Judge(scorer, sp.scale)
        mine, lex, ctrl = (judge.with_interval(r) for r in judge([(t, sp.heldout) for t in (text, lexical, control)]))
        out[name] = {
            "score": mine.score,
            "interval": list(mine.interval),
            "lexical": lex.score,
            "lexical_interval": list(lex.interval),
            "control": ctrl.score,
            "control_interval": list(ctrl.interval),
            "metric": scorer.metric_name,
            **mine.extra,
        }
    return {
        "scores": out,
        "default": cfg.explain.scorer,
        "lexical_explanation": lexical,
        "control_explanation": control,
        "heldout": [e.window_id for e in sp.heldout],
    }


def render(result: dict, text: str) -> str:
    lines = [
        f"explanation: {text}",
        f"words:       {result['lexical_explanation']}",
        f"control:     {result['control_explanation']}",
    ]
    for name, s in result["scores"].items():
        mark = "  (the run's judge)" if name == result["default"] else ""
        score = judged(
            s["score"], s["interval"], s["control"], s["control_interval"], s["lexical"], s["lexical_interval"]
        )
        lines.append(f"  {name:<10} {score}  [{s['metric']}]{mark}")
    return "\n".join(lines)
