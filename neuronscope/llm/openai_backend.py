"""The LLM interface over any OpenAI-compatible HTTP server (vLLM's server, a hosted API, ...).

Prompt logprobs use vLLM's ``prompt_logprobs`` extension of ``/v1/completions``; servers without
it can still serve the agents' chat calls.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from ..config import LLMConfig
from ..errors import ConfigError, LLMError, ModelError
from ..redact import redact, redact_url
from .base import Completion, GenParams, LazyTokenizer, Message, continuation_flags

_TRANSIENT = {408, 409, 429, 500, 502, 503, 504}


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

    def _post(self, path: str, body: dict) -> dict:
        url = self.base_url + path
        headers = {"Content-Type": "application/json"}
        key = self._key
        if key:
            headers["Authorization"] = f"Bearer {key}"
        delay, last = 1.0, ""
        for attempt in range(self.cfg.max_retries + 1):
            req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.cfg.timeout_s) as resp:
                    raw = resp.read()
                try:
                    return json.loads(raw)
                except ValueError:
                    text = redact(raw[:120].decode(errors="replace"), key)
                    raise LLMError(f"{redact_url(url)} answered with a body that is not JSON: {text!r}") from None
            except urllib.error.HTTPError as e:
                # a server may echo the key back ("invalid key sk-..."): masked before it can be stored
                detail = redact(e.read()[:300].decode(errors="replace"), key, urlsplit(url).password)
                if e.code not in _TRANSIENT:
                    raise LLMError(f"{redact_url(url)} answered HTTP {e.code}: {detail}") from None
                last = f"HTTP {e.code}: {detail}"
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                last = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
            if attempt < self.cfg.max_retries:
                time.sleep(delay)
                delay *= 2
        raise LLMError(f"LLM endpoint {redact_url(url)} unreachable after {self.cfg.max_retries + 1} attempts ({last})")

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
