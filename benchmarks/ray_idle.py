"""What a Ray worker process costs while its workflows wait: the CPU of idle actors.

The explain stage's workflows spend most of their time waiting on the LLM, each on a thread of a
worker process (``explain.task.WorkflowWorker``, ``workflows_per_worker`` threads). A Ray process
that waits still spends CPU in Ray's own threads; the more processes the workflows in flight are
spread over, the more of it. This starts ``--actors`` idle actors per ``--concurrency`` (threads
started, each thread blocked in a sleep, as a workflow blocks in ``ray.get``), measures their CPU
over ``--seconds``, and the CPU of one call to an actor on each side (the caller's, the actor's).

Run: ``python benchmarks/ray_idle.py`` (about a minute and a half).
"""

from __future__ import annotations

import argparse
import os
import time

from common import append_results, header


class Idle:
    def pid(self) -> int:
        return os.getpid()

    def wait(self, seconds: float) -> int:
        time.sleep(seconds)
        return 1


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--actors", type=int, default=2, help="idle actors per concurrency")
    p.add_argument("--concurrency", default="8,24", help="threads per actor (max_concurrency), in turn")
    p.add_argument("--seconds", type=float, default=30.0, help="how long the actors are watched idle")
    p.add_argument("--calls", type=int, default=2000, help="calls timed for the per-call CPU")
    p.add_argument("--no-append", action="store_true", help="print, do not append to RESULTS.md")
    return p.parse_args(argv)


def _cpu(p) -> float:
    t = p.cpu_times()
    return t.user + t.system


def idle_share(ray, psutil, concurrency: int, actors: int, seconds: float) -> list[float]:
    """Each idle actor's CPU over ``seconds``, as a share of one core."""
    handles = [ray.remote(num_cpus=0, max_concurrency=concurrency)(Idle).remote() for _ in range(actors)]
    procs = [psutil.Process(pid) for pid in ray.get([h.pid.remote() for h in handles])]
    ray.get([h.wait.remote(0.01) for h in handles for _ in range(concurrency)])  # every thread started
    blocked = [h.wait.remote(seconds + 5) for h in handles for _ in range(concurrency)]
    time.sleep(1)  # the blocking calls have reached their threads
    before = [_cpu(p) for p in procs]
    t0 = time.time()
    time.sleep(seconds)
    shares = [(_cpu(p) - b) / (time.time() - t0) for p, b in zip(procs, before)]
    ray.get(blocked)
    for h in handles:
        ray.kill(h)
    return shares


def call_cpu(ray, psutil, calls: int) -> tuple[float, float]:
    """CPU milliseconds of one call to an actor: (the caller's, the actor's)."""
    h = ray.remote(num_cpus=0)(Idle).remote()
    actor, me = psutil.Process(ray.get(h.pid.remote())), psutil.Process()
    a0, m0 = _cpu(actor), _cpu(me)
    for _ in range(calls):
        ray.get(h.pid.remote())
    return (_cpu(me) - m0) / calls * 1000, (_cpu(actor) - a0) / calls * 1000


def main(argv=None) -> None:
    args = _args(argv)
    import psutil
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    rows = [(int(c), idle_share(ray, psutil, int(c), args.actors, args.seconds)) for c in args.concurrency.split(",")]
    caller, actor = call_cpu(ray, psutil, args.calls)
    lines = header("Ray worker processes: CPU while idle, CPU per call", __file__, argv) + [
        f"Ray {ray.__version__}, a local instance. Idle: {args.actors} actors per row, every thread blocked in a "
        f"call, watched {args.seconds:.0f} s.",
        "",
        "| threads per actor | CPU while idle, % of a core, per actor |",
        "|---|---|",
        *(f"| {c} | {' / '.join(f'{100 * s:.2f}' for s in shares)} |" for c, shares in rows),
        "",
        f"One call to an actor ({args.calls} timed): {caller:.2f} ms of the caller's CPU, {actor:.2f} ms of the actor's.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_append:
        append_results(text)


if __name__ == "__main__":
    main()
