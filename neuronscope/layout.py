"""Where a run keeps what: its folders and keys, in one place, for every reader and writer.

```
manifest.json                                  how the run was made, where each stage stands
records/layer_LLL/part-SSSSS.parquet           the record stage (schema RECORDS)
stats/layer_LLL/part-SSSSS.parquet             (schema STATS)
output_tokens/layer_LLL/part-SSSSS.parquet     (schema OUTPUT_TOKENS): the same shards
explanations/layer_LLL/neuron_NNNNN.parquet    the explain stage (schema EXPLANATIONS); later merged
transcripts/layer_LLL/neuron_NNNNN.jsonl       into parts, ``part-A-B_C.EXT`` (``parts.py``)
llm_cache/layer_LLL/neuron_NNNNN.parquet
causal/layer_LLL/part-00000.parquet            the causal stage (schema CAUSAL): a part per layer
locks/STAGE.json                               the process that holds a stage (``lease.py``)
atlas/                                         the atlas, unless built elsewhere
dry-run-XXXXXXXX/                              a dry run's scratch run, removed after it
```
Folder names are written without their slash; ``prefix`` gives the listing prefix.
"""

from __future__ import annotations

MANIFEST = "manifest.json"
RECORDS = "records"
STATS = "stats"
OUTPUT_TOKENS = "output_tokens"
EXPLANATIONS = "explanations"
TRANSCRIPTS = "transcripts"
LLM_CACHE = "llm_cache"
CAUSAL = "causal"
LOCKS = "locks"
ATLAS = "atlas"
DRY_RUN = "dry-run-"


def prefix(folder: str) -> str:
    """The folder as a prefix to list or read: ``records/``."""
    return folder + "/"


def layer_dir(folder: str, layer: int) -> str:
    return f"{folder}/layer_{layer:03d}/"


def neuron_key(folder: str, ext: str, layer: int, neuron: int, failed: bool = False) -> str:
    """A neuron's own object in a per-neuron folder (``.failed``: its workflow failed)."""
    return f"{layer_dir(folder, layer)}neuron_{neuron:05d}{'.failed' if failed else ''}{ext}"


def records_key(layer: int, part: int = 0) -> str:
    return f"{layer_dir(RECORDS, layer)}part-{part:05d}.parquet"


def stats_key(layer: int, part: int = 0) -> str:
    return f"{layer_dir(STATS, layer)}part-{part:05d}.parquet"


def output_tokens_key(layer: int, part: int = 0) -> str:
    return f"{layer_dir(OUTPUT_TOKENS, layer)}part-{part:05d}.parquet"


def causal_key(layer: int) -> str:
    """The causal check of every explained neuron of the layer, in one part."""
    return f"{layer_dir(CAUSAL, layer)}part-00000.parquet"


def explanation_key(layer: int, neuron: int, failed: bool = False) -> str:
    return neuron_key(EXPLANATIONS, ".parquet", layer, neuron, failed)


def transcript_key(layer: int, neuron: int) -> str:
    return neuron_key(TRANSCRIPTS, ".jsonl", layer, neuron)


def cache_key(layer: int, neuron: int) -> str:
    """The neuron's own LLM response cache object."""
    return neuron_key(LLM_CACHE, ".parquet", layer, neuron)


def lease_key(stage: str) -> str:
    return f"{LOCKS}/{stage}.json"


def dry_run_folder(tag: str) -> str:
    return f"{DRY_RUN}{tag}"
