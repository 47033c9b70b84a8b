"""The explain stage (arXiv 2601.03671): per neuron, deconstruct, cluster, explain, simulate,
refine, plus the single-pass baseline (Bills et al. 2023); fanned out over Ray.

``explain_neuron`` runs one neuron's workflow (``workflow.py``; its stages are ``NeuronWork``'s
in ``neuron.py``, its judges in ``judges.py``); ``explain_run`` schedules the selected neurons of
a run (``schedule.py``, ``budget.py``); ``estimate_run`` is ``--dry-run`` (``dryrun.py``). What
the stage writes is read back through ``neuronscope.results``.
"""

from .dryrun import Estimate, estimate_run
from .neuron import NeuronOptions
from .schedule import RunSummary, explain_run
from .task import NeuronSummary, RunContext
from .workflow import NeuronResult, explain_neuron

__all__ = [
    "Estimate",
    "NeuronOptions",
    "NeuronResult",
    "NeuronSummary",
    "RunContext",
    "RunSummary",
    "estimate_run",
    "explain_neuron",
    "explain_run",
]
