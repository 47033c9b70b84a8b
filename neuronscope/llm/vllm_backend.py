"""vLLM engines inside Ray actors, shared by every neuron workflow through one picklable client.

Each actor holds an ``AsyncLLM`` engine: concurrent calls from many workflows land in the same
continuous batch, which is what keeps the engine saturated when hundreds of neurons are explained.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import tempfile
import time
import uuid
from typing import Sequence

import ray

from ..config import LLMConfig
from ..errors import LLMError
from .base import Completion, GenParams, Message, continuation_flags

_SEQ = itertools.count()



def _engine_env(cfg: LLMConfig) -> dict[str, str]:
    cache = os.environ.get("VLLM_CACHE_ROOT") or os.path.join(tempfile.gettempdir(), "neuronscope-vllm-cache")
    return {
        "VLLM_CPU_KVCACHE_SPACE": str(cfg.kv_cache_gib),
        "VLLM_CACHE_ROOT": cache,
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
    }


@ray.remote(max_restarts=3, max_task_retries=3)
class VLLMEngineActor:
    """One vLLM engine. Methods are async so calls from many callers are batched together."""

    def __init__(self, model_path: str, cfg: dict):
        from transformers import AutoTokenizer
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.engine = AsyncLLM.from_engine_args(
            AsyncEngineArgs(
                model=model_path,
                dtype=cfg["dtype"],
                max_model_len=cfg["max_model_len"],
                enforce_eager=True,  # CUDA graphs / torch.compile cost more start-up than they save here
                enable_prefix_caching=True,
                max_logprobs=max(20, cfg.get("max_logprobs", 20)),
                seed=cfg["seed"],
                disable_log_stats=True,
            )
        )

    async def warmup(self) -> str:
        """One tiny request of each kind: the first prompt-logprob call pays a one-off ~10 s setup."""
        from vllm import SamplingParams

        await self._run([1, 2, 3], SamplingParams(max_tokens=1, prompt_logprobs=1))
        return "ok"

    async def _run(self, prompt_ids: list[int], sp) -> object:
        final = None
        async for out in self.engine.generate({"prompt_token_ids": prompt_ids}, sp, f"r{next(_SEQ)}-{uuid.uuid4().hex[:8]}"):
            final = out
        return final

    async def chat(self, conversations: list[list[Message]], params: GenParams) -> list[Completion]:
        from vllm import SamplingParams

        sp = SamplingParams(max_tokens=params.max_tokens, temperature=params.temperature, seed=params.seed)
        ids = [
            self.tokenizer.apply_chat_template(
                c, tokenize=True, return_dict=False, **continuation_flags(c)
            )
            for c in conversations
        ]
        outs = await asyncio.gather(*(self._run(list(p), sp) for p in ids))
        return [
            Completion(text=o.outputs[0].text, tokens_in=len(p), tokens_out=len(o.outputs[0].token_ids))
            for p, o in zip(ids, outs)
        ]

    async def next_token_logprobs(
        self, prompts: list[list[int]], positions: list[list[int]], top_k: int
    ) -> list[list[dict[int, float]]]:
        from vllm import SamplingParams

        sp = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=top_k)
        outs = await asyncio.gather(*(self._run(list(p), sp) for p in prompts))
        result = []
        for out, pos in zip(outs, positions):
            plp = out.prompt_logprobs  # entry i: logprobs of token i given tokens < i (entry 0 is None)
            result.append([{int(t): float(lp.logprob) for t, lp in (plp[i] or {}).items()} for i in pos])
        return result


class VLLMPool:
    """Client of a pool of engine actors; implements the ``LLM`` protocol and is picklable."""

    def __init__(self, actors: list, tokenizer_path: str, cfg: LLMConfig, model_id: str):
        self.actors = actors
        self.tokenizer_path = tokenizer_path
        self.cfg = cfg
        self.model_id = model_id  # what the response cache keys on
        self._tok = None
        self._next = 0

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_tok"] = None
        return state

    @property
    def tokenizer(self):
        if self._tok is None:
            from transformers import AutoTokenizer

            self._tok = AutoTokenizer.from_pretrained(self.tokenizer_path)
        return self._tok

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def token_text(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])

    def _call(self, method: str, *args):
        """Spread one batch over the replicas; retry transient failures with backoff."""
        delay = 1.0
        for attempt in range(self.cfg.max_retries + 1):
            actor = self.actors[self._next % len(self.actors)]
            self._next += 1
            try:
                return ray.get(getattr(actor, method).remote(*args), timeout=self.cfg.timeout_s)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError, ray.exceptions.RayTaskError) as e:
                if attempt == self.cfg.max_retries:
                    raise LLMError(
                        f"vLLM engine call {method!r} failed after {attempt + 1} attempts: {type(e).__name__}: {e}"
                    ) from None
                time.sleep(delay)
                delay *= 2

    def chat(self, conversations: Sequence[list[Message]], params: GenParams) -> list[Completion]:
        return self._call("chat", list(conversations), params) if conversations else []

    def next_token_logprobs(self, prompts, positions, top_k: int):
        return self._call("next_token_logprobs", [list(p) for p in prompts], [list(p) for p in positions], top_k) if prompts else []


def start_pool(cfg: LLMConfig, progress=None) -> VLLMPool:
    """Start ``cfg.replicas`` engine actors for ``cfg.model`` and wait until they answer."""
    from ..models.bundled import resolve_model

    model = resolve_model(cfg.model)
    options = {"runtime_env": {"env_vars": _engine_env(cfg)}}
    if cfg.gpus_per_replica:
        options["num_gpus"] = cfg.gpus_per_replica
    else:
        options["num_cpus"] = 1  # the rest of a 2-core machine stays free for the workflow tasks
    engine_cfg = {"dtype": cfg.dtype, "max_model_len": cfg.max_model_len, "seed": cfg.seed}
    actors = [VLLMEngineActor.options(**options).remote(model.path, engine_cfg) for _ in range(cfg.replicas)]
    if progress:
        progress(f"starting {cfg.replicas} vLLM engine(s) for {cfg.model}")
    t0 = time.time()
    try:
        ray.get([a.warmup.remote() for a in actors], timeout=max(cfg.timeout_s, 900))
    except Exception as e:
        raise LLMError(f"vLLM engine for {cfg.model!r} failed to start: {type(e).__name__}: {e}") from None
    if progress:
        progress(f"vLLM engine(s) ready in {time.time() - t0:.0f}s")
    return VLLMPool(actors, model.path, cfg, f"vllm:{cfg.model}@{model.revision}:{cfg.dtype}")
