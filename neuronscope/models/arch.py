"""Where each architecture keeps its MLP neuron activations: one table, no per-model branches."""

from __future__ import annotations

from dataclasses import dataclass
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


_GATED = NeuronSite("model.layers", "mlp.down_proj", "input", "intermediate_size", signed=True)

ARCHITECTURES: dict[str, NeuronSite] = {
    "llama": _GATED,
    "mistral": _GATED,
    "qwen2": _GATED,
    "qwen3": _GATED,
    "gemma": _GATED,
    "gemma2": _GATED,
    "gemma3_text": _GATED,
    "phi3": _GATED,
    "gpt2": NeuronSite("transformer.h", "mlp.act", "output", "n_inner", signed=False),
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
