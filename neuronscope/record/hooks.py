"""Loading the subject model and capturing MLP neuron activations with forward hooks."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager, suppress

import torch

from ..errors import ModelError
from ..models import arch


class _StopForward(Exception):
    """Raised by the last hook: later layers and the LM head would be wasted work."""


def load_model(path: str, device: str | None = None):
    """(model, device) in eval mode; fp16/bf16 on GPU, fp32 on CPU (bf16 matmuls are slow there)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as e:  # many error types from transformers; keep the cause in the message
        raise ModelError(f"cannot load the config of model {path!r}: {e}") from None
    arch.site(config)  # unsupported architectures fail before the weights are read
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = torch.float32
    from transformers.utils import logging as hf_logging

    # the stage prints its own progress; a weights bar would break into the driver's console
    hf_logging.disable_progress_bar()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
    return model, device


@contextmanager
def capture(model, layers: list[int], neurons: torch.Tensor, sink: Callable[[int, torch.Tensor], None] | None = None):
    """Within the block, ``run(input_ids)`` returns {layer: (B, T, len(neurons)) float32}.

    With ``sink``, each layer's activations go to ``sink(layer, acts)`` as soon as they are
    computed (still in cache, and never all layers at once) and ``run`` returns {}. The forward
    pass stops right after the deepest recorded layer.
    """
    site = arch.site(model.config)
    modules = arch.layer_modules(model)
    last = max(layers)
    got: dict[int, torch.Tensor] = {}
    handles = []

    # every neuron in order (the common whole-layer case): keep the tensor itself, no copy
    everything = len(neurons) == arch.n_neurons(model.config) and bool(
        torch.equal(neurons.cpu(), torch.arange(len(neurons)))
    )

    def keep(layer: int, x: torch.Tensor) -> None:
        x = (x if everything else x.index_select(-1, neurons)).float()
        if sink is None:
            got[layer] = x
        else:
            sink(layer, x)
        if layer == last:
            raise _StopForward

    for layer in layers:
        m = modules[layer]
        if site.capture == "input":
            h = m.register_forward_pre_hook(lambda mod, args, layer=layer: keep(layer, args[0]))
        else:
            h = m.register_forward_hook(lambda mod, args, out, layer=layer: keep(layer, out))
        handles.append(h)

    def run(input_ids: torch.Tensor) -> dict[int, torch.Tensor]:
        got.clear()
        with torch.inference_mode(), suppress(_StopForward):
            model(input_ids=input_ids, use_cache=False)
        return dict(got)

    try:
        yield run
    finally:
        for h in handles:
            h.remove()


@contextmanager
def edit(model, layer: int, fn: Callable[[torch.Tensor], torch.Tensor]):
    """Within the block, every forward pass hands the MLP activations of ``layer`` (B, T, neurons)
    at the recorder's site to ``fn`` and goes on with what it returns: an ablation there ablates
    exactly the activation the records measure."""
    site = arch.site(model.config)
    m = arch.layer_modules(model)[layer]
    if site.capture == "input":
        h = m.register_forward_pre_hook(lambda mod, args: (fn(args[0]), *args[1:]))
    else:
        h = m.register_forward_hook(lambda mod, args, out: fn(out))
    try:
        yield
    finally:
        h.remove()
