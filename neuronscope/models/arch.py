"""Where each architecture keeps its MLP neuron activations and what each neuron writes: one
table, no per-model branches."""

from __future__ import annotations

from dataclasses import dataclass, replace
from operator import attrgetter

from ..errors import ModelError


@dataclass(frozen=True)
class NeuronSite:
    layers: str  # dotted path from the CausalLM to its list of decoder blocks
    module: str  # dotted path inside one block to the hooked module
    capture: str  # "input": the module's first positional input; "output": its output
    width: str  # config attribute holding the number of MLP neurons per layer
    # the activation takes both signs in earnest: a gated MLP's act(gate) x up is as often
    # strongly negative as positive; GELU's output is bounded below (about -0.17)
    signed: bool
    # the output side: the module inside one block that writes the neurons into the residual
    # stream, and whether its weight holds a row per neuron (GPT-2's Conv1D, (neurons, d_model))
    # instead of a column (nn.Linear, (d_model, neurons))
    down: str
    down_rows: bool
    final_norm: str  # dotted path from the CausalLM to the norm before the LM head
    norm_offset: float = 0.0  # that norm scales by offset + weight (Gemma's RMSNorm: 1 + weight)
    norm_centers: bool = False  # it subtracts the mean first (LayerNorm; RMSNorm does not)


_GATED = NeuronSite(
    "model.layers",
    "mlp.down_proj",
    "input",
    "intermediate_size",
    signed=True,
    down="mlp.down_proj",
    down_rows=False,
    final_norm="model.norm",
)
_GEMMA = replace(_GATED, norm_offset=1.0)

ARCHITECTURES: dict[str, NeuronSite] = {
    "llama": _GATED,
    "mistral": _GATED,
    "qwen2": _GATED,
    "qwen3": _GATED,
    "gemma": _GEMMA,
    "gemma2": _GEMMA,
    "gemma3_text": _GEMMA,
    "phi3": _GATED,
    "gpt2": NeuronSite(
        "transformer.h",
        "mlp.act",
        "output",
        "n_inner",
        signed=False,
        down="mlp.c_proj",
        down_rows=True,
        final_norm="transformer.ln_f",
        norm_centers=True,
    ),
}


def site(config) -> NeuronSite:
    mt = getattr(config, "model_type", "")
    try:
        return ARCHITECTURES[mt]
    except KeyError:
        name = getattr(config, "_name_or_path", "") or "the model"
        raise ModelError(
            f"{name} has an unsupported model_type {mt!r}: NeuronScope knows where the MLP neurons are for "
            f"{sorted(ARCHITECTURES)}"
        ) from None


def signed(config) -> bool:
    """Whether the architecture's neuron activations are signed (gated MLPs)."""
    return site(config).signed


def _text_config(config):
    # multimodal wrappers (e.g. Gemma 3) keep the decoder's sizes in a text sub-config
    return getattr(config, "text_config", None) or config


def n_layers(config) -> int:
    return int(_text_config(config).num_hidden_layers)


def n_neurons(config) -> int:
    cfg = _text_config(config)
    width = getattr(cfg, site(config).width, None)
    # GPT-2 leaves n_inner unset to mean 4 * hidden size
    return int(width) if width is not None else 4 * int(cfg.hidden_size)


def layer_modules(model) -> list:
    """The hooked module of every decoder block, in layer order."""
    s = site(model.config)
    blocks = attrgetter(s.layers)(model)
    return [attrgetter(s.module)(b) for b in blocks]


def write_directions(model, layer: int):
    """(neurons, d_model): what each MLP neuron of ``layer`` adds to the residual stream per unit
    of activation, its column of the down projection (a row of GPT-2's Conv1D); a view, no copy."""
    s = site(model.config)
    weight = attrgetter(s.down)(attrgetter(s.layers)(model)[layer]).weight
    return weight if s.down_rows else weight.T


def final_norm_scale(model):
    """(d_model,): the elementwise scale of the norm before the LM head (its bias, a constant
    shift of every logit, is left out)."""
    s = site(model.config)
    weight = attrgetter(s.final_norm)(model).weight
    return weight + s.norm_offset if s.norm_offset else weight


def final_norm_centers(config) -> bool:
    """Whether the final norm subtracts the mean of its input first (LayerNorm)."""
    return site(config).norm_centers


def unembedding(model):
    """(vocab, d_model): the LM head's weight (the input embeddings where the model ties them)."""
    return model.get_output_embeddings().weight
