"""Run configuration: pydantic models that are the one source of truth for CLI flags and YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError

BUNDLED_MODEL = "bundled:smollm2-135m"
BUNDLED_CORPUS = "bundled:shakespeare"
BUNDLED_EMBEDDER = "bundled:all-minilm-l6-v2"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecordConfig(_Strict):
    model: str = BUNDLED_MODEL
    corpus: str = BUNDLED_CORPUS
    text_column: str = "text"
    layers: str | None = Field(None, description="e.g. '3,5-7'; None = all layers")
    neurons: str | None = Field(None, description="e.g. '0-15'; None = all neurons")
    top_k: int = Field(20, ge=1)
    random_k: int = Field(20, ge=0)
    window: int = Field(64, ge=4, le=4096)
    max_tokens: int | None = Field(None, ge=1)
    batch_size: int = Field(32, ge=1)
    num_actors: int = Field(1, ge=1)
    num_gpus_per_actor: float = Field(0.0, ge=0)
    torch_threads: int | None = Field(None, ge=1)
    seed: int = 0
    quantile_sample: float = Field(
        0.125,
        gt=0,
        le=1,
        description="fraction of tokens (hash-chosen, the same for every neuron) in the quantile histogram",
    )


class LLMConfig(_Strict):
    backend: Literal["vllm", "openai"] = "vllm"
    model: str = BUNDLED_MODEL
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    replicas: int = Field(1, ge=1)
    gpus_per_replica: float = Field(0.0, ge=0)
    dtype: str = Field(
        "auto",
        description="engine dtype; auto: bfloat16 on GPUs and on CPUs with native bf16 "
        "(avx512_bf16 or AMX), else float32, since emulated bf16 matmul is ~100x slower",
    )
    max_model_len: int = Field(2048, ge=256)
    kv_cache_gib: int = Field(1, ge=1)
    timeout_s: float = Field(600.0, gt=0)
    max_retries: int = Field(3, ge=0)
    temperature: float = Field(0.0, ge=0)
    seed: int = 0


class ExplainConfig(_Strict):
    method: Literal["neuronscope", "single-pass", "both", "triage"] = Field(
        "both",
        description="neuronscope (the multi-agent workflow), single-pass (Bills et al.), both (each "
        "neuron gets both, for comparison), or triage (single-pass for every neuron, the full workflow "
        "only where the single-pass explanation scores below --triage-below or the activating words "
        "form several modes; each row's method says which it got)",
    )
    triage_below: float = Field(
        0.6,
        description="triage: a single-pass held-out score under the decision scorer below this gets the full workflow",
    )
    layers: str | None = None
    neurons: str | None = None
    n_explain: int = Field(8, ge=1, description="top exemplars shown to the explainer")
    n_heldout_top: int = Field(4, ge=1)
    n_heldout_random: int = Field(4, ge=0)
    max_modes: int = Field(3, ge=1)
    refine_rounds: int = Field(1, ge=0)
    embedder: str = BUNDLED_EMBEDDER
    clustering: Literal["activation", "components"] = Field(
        "activation",
        description="modes from the exemplars' activating words (joined while alike; a "
        "concept phrased many ways stays one mode) or from the agents' components (the paper's k-means)",
    )
    scorer: Literal["embedding", "simulation", "detection", "fuzzing"] = Field(
        "embedding",
        description="the judge of every workflow decision and reported score: embedding "
        "(explanation vs context cosine, AUROC), simulation (the paper's logprob simulator, Pearson r), "
        "detection or fuzzing (LLM label logprobs, AUROC); simulation scores are always stored too",
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
        description="neuron workflows in flight; None: 12 per LLM "
        "engine replica (enough waiting requests to fill its batches)",
    )
    compact_every: int = Field(
        256,
        ge=1,
        description="finished neurons of a layer merged into one part "
        "object per output folder (also when the layer ends)",
    )
    max_parse_retries: int = Field(2, ge=0)
    budget: int | None = Field(
        None,
        ge=1,
        description="LLM tokens (prompt + answer, cached answers included) this run may spend; "
        "no new neuron starts once the spend plus the likely spend of those in flight reaches it, and "
        "the rest stay pending for a rerun. None: no limit",
    )
    dry_run: bool = Field(
        False,
        description="explain only a sample of the pending neurons, into a scratch folder removed "
        "afterwards, and print the tokens and wall time the whole selection would take",
    )
    dry_run_sample: int = Field(12, ge=1, description="neurons in the --dry-run sample, spread over the selection")


class RunConfig(_Strict):
    record: RecordConfig = RecordConfig()
    explain: ExplainConfig = ExplainConfig()
    llm: LLMConfig = LLMConfig()


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
        raise ConfigError(f"invalid config value {where}={first.get('input')!r}: {first['msg']}") from None
