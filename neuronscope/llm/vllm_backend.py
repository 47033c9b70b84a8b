"""vLLM engines inside Ray actors, shared by every neuron workflow through one picklable client.

Each actor holds an ``AsyncLLM`` engine: concurrent calls from many workflows land in the same
continuous batch, which is what keeps the engine saturated when hundreds of neurons are explained.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import re
import tempfile
import time
import uuid
from collections.abc import Sequence
from typing import Any

import ray

from ..config import LLMConfig
from ..errors import LLMError
from ..models.cpu import native_bf16
from .base import Completion, GenParams, LazyTokenizer, Message, continuation_flags

_SEQ = itertools.count()
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Ray restarts a dead engine actor this many times (a restart re-runs __init__: a fresh engine,
# ~25-60 s on CPU); after that, or when its engine cannot start, the replica is dead for good.
MAX_RESTARTS = 3


def _engine_env(cfg: LLMConfig) -> dict[str, str]:
    cache = os.environ.get("VLLM_CACHE_ROOT") or os.path.join(tempfile.gettempdir(), "neuronscope-vllm-cache")
    env = {
        "VLLM_CPU_KVCACHE_SPACE": str(cfg.kv_cache_gib),
        "VLLM_CACHE_ROOT": cache,
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
    }
    if cfg.cpu_reserved_cores is not None:
        env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = str(cfg.cpu_reserved_cores)
    return env


def engine_args(model_path: str, cfg: dict) -> dict[str, Any]:
    """vLLM ``AsyncEngineArgs`` of one replica, from the engine settings ``start_pool`` ships."""
    tp = cfg.get("tensor_parallel_size", 1)
    args: dict[str, Any] = {
        "model": model_path,
        "dtype": cfg["dtype"],
        "max_model_len": cfg["max_model_len"],
        # on CPUs, torch.compile / graph capture cost more start-up than they save; GPUs gain
        "enforce_eager": not cfg["gpu"],
        "enable_prefix_caching": True,
        "max_logprobs": max(20, cfg.get("max_logprobs", 20)),
        "seed": cfg["seed"],
        "disable_log_stats": True,
    }
    if not cfg["gpu"]:
        # vLLM-CPU dies ("CPU Generator does not use offset") when it splits the prompt of a seeded
        # sampled request (our retries) over two steps: it rewinds that request's generator, which
        # CPU generators cannot do. Whole prompts only, as vLLM itself does on CPUs for MLA models.
        args.update(enable_chunked_prefill=False, max_num_batched_tokens=max(cfg["max_model_len"], 2048))
    if tp > 1:
        # the shards run as subprocesses of this actor, on the GPUs Ray gave it: vLLM's Ray
        # executor would look for a placement group its engine subprocess cannot see
        args.update(tensor_parallel_size=tp, distributed_executor_backend="mp")
    return args


@ray.remote(max_restarts=MAX_RESTARTS, max_task_retries=MAX_RESTARTS)
class VLLMEngineActor:
    """One vLLM engine. Methods are async so calls from many callers are batched together.

    A call in flight when the actor dies is resubmitted by Ray once the actor has restarted
    (``max_task_retries``); the pool overrides that per call when another replica can take it."""

    def __init__(self, model: str, cfg: dict):
        from transformers import AutoTokenizer
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        from ..models.bundled import resolve_model

        # resolved here, on the engine's node: a path resolved on the driver need not exist there
        model_path = resolve_model(model).path
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**engine_args(model_path, cfg)))
        self.served = {"requests": 0, "prompt_tokens": 0, "output_tokens": 0}
        self.running = 0  # requests handed to the engine and not finished

    async def warmup(self) -> str:
        """One tiny request of each kind: the first prompt-logprob call pays a one-off ~10 s setup."""
        from vllm import SamplingParams

        await self._run([1, 2, 3], SamplingParams(max_tokens=1, prompt_logprobs=1))
        return "ok"

    async def stats(self) -> dict:
        """Requests and tokens this engine has served since it (re)started, warm-up included, and
        the requests it is working on now."""
        return {**self.served, "running": self.running, "pid": os.getpid()}

    async def reset_prefix_cache(self) -> bool:
        """Drop cached prefixes, so a benchmark replay starts as cold as the run it replays."""
        return await self.engine.reset_prefix_cache()

    async def _run(self, prompt_ids: list[int], sp) -> Any:
        from vllm.v1.engine.exceptions import EngineDeadError

        final: Any = None
        self.running += 1
        try:
            async for out in self.engine.generate(
                {"prompt_token_ids": prompt_ids}, sp, f"r{next(_SEQ)}-{uuid.uuid4().hex[:8]}"
            ):
                final = out
        except EngineDeadError:
            # The engine's core process is gone (e.g. killed for memory) and this actor can never
            # serve again: exit as a crash, so Ray restarts it with a fresh engine and resubmits.
            os._exit(1)
        finally:
            self.running -= 1
        self.served["requests"] += 1
        self.served["prompt_tokens"] += len(prompt_ids)
        self.served["output_tokens"] += len(final.outputs[0].token_ids)
        return final

    async def chat(self, conversations: list[list[Message]], params: GenParams) -> list[Completion]:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        sp = SamplingParams(
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            seed=params.seed,
            ignore_eos=params.ignore_eos,
            structured_outputs=StructuredOutputsParams(regex=params.regex) if params.regex else None,
        )
        ids = [
            self.tokenizer.apply_chat_template(c, tokenize=True, return_dict=False, **continuation_flags(c))
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

        # Only ids and values are read: skip decoding ~20 token strings per prompt position, and
        # take vLLM's flat container, which spares the garbage collector millions of objects.
        # vLLM 0.32 does not read the prefix cache for prompt-logprob requests (cached positions
        # would have no logprobs): every such prompt recomputes its shared header, which is why the
        # scorers put all items of one explanation into as few prompts as they can.
        sp = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=top_k, detokenize=False, flat_logprobs=True)
        outs = await asyncio.gather(*(self._run(list(p), sp) for p in prompts))
        result = []
        for out, pos in zip(outs, positions):
            plp = out.prompt_logprobs  # entry i: logprobs of token i given tokens < i (entry 0 is None)
            result.append([{int(t): float(lp.logprob) for t, lp in (plp[i] or {}).items()} for i in pos])
        return result


def _brief(e: BaseException) -> str:
    """A Ray error on one line: its first line or, for an actor that could not start, the cause."""
    lines = [ln.strip() for ln in _ANSI.sub("", str(e)).splitlines() if ln.strip()]
    if len(lines) > 1 and "creation task" in lines[0]:
        return f"{type(e).__name__}: its engine could not start: {lines[-1]}"[:600]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:600]


class VLLMPool(LazyTokenizer):
    """Client of a pool of engine actors; implements the ``LLM`` protocol and is picklable.

    Each batch goes to one replica (round robin from a random start, so the many workflow
    processes holding copies of this client spread out). A replica that dies is restarted by
    Ray; its batch moves to another live replica at once, or, when it is the only one left,
    waits for the restart. A replica dead for good is skipped, and when none is left the call
    fails with LLMError; so does a batch that times out or fails ``cfg.max_retries + 1`` times.
    """

    def __init__(self, actors: list, tokenizer_path: str, cfg: LLMConfig, model_id: str):
        self.actors = actors
        self.tokenizer_path = tokenizer_path
        self.cfg = cfg
        self.model_id = model_id  # what the response cache keys on
        self._next = random.randrange(len(actors)) if actors else 0

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._next = random.randrange(len(self.actors)) if self.actors else 0

    def _tokenizer_source(self) -> str:
        return self.tokenizer_path

    def _call(self, method: str, *args):
        """Send one batch to a replica; fail over, retry with backoff, or raise LLMError."""
        from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError, RayActorError, RayTaskError

        dead: set[int] = set()
        failures, hops, delay, last = 0, 0, 1.0, ""
        while True:
            live = [i for i in range(len(self.actors)) if i not in dead]
            if not live:
                raise LLMError(f"all {len(self.actors)} vLLM replica(s) are dead and cannot restart ({last})")
            i = live[self._next % len(live)]
            self._next += 1
            # With another replica to go to, a death mid-call should surface here at once; alone,
            # Ray keeps the call and resubmits it to the restarted engine.
            retries = 0 if len(live) > 1 else MAX_RESTARTS
            ref = getattr(self.actors[i], method).options(max_task_retries=retries).remote(*args)
            try:
                return ray.get(ref, timeout=self.cfg.timeout_s)
            except GetTimeoutError:
                ray.cancel(ref)  # a stuck request must not keep its place in the engine's batch
                last = f"replica {i}: no answer within {self.cfg.timeout_s:g}s"
            except ActorDiedError as e:  # restarts exhausted, or its engine cannot start again
                dead.add(i)
                last = f"replica {i}: {_brief(e)}"
                continue  # the next replica, or the error above: no backoff, no retry spent
            except ActorUnavailableError as e:  # it died mid-call and is restarting
                last = f"replica {i}: {_brief(e)}"
                hops += 1
                # Moving on costs nothing while there is somewhere to go; bounded, since every
                # hop is a replica death and each replica has at most MAX_RESTARTS of them.
                if len(live) > 1 and hops <= len(self.actors) * (MAX_RESTARTS + 1):
                    continue
            except (RayActorError, RayTaskError) as e:  # an error inside the engine: maybe transient
                last = f"replica {i}: {_brief(e)}"
            failures += 1
            if failures > self.cfg.max_retries:
                raise LLMError(f"vLLM engine call {method!r} failed after {failures} attempt(s) ({last})")
            time.sleep(delay)
            delay *= 2

    def chat(self, conversations: Sequence[list[Message]], params: GenParams) -> list[Completion]:
        return self._call("chat", list(conversations), params) if conversations else []

    def next_token_logprobs(self, prompts, positions, top_k: int):
        return (
            self._call("next_token_logprobs", [list(p) for p in prompts], [list(p) for p in positions], top_k)
            if prompts
            else []
        )

    def stats(self) -> list[dict]:
        """Each replica's ``VLLMEngineActor.stats()`` (requests and tokens served)."""
        return ray.get([a.stats.remote() for a in self.actors], timeout=self.cfg.timeout_s)

    def reset_prefix_cache(self) -> None:
        ray.get([a.reset_prefix_cache.remote() for a in self.actors], timeout=self.cfg.timeout_s)

    def shutdown(self) -> None:
        """Stop every engine actor (for good: no restart)."""
        for a in self.actors:
            ray.kill(a, no_restart=True)


