"""The causal check of each explained mode (``windows.py``: what is ablated where; ``ablate.py``:
the batched forwards; ``stage.py``: the stage, per layer). Does the neuron matter where the mode
says it fires? Its activation is set to its mean (or zero) from the activating token of each of
the mode's windows on, and the next-token distribution compared with the clean one, beside a
random other neuron of the layer ablated on the same windows (the control) and the neuron
ablated on random windows of the corpus."""

from .stage import check_layer, run_causal, verdict
from .windows import LayerPlan, explained_modes

__all__ = ["LayerPlan", "check_layer", "explained_modes", "run_causal", "verdict"]
