"""An explain driver in a process of its own, for the tests that kill or lose part of a run (no
tests here): the scripted LLM slowed down, on month neurons, and the uninterrupted reference."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import explain_helpers
import fakes
import pandas as pd

from neuronscope.config import ExplainConfig
from neuronscope.explain import RunContext, RunSummary, explain_run
from neuronscope.store import Store

NEURONS = 10
CFG = {"n_explain": 6, "n_heldout_top": 3, "n_heldout_random": 2, "max_in_flight": 2, "compact_every": 4}
EMB = fakes.PlantedEmbedder()  # no sentence-transformers model to load in the workers

DRIVER = textwrap.dedent(
    """
    import json, sys, time
    sys.path.insert(0, sys.argv[4])
    import ray
    import explain_helpers, fakes
    from neuronscope.config import ExplainConfig
    from neuronscope.explain import RunContext, explain_run
    from neuronscope.store import Store

    class Slow(fakes.ScriptedLLM):
        def chat(self, conversations, params):
            time.sleep(0.2)  # slow enough that the test can stop it part way
            return super().chat(conversations, params)

    records, out, tests, cfg, env = sys.argv[2:]
    ray.init(address=sys.argv[1], log_to_driver=False, runtime_env={"env_vars": json.loads(env)})
    for m in (fakes, explain_helpers):
        ray.cloudpickle.register_pickle_by_value(m)
    cfg = ExplainConfig(**json.loads(cfg))
    run = RunContext(Store.open(records), Store.open(out), Slow(), cfg, embedder=fakes.PlantedEmbedder())
    print(json.dumps(explain_run(run, None, print).as_dict(), default=str))
    """
)


def month_records(store: Store) -> None:
    explain_helpers.month_neurons(store, NEURONS)


def explanations(store: Store) -> pd.DataFrame:
    """The run's rows in order, without ``timings`` (measured: they differ from run to run)."""
    rows = store.read_parquet("explanations/").to_pandas().drop(columns="timings")
    return rows.sort_values(["layer", "neuron", "mode"]).reset_index(drop=True)


def driver(
    ray_or_address,
    records: str,
    out: str,
    env: dict | None = None,
    cfg: dict | None = None,
    proc_env: dict | None = None,
) -> subprocess.Popen:
    """An explain driver process on the test's Ray (or the cluster at an address), its workers
    given ``env``, itself ``proc_env`` (default: this process's)."""
    address = ray_or_address if isinstance(ray_or_address, str) else ray_or_address.get_runtime_context().gcs_address
    args = [address, records, out, str(Path(__file__).parent), json.dumps(cfg or CFG), json.dumps(env or {})]
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=proc_env,
        start_new_session=True,
    )


def summary(proc: subprocess.Popen) -> RunSummary:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    return RunSummary(**json.loads(out.strip().splitlines()[-1]))


def reference(tmp_path, ray_local) -> Store:
    """The month neurons explained in one uninterrupted run, in this process."""
    for m in (fakes, explain_helpers):
        ray_local.cloudpickle.register_pickle_by_value(m)
    ref = Store.open(str(tmp_path / "reference"))
    month_records(ref)
    whole = explain_run(RunContext(ref, ref, fakes.ScriptedLLM(), ExplainConfig(**CFG), embedder=EMB))
    assert whole.ok == NEURONS
    return ref
