"""The LLM interface over any OpenAI-compatible HTTP server (vLLM's server, a hosted API, ...).

Prompt logprobs use vLLM's ``prompt_logprobs`` extension of ``/v1/completions``; servers without
it can still serve the agents' chat calls.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from urllib.parse import urlsplit

import httpx
import tenacity

from ..config import LLMConfig
from ..errors import ConfigError, LLMError, ModelError
from ..redact import redact, redact_url
from .base import Completion, GenParams, LazyTokenizer, Message, continuation_flags

_TRANSIENT = {408, 409, 429, 500, 502, 503, 504}


class _Transient(Exception):
    """A failure worth another attempt; its text is what the final error quotes."""


class OpenAIClient(LazyTokenizer):
    """Implements the ``LLM`` protocol over HTTP; requests of one batch go out concurrently."""

    def __init__(self, cfg: LLMConfig, parallel: int = 16):
        if not cfg.base_url:
            raise ConfigError("llm.backend='openai' needs llm.base_url (e.g. http://127.0.0.1:8000/v1)")
        self.cfg = cfg
        self.base_url = cfg.base_url.rstrip("/")
        self.parallel = parallel
        self.model_id = f"openai:{self.base_url}:{cfg.model}"  # what the response cache keys on
        # read where the client is made: Ray workers on other nodes do not have the driver's environment
        self._key = os.environ.get(cfg.api_key_env)

    @cached_property
    def _http(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        return httpx.Client(headers=headers, timeout=self.cfg.timeout_s)

    def _post(self, path: str, body: dict) -> dict:
        """POST with up to ``max_retries`` retries of transient failures (exponential backoff with
        jitter); LLMError naming the endpoint, with any key masked, when it fails for good."""
        url = self.base_url + path
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.cfg.max_retries + 1),
            wait=tenacity.wait_exponential_jitter(initial=1, max=60),
            retry=tenacity.retry_if_exception_type(_Transient),
            reraise=True,
        )
        try:
            return retrying(self._post_once, url, body)
        except _Transient as e:
            raise LLMError(
                f"LLM endpoint {redact_url(url)} unreachable after {self.cfg.max_retries + 1} attempts ({e})"
            ) from None

    def _post_once(self, url: str, body: dict) -> dict:
        try:
            resp = self._http.post(url, json=body)
        except httpx.TimeoutException:
            raise _Transient(f"TimeoutError: no answer within {self.cfg.timeout_s:g}s") from None
        except httpx.TransportError as e:
            raise _Transient(f"{type(e).__name__}: {e}") from None
        if resp.is_error:
            # a server may echo the key back ("invalid key sk-..."): masked before it can be stored
            detail = redact(resp.text[:300], self._key, urlsplit(url).password)
            if resp.status_code in _TRANSIENT:
                raise _Transient(f"HTTP {resp.status_code}: {detail}")
            raise LLMError(f"{redact_url(url)} answered HTTP {resp.status_code}: {detail}")
        try:
            return resp.json()
        except ValueError:
            text = redact(resp.text[:120], self._key)
            raise LLMError(f"{redact_url(url)} answered with a body that is not JSON: {text!r}") from None

    def _map(self, fn, items):
        with ThreadPoolExecutor(max_workers=self.parallel) as pool:
            return list(pool.map(fn, items))

    def chat(self, conversations: Sequence[list[Message]], params: GenParams) -> list[Completion]:
        def one(messages):
            body = {
                "model": self.cfg.model,
                "messages": messages,
                "max_tokens": params.max_tokens,
                "temperature": params.temperature,
                "seed": params.seed,
            }
            if params.ignore_eos:
                body["ignore_eos"] = True  # vLLM's extension; other servers may reject it
            if params.regex:
                body["structured_outputs"] = {"regex": params.regex}  # vLLM's extension, likewise
            if messages and messages[-1]["role"] == "assistant":
                body.update(continuation_flags(messages))  # vLLM's extension for answer prefill
            r = self._post("/chat/completions", body)
            try:
                text, usage = r["choices"][0]["message"]["content"] or "", r.get("usage") or {}
            except (KeyError, IndexError, TypeError, AttributeError):
                raise LLMError(
                    f"{redact_url(self.base_url)}/chat/completions answered without "
                    f"choices[0].message.content: {str(r)[:120]!r}"
                ) from None
            return Completion(text, usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))

        return self._map(one, conversations)

    def next_token_logprobs(self, prompts, positions, top_k: int):
        def one(args):
            ids, pos = args
            r = self._post(
                "/completions",
                {
                    "model": self.cfg.model,
                    "prompt": list(ids),
                    "max_tokens": 1,
                    "temperature": 0.0,
                    "prompt_logprobs": top_k,
                },
            )
            plp = r["choices"][0].get("prompt_logprobs")
            if plp is None:
                raise LLMError(
                    f"{redact_url(self.base_url)} does not return prompt_logprobs; the logprob simulator needs a vLLM server"
                )
            return [{int(t): float(v["logprob"]) for t, v in (plp[i] or {}).items()} for i in pos]

        return self._map(one, list(zip(prompts, positions)))

    def _tokenizer_source(self) -> str:
        from ..models.bundled import resolve_model

        try:
            return resolve_model(self.cfg.model).path
        except ModelError as e:
            raise LLMError(
                f"no local tokenizer for {self.cfg.model!r} ({e}); set llm.model to a loadable model"
            ) from None
