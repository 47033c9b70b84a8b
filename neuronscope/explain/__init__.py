"""The NeuronScope explain workflow (arXiv 2601.03671): deconstruct, cluster, explain, simulate,
refine, plus the single-pass baseline (Bills et al. 2023), per neuron, fanned out over Ray."""
