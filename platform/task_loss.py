"""The task loss of a training batch: softmax cross-entropy, or BCE over the seen classes.

A text batch (:mod:`lifelong.scenarios.text`) has one label per position,
``-100`` where nothing is scored: its loss is the causal-LM cross-entropy over
the scored positions (:func:`lm_cross_entropy`) and its score the exact match of
each example (:func:`exact_match`).

``training.task_loss: bce_seen`` is the classification loss of Smith et al.'s
reference code for "A Closer Look at Rehearsal-Free Continual Learning"
(2023): the sigmoid of each logit of a class seen so far against the one-hot
label, averaged over samples and classes (``nn.BCELoss()`` of
``sigmoid(logits[:, :seen])``). Classes not yet seen get no gradient, so
prediction then ranks the seen classes only (:func:`seen_mask`). In a
multi-head model the loss covers the current task's classes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def seen_mask(classes: Iterable[Sequence[int]], n_classes: int, device: torch.device) -> Tensor:
    """A bool mask over the label space: True for every class in ``classes``' experiences."""
    mask = torch.zeros(n_classes, dtype=torch.bool)
    for c in classes:
        mask[list(c)] = True
    return mask.to(device)


def bce_seen(logits: Tensor, y: Tensor, columns: Tensor) -> Tensor:
    """Mean binary cross-entropy of ``sigmoid(logits[:, columns])`` against one-hot ``y``."""
    target = (y[:, None] == columns[None, :]).to(logits.dtype)
    return F.binary_cross_entropy_with_logits(logits[:, columns], target)


IGNORE = -100
"""The label of an unscored position of a text batch (as in ``F.cross_entropy``)."""


def lm_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy of next-token ``logits`` ``(N, L, V)`` over the scored positions."""
    return F.cross_entropy(logits.flatten(0, -2), labels.flatten(), ignore_index=IGNORE)


def exact_match(logits: Tensor, labels: Tensor) -> Tensor:
    """Per example, whether every scored position's label is the argmax of ``logits``.

    ``logits``: every position's, ``(N, L, V)``, or the scored positions' only,
    ``(n_scored, V)`` in row-major order (what the learner computes).
    """
    scored = labels != IGNORE
    if logits.ndim == labels.ndim + 1:
        logits = logits[scored]
    wrong = (logits.argmax(-1) != labels[scored]).float()
    rows = scored.nonzero()[:, 0]
    misses = torch.zeros(labels.shape[0], device=labels.device).index_add_(0, rows, wrong)
    return misses == 0