def resolve_dtype(cfg: LLMConfig) -> str:
    """``cfg.dtype``, with "auto" made concrete for where the engines run (GPU replicas, or CPUs
    like the driver's: a CPU cluster's nodes are assumed alike)."""
    if cfg.dtype != "auto":
        return cfg.dtype
    return "bfloat16" if cfg.gpus_per_replica or native_bf16() else "float32"


def start_pool(cfg: LLMConfig, progress=None) -> VLLMPool:
    """Start ``cfg.replicas`` engine actors for ``cfg.model`` and wait until they answer."""
    from ..models.bundled import resolve_model

    model = resolve_model(cfg.model)
    options: dict[str, Any] = {"runtime_env": {"env_vars": _engine_env(cfg)}}
    if cfg.gpus_per_replica:
        options["num_gpus"] = cfg.gpus_per_replica
    else:
        options["num_cpus"] = 1  # the rest of a 2-core machine stays free for the workflow tasks
    dtype = resolve_dtype(cfg)
    engine_cfg = {
        "dtype": dtype,
        "max_model_len": cfg.max_model_len,
        "seed": cfg.seed,
        "gpu": bool(cfg.gpus_per_replica),
        "tensor_parallel_size": cfg.tensor_parallel_size,
    }
    # Ray's class decorator made an actor class; the checker sees the plain class.
    actors = [
        VLLMEngineActor.options(**options).remote(cfg.model, engine_cfg)  # type: ignore[attr-defined]
        for _ in range(cfg.replicas)
    ]
    if progress:
        progress(f"starting {cfg.replicas} vLLM engine(s) for {cfg.model} ({dtype})")
    t0 = time.time()
    try:
        ray.get([a.warmup.remote() for a in actors], timeout=max(cfg.timeout_s, 900))
    except Exception as e:
        raise LLMError(f"vLLM engine for {cfg.model!r} failed to start: {type(e).__name__}: {e}") from None
    if progress:
        progress(f"vLLM engine(s) ready in {time.time() - t0:.0f}s")
    return VLLMPool(actors, model.path, cfg, f"vllm:{cfg.model}@{model.revision}:{dtype}")
