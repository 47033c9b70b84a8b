"""Stage runners shared by the CLI and the Ray job entry points (what they print: ``summary.py``)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from . import manifest
from .config import RunConfig
from .errors import NeuronScopeError
from .explain import Estimate, RunContext, estimate_run
from .lease import StageLease
from .logs import Progress
from .redact import redact_url
from .report import polysemanticity
from .results import RecordsIndex, read_explanations
from .store import Store

# Small enough for 2 CPU cores in minutes; every stage still runs in full.
# The exemplar counts are the defaults': the held-out sets that give each score a useful interval
# cost the recorder little on 8 neurons, and the judge needs no LLM.
DEMO_OVERRIDES = {
    "record": {"layers": "6,18", "neurons": "0-3", "window": 32, "max_tokens": 40_000},
    "explain": {"max_modes": 3, "refine_rounds": 1},
}


def ensure_ray() -> None:
    """Join the cluster of a submitted Ray job (RAY_ADDRESS), else start a local Ray on this machine."""
    import ray

    from .logs import quiet_ray_console

    quiet_ray_console()
    if not ray.is_initialized():
        ray.init(log_to_driver=False, include_dashboard=False, logging_level=logging.WARNING)


def _staged(store: Store, stage: str, inputs: dict, config: dict, work: Callable[[], dict]) -> dict:
    manifest.begin_stage(store, stage, inputs, config)
    try:
        summary = work()
    except KeyboardInterrupt:  # stopped on purpose (Ctrl-C, SIGINT): a rerun resumes it
        manifest.end_stage(store, stage, "interrupted")
        raise
    except BaseException as e:
        manifest.end_stage(store, stage, "failed", error=f"{type(e).__name__}: {e}")
        raise
    manifest.end_stage(store, stage, "done", summary)
    return summary


def run_record(cfg: RunConfig, out: str, progress: Progress) -> dict:
    from .models.bundled import resolve_model
    from .record import list_corpus, record

    store = Store.open(out)
    store.check_writable()
    model = resolve_model(cfg.record.model)
    source = list_corpus(cfg.record.corpus)  # metadata only: its shards' names, sizes and versions
    inputs = {
        "model": cfg.record.model,
        "model_revision": model.revision,
        "corpus": cfg.record.corpus,
        "corpus_hash": source.fingerprint,
    }
    with StageLease(store, "record"):
        ensure_ray()
        progress(f"record: {cfg.record.model} over {cfg.record.corpus} -> {store.uri}")
        return _staged(
            store, "record", inputs, cfg.record.model_dump(), lambda: record(cfg.record, store, progress, source)
        )


def run_explain(cfg: RunConfig, records: str, out: str, progress: Progress, llm=None) -> dict | Estimate:
    """The explain stage; returns its summary (as the manifest holds it), or with ``--dry-run``
    the estimate (nothing of the sample is kept)."""
    src = Store.open(records)
    index = RecordsIndex.scan(src)  # lists and checks the records before anything starts
    store = Store.open(out)
    store.check_writable()
    if cfg.explain.dry_run:  # writes only a scratch folder, removed after: no stage, no lease
        ensure_ray()
        run = RunContext(src, store, llm or start_llm(cfg, progress), cfg.explain)
        after = (lambda scratch: _causal_pace(cfg, src, scratch, progress)) if cfg.causal.enabled else None
        return estimate_run(run, progress, index, after)
    with StageLease(store, "explain"):  # before the LLM starts: a second process refuses at once
        return _explain(cfg, src, store, progress, llm, index)


def _explain(cfg: RunConfig, src: Store, store: Store, progress: Progress, llm, index) -> dict:
    from .explain import explain_run

    ensure_ray()
    if llm is None:
        llm = start_llm(cfg, progress)
    from .models.embedder import resolve_dtype

    # the embedder's dtype as this machine resolves it: a resume where it resolves otherwise is refused
    inputs = {
        "records": src.uri,
        "llm_model": cfg.llm.model,
        "embedder_dtype": resolve_dtype(cfg.explain.embedder_dtype),
    }
    config = {
        "explain": cfg.explain.model_dump(),
        "llm": {**cfg.llm.model_dump(), "base_url": redact_url(cfg.llm.base_url)},
    }

    def work() -> dict:
        check = self_check(cfg, llm, progress) if cfg.explain.self_check else None
        if check is not None:
            manifest.note_stage(store, "explain", "self_check", check.as_dict())
        run = RunContext(src, store, llm, cfg.explain, calibrated=check and check.passed)
        summary = explain_run(run, None, progress, index=index)
        poly = polysemanticity(read_explanations(store, ["layer", "neuron", "status", "n_modes"]))
        return {**summary.as_dict(), "self_check": check.as_dict() if check else None, "polysemanticity": poly}

    return _staged(store, "explain", inputs, config, work)


def _recorded_model(src: Store) -> str:
    """The subject model the records were made with (the record stage's input)."""
    model = (manifest.load(src)["stages"].get("record") or {}).get("inputs", {}).get("model")
    if not model:
        raise NeuronScopeError(
            f"the records of {src.uri} were not made by `neuronscope record` (its manifest names no "
            "subject model): the causal check runs the model that made them"
        )
    return model


def _causal_pace(cfg: RunConfig, src: Store, scratch: Store, progress: Progress) -> float | None:
    """``--dry-run``: the causal check's seconds per neuron on the sample explained into
    ``scratch`` (None where the sample has no modes)."""
    from .causal import run_causal as check
    from .models.bundled import resolve_model

    try:
        summary = check(src, scratch, cfg.causal, resolve_model(_recorded_model(src)).path, progress)
    except NeuronScopeError:
        return None
    return summary.get("seconds_per_neuron")


def run_causal(cfg: RunConfig, records: str, out: str, progress: Progress) -> dict:
    """The causal stage: each explained mode of ``out`` checked with the records of ``records``."""
    from .causal import explained_modes
    from .causal import run_causal as check
    from .models.bundled import resolve_model

    src, store = Store.open(records), Store.open(out)
    store.check_writable()
    explained_modes(store)  # a run with nothing to check fails here, before any entry is written
    spec = _recorded_model(src)
    model = resolve_model(spec)
    inputs = {"records": src.uri, "model": spec, "model_revision": model.revision}
    with StageLease(store, "causal"):
        progress(f"causal: {cfg.causal.ablation} ablation of each explained mode's neuron, {spec} -> {store.uri}")
        return _staged(
            store,
            "causal",
            inputs,
            {"causal": cfg.causal.model_dump()},
            lambda: check(src, store, cfg.causal, model.path, progress),
        )


def self_check(cfg: RunConfig, llm, progress: Progress):
    """The configured scorer on the built-in calibration set; warns when it cannot discriminate."""
    from .llm.base import Ledger, Metered
    from .models.embedder import get_embedder
    from .scoring import make_scorer
    from .scoring.calibration import self_check as check

    embedder = (
        get_embedder(cfg.explain.embedder, cfg.explain.embedder_dtype)
        if cfg.explain.scorer in ("reader", "embedding")
        else None
    )
    metered = Metered(llm, Ledger())
    result = check(lambda shown: make_scorer(cfg.explain.scorer, llm=metered, embedder=embedder, shown=shown))
    progress(result.line() + f" [{result.seconds:.1f}s]")
    if not result.passed:
        print(f"WARNING: {result.line()}", file=sys.stderr, flush=True)
    return result


def start_llm(cfg: RunConfig, progress: Progress):
    if cfg.llm.backend == "vllm":
        from .llm.vllm_backend import start_pool

        return start_pool(cfg.llm, progress)
    from .llm.openai_backend import OpenAIClient

    return OpenAIClient(cfg.llm)


def run_demo(out: str, cfg: RunConfig, progress: Progress) -> str:
    """The whole pipeline on the embedded defaults; returns where the atlas's index.html is."""
    from .atlas import build_atlas

    run_record(cfg, out, progress)
    run_explain(cfg, out, out, progress)
    if cfg.causal.enabled:
        run_causal(cfg, out, out, progress)
    return build_atlas(out, None, progress)
