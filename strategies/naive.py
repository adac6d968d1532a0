"""Naive fine-tuning: the lower-bound baseline.

The model is trained on each experience in turn with the task loss alone,

    L(theta) = CE(f_theta(x), y),

and nothing protects what earlier experiences taught it, so it forgets them
(catastrophic forgetting; McCloskey & Cohen 1989, French 1999). Every
continual-learning method should beat it on average forgetting; joint training
on all experiences at once is the matching upper bound.
"""

from __future__ import annotations

from ._registry import register_strategy
from .base import Strategy, StrategyConfig


class NaiveConfig(StrategyConfig):
    """Naive fine-tuning has no hyperparameters of its own."""


@register_strategy("naive")
class Naive(Strategy):
    """Plain fine-tuning: adds no loss term and keeps no state."""

    Config = NaiveConfig
    vectorize = "stacked"  # no hooks: the task loss alone
