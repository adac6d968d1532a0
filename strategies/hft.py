"""Half Fine-Tuning (HFT).

Hui, Zhang, Wang, Xu, Sun & Wu (2025), "HFT: Half Fine-Tuning for Large Language
Models", ACL 2025, arXiv:2404.18466. At the start of every training stage (here:
every experience) half of the parameters are chosen at random *at category
level* (whole matrices, never single entries) and frozen for that stage; the
other half is trained as usual. With the mask ``M_t`` (1 = trainable) of stage t,

    theta_{s+1} = theta_s - eta * M_t ⊙ u_s,

where ``u_s`` is the optimizer's update. The paper reads the frozen half as an
implicit regulariser that keeps the previous stage's solution in half of the
weights. A frozen parameter gets no gradient, no optimizer step and no weight
decay: in ``on_after_backward`` HFT calls ``ctx.protect(name)`` for each of them;
the learner drops their gradients and restores them after the step.

Selection rule (``fraction`` = 0.5 reproduces the paper). A *unit* is one module's
weight and bias together (e.g. ``blocks.0.attn.q``). Units fall into categories;
within a category the units are grouped (one group per transformer block) and
``k = floor(fraction * n_units)`` units are frozen, spread evenly over the groups:
each group freezes ``floor(fraction * group size)`` of its units, the
``k - sum(...)`` left over go, one each, to groups drawn at random, and the
units frozen inside a group are drawn at random. For the paper's LLaMA feed-forward
(3 matrices per layer) this is its rule: 2 of 3 frozen in a random half of the
layers, 1 of 3 in the other half.

* Transformer bodies (``lifelong.platform.transformer``, detected by parameters
  named ``blocks.<i>.attn.{q,k,v,o}``):

  - attention: in every block 2 of the 4 projections q, k, v, o are frozen;
  - feed-forward: in every block 1 of the 2 matrices fc1, fc2 is frozen;
  - norms: in every block 1 of norm1, norm2 is frozen (with ``fraction=0.5`` the
    final norm stays trainable: floor(0.5 * (2 * n_blocks + 1)) = n_blocks);
  - the patch and positional embeddings (``embed``, ``pos_embed``) and the
    classifier head (``head.*``) are always trainable: they are the model's
    interface to new inputs and new classes.
  - any other unit of the body: ``floor(fraction * n)`` of them, at random.

* LLaMA-style language models (``smollm2_135m``, ``hf_causal_lm``; detected by
  parameters named ``layers.<i>.self_attn.{q,k,v,o}_proj``), the model the paper
  is written for (its Figure 2: "we selectively freeze half of the parameters at
  the category-level", drawn on LLaMA 2's block):

  - attention: in every layer 2 of the 4 projections q, k, v, o are frozen;
  - feed-forward: of the 3 matrices gate, up, down, 2 are frozen in a random half
    of the layers and 1 in the other half (floor(1.5 n) over n layers);
  - norms: half of them, 1 of input_layernorm, post_attention_layernorm per layer
    (the final norm stays trainable, as above);
  - embedding and LM head: one category. Untied (LLaMA 2), they are 2 units and
    one of them, drawn at random, is frozen, as in any category. Tied (SmolLM2:
    the LM head *is* the embedding matrix) they are one unit, and
    floor(0.5 * 1) = 0: it trains. That is the category rule applied as is; the
    alternative, freezing the one shared matrix in a random half of the stages,
    would freeze the model's whole input and output interface at once.

  The selection is redrawn at the start of every stage (experience). On a
  pre-trained language model HFT applies from the first stage on:
  ``first_experience_full`` is false unless the experiment sets it. (These rules
  are the ones the paper states for LLaMA; its section text was not available
  offline to quote here.)

* Other bodies (MLP, CNN): the layers with parameters form one group and
  ``floor(fraction * n_layers)`` of them (weight and bias together) are frozen,
  e.g. one of the two Linear layers of ``hidden=[256, 256]``; a one-layer body
  freezes nothing. The head is always trainable.

The selection is drawn from a ``torch.Generator`` seeded from
``(config.seed, experience index)``, so it changes between experiences and is
reproduced exactly after a restore. The paper fine-tunes a *pre-trained* model
in every stage; here the model starts from random weights, so by default
(``first_experience_full=True``) experience 0 trains every parameter and plays
the role of pre-training; HFT starts with experience 1.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from pydantic import Field
from torch import nn

from ._registry import register_strategy
from .base import Context, Strategy, StrategyConfig

_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.(attn|ff)\.\w+$")
_BLOCK_NORM = re.compile(r"(?:^|\.)blocks\.(\d+)\.norm\w*$")
_ATTN_QKVO = re.compile(r"(?:^|\.)blocks\.\d+\.attn\.[qkvo]$")
_LLAMA = re.compile(r"(?:^|\.)layers\.(\d+)\.(self_attn|mlp)\.(\w+)_proj$")
_LLAMA_NORM = re.compile(r"(?:^|\.)layers\.(\d+)\.\w*layernorm$")


class HFTConfig(StrategyConfig):
    """Hyperparameters of Half Fine-Tuning."""

    seed: int = Field(
        0, ge=0, description="Seed of the random selection (with the experience index)."
    )
    fraction: float = Field(
        0.5, gt=0, lt=1, description="Fraction of each category's units frozen (paper: 0.5)."
    )
    first_experience_full: bool = Field(
        True,
        description="Train every parameter in experience 0 (the model is not pre-trained); "
        "False: HFT from the first experience on.",
    )


@register_strategy("hft")
class HFT(Strategy):
    """Freeze a random half of the parameters, category by category, in every experience."""

    Config = HFTConfig
    vectorize = "it freezes layers (ctx.protect), which a vectorised step does not honour"
    config: HFTConfig

    def __init__(self, config: HFTConfig | None = None) -> None:
        super().__init__(config)
        self.experience = -1  # index of the experience the selection belongs to
        self.frozen: list[str] = []  # parameter names frozen in that experience
        self.frozen_numel = 0
        self.total_numel = 0

    def on_experience_start(self, ctx: Context) -> None:
        """Draw this experience's frozen half from ``(seed, experience index)``."""
        index = ctx.experience.index
        if self.config.first_experience_full and index == 0:
            frozen: list[str] = []
        else:
            frozen = select_frozen(
                ctx.model, seed=self.config.seed, experience=index, fraction=self.config.fraction
            )
        params = dict(ctx.model.named_parameters())
        self.experience = index
        self.frozen = frozen
        self.frozen_numel = sum(params[n].numel() for n in frozen)
        self.total_numel = sum(p.numel() for p in params.values())

    def on_after_backward(self, ctx: Context) -> None:
        """Protect every frozen parameter (no gradient, no step, no weight decay)."""
        for name in self.frozen:
            ctx.protect(name)

    def metrics(self) -> dict[str, float]:
        """``frozen_fraction`` (by parameter count) and ``frozen_tensors`` this experience."""
        if self.total_numel == 0:
            return {}
        return {
            "frozen_fraction": self.frozen_numel / self.total_numel,
            "frozen_tensors": float(len(self.frozen)),
        }

    def state_dict(self) -> dict[str, Any]:
        """Return the current selection: experience index, frozen names, parameter counts."""
        return {
            "experience": self.experience,
            "frozen": list(self.frozen),
            "frozen_numel": self.frozen_numel,
            "total_numel": self.total_numel,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the selection saved by :meth:`state_dict`."""
        keys = {"experience", "frozen", "frozen_numel", "total_numel"}
        if set(state) != keys:
            raise ValueError(f"hft: expected state keys {sorted(keys)}, got {sorted(state)}")
        self.experience = int(state["experience"])
        self.frozen = [str(n) for n in state["frozen"]]
        self.frozen_numel = int(state["frozen_numel"])
        self.total_numel = int(state["total_numel"])


def select_frozen(model: nn.Module, *, seed: int, experience: int, fraction: float) -> list[str]:
    """Return the names of the parameters HFT freezes in ``experience`` (module docstring)."""
    categories = _categories(model)
    generator = torch.Generator().manual_seed(_seed(seed, experience))
    frozen_units: set[str] = set()
    for name in sorted(categories):
        frozen_units.update(_draw(list(categories[name].values()), fraction, generator))
    units = _units(model)
    return [p for unit in units if unit in frozen_units for p in units[unit]]


def _seed(seed: int, experience: int) -> int:
    """A 64-bit generator seed from ``(seed, experience)``, free of collisions in practice."""
    return int(np.random.SeedSequence([seed, experience]).generate_state(1, np.uint64)[0])


def _units(model: nn.Module) -> dict[str, list[str]]:
    """Group parameter names into units: ``a.b.weight`` and ``a.b.bias`` form unit ``a.b``."""
    units: dict[str, list[str]] = {}
    for name, _ in model.named_parameters():
        owner, _, leaf = name.rpartition(".")
        units.setdefault(owner if leaf in ("weight", "bias") and owner else name, []).append(name)
    return units


def _categories(model: nn.Module) -> dict[str, dict[str, list[str]]]:
    """Return ``{category: {group: [unit, ...]}}`` of the units HFT may freeze."""
    if any(_LLAMA.search(u) for u in _units(model)):
        return _llama_categories(list(_units(model)))
    units = [u for u in _units(model) if not u.startswith("head.")]
    categories: dict[str, dict[str, list[str]]] = {}

    def add(category: str, group: str, unit: str) -> None:
        categories.setdefault(category, {}).setdefault(group, []).append(unit)

    if not any(_ATTN_QKVO.search(u) for u in units):  # MLP, CNN, plugin bodies
        for unit in units:
            add("layers", "all", unit)
        return categories
    for unit in units:
        leaf = unit.rpartition(".")[2]
        if m := _BLOCK.search(unit):
            add(m.group(2), m.group(1), unit)
        elif m := _BLOCK_NORM.search(unit):
            add("norm", m.group(1), unit)
        elif leaf.startswith("norm"):
            add("norm", "final", unit)
        elif "embed" in leaf:
            continue  # patch and positional embeddings: always trainable
        else:
            add("other", "all", unit)
    return categories


def _llama_categories(units: list[str]) -> dict[str, dict[str, list[str]]]:
    """The categories of a LLaMA-style language model (module docstring)."""
    categories: dict[str, dict[str, list[str]]] = {}
    for unit in units:
        leaf = unit.rpartition(".")[2]
        if m := _LLAMA.search(unit):
            category, group = ("attn" if m.group(2) == "self_attn" else "ff"), m.group(1)
        elif m := _LLAMA_NORM.search(unit):
            category, group = "norm", m.group(1)
        elif leaf == "norm":
            category, group = "norm", "final"
        elif leaf in ("embed_tokens", "lm_head"):
            category, group = "embedding", "all"
        else:
            category, group = "other", "all"
        categories.setdefault(category, {}).setdefault(group, []).append(unit)
    return categories


def _draw(groups: list[list[str]], fraction: float, generator: torch.Generator) -> Iterable[str]:
    """Freeze ``floor(fraction * n)`` units spread evenly over ``groups`` (module docstring)."""
    total = sum(len(g) for g in groups)
    counts = [math.floor(fraction * len(g)) for g in groups]
    extra = math.floor(fraction * total) - sum(counts)
    if extra > 0:
        open_groups = [i for i, g in enumerate(groups) if counts[i] < len(g)]
        for j in torch.randperm(len(open_groups), generator=generator)[:extra].tolist():
            counts[open_groups[j]] += 1
    for group, count in zip(groups, counts, strict=True):
        for j in torch.randperm(len(group), generator=generator)[:count].tolist():
            yield group[j]
