"""Continual-learning strategies: the :class:`Strategy` hook API and the built-in methods.

A strategy is one short file reading like its paper: a typed config, hooks
named after the moment they run (:data:`HOOKS`), named loss terms, and a
``state_dict`` of plain tensors. Strategies are registered by name and built
from validated hyperparameters::

    from lifelong.strategies import build_strategy
    ewc = build_strategy("ewc", {"lambda": 10.0, "mode": "online", "gamma": 0.9})

Built-in strategies:

- ``naive``: plain fine-tuning, the lower-bound baseline.
- ``l2``: L2 penalty towards the previous (Smith et al. 2023) or initial
  (L2-init, Kumar et al. 2023) weights.
- ``ewc``: Elastic Weight Consolidation (Kirkpatrick et al. 2017) and online EWC
  (Schwarz et al. 2018).
- ``center_loss``: centre-loss regularisation of the penultimate features with
  frozen centres and head (Olpadkar & Gavas 2021).
- ``spectral``: spectral regularisation, sigma_max of every layer toward 1
  (Lewandowski et al. 2025).
- ``lwf``: Learning without Forgetting, distillation on the previous model's
  outputs (Li & Hoiem 2016).
- ``si``: Synaptic Intelligence, path-integral importance (Zenke et al. 2017).
- ``mas``: Memory Aware Synapses, output-sensitivity importance (Aljundi et al. 2018).
- ``dst``: dynamic sparse training, a sparse mask per task with isolation
  (Yildirim et al. 2024).
- ``hft``: half fine-tuning, half of the parameters frozen per experience at
  category level (Hui et al. 2025).
- ``wasserstein_init``: Wasserstein-2 distance of each layer's weight distribution
  to its initial one (Lewandowski et al. 2024, first version).
"""

from . import (  # noqa: F401  (importing registers the built-in strategies)
    center_loss,
    dst,
    ewc,
    hft,
    l2,
    lwf,
    mas,
    naive,
    si,
    spectral,
    wasserstein_init,
)
from ._registry import STRATEGIES, build_strategy, get_strategy, register_strategy
from .base import HOOKS, METHODS, Batch, Context, Strategy, StrategyConfig

__all__ = [
    "HOOKS",
    "METHODS",
    "STRATEGIES",
    "Batch",
    "Context",
    "Strategy",
    "StrategyConfig",
    "build_strategy",
    "get_strategy",
    "register_strategy",
]
