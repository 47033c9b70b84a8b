"""Shared fixtures: one local Ray for the session, a cache folder, and the S3 server fixture."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Fixture modules, registered once here rather than imported into each test module.
pytest_plugins = ["fakes", "llm_server_helpers", "ray_cluster", "record_helpers", "s3_server"]


@pytest.fixture(scope="session")
def ray_local():
    """A 2-CPU local Ray, the size of the CI machine, shared by every test that needs one."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def vllm_pool(ray_local):
    """One real vLLM engine (bundled SmolLM2-135M-Instruct) in a Ray actor, for every slow test."""
    from neuronscope.config import LLMConfig
    from neuronscope.llm.vllm_backend import start_pool

    pool = start_pool(LLMConfig())
    yield pool
    pool.shutdown()  # before Ray's own shutdown, which must not wait on a live engine
