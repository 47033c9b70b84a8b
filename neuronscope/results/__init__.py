"""What the stages leave in a run, read and written: activation records, explanation rows and
transcripts (typed entries), per neuron or as one table. The atlas and the commands read a run
through here; the explain stage writes through here."""

from .outputs import (
    iter_transcripts,
    jsonable,
    jsonl_lines,
    neuron_explanations,
    part_line,
    part_line_prefix,
    read_entries,
    read_explanations,
    read_transcript,
    rows_table,
    write_result,
    write_rows,
    write_transcript,
)
from .records import (
    RecordsIndex,
    code,
    layer_keys,
    load_records,
    neuron_extremes,
    output_token_keys,
    read_neuron,
    read_output_tokens,
    uncode,
)
from .tables import neuron_rows, read_stage

__all__ = [
    "RecordsIndex",
    "code",
    "iter_transcripts",
    "jsonable",
    "jsonl_lines",
    "layer_keys",
    "load_records",
    "neuron_explanations",
    "neuron_extremes",
    "neuron_rows",
    "output_token_keys",
    "part_line",
    "part_line_prefix",
    "read_entries",
    "read_explanations",
    "read_neuron",
    "read_output_tokens",
    "read_stage",
    "read_transcript",
    "rows_table",
    "uncode",
    "write_result",
    "write_rows",
    "write_transcript",
]
