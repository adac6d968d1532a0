"""Learning without Forgetting (LwF).

Li & Hoiem (2016/2017), "Learning without Forgetting", ECCV 2016 / TPAMI 2017,
arXiv:1606.09282. At the end of each experience the model is frozen as a
teacher ``f_old``; while learning later experiences the current model ``f`` is
distilled towards the teacher's soft outputs on the *new* inputs (no stored
data), restricted to the classes seen so far:

    L_lwf = lambda * KL( softmax(f_old(x)[:, C] / T) || softmax(f(x)[:, C] / T) ),

averaged over the batch ("batchmean"), with temperature ``T`` and ``C`` the
classes seen in earlier experiences. The KL divergence and the paper's
cross-entropy with soft targets differ by the teacher's entropy, a constant,
so their gradients are equal.

This matches Avalanche's ``LearningWithoutForgetting._distillation_loss`` and
``_lwf_penalty`` (``avalanche/training/regularization.py``; used by
``LwFPlugin``), defaults ``alpha = 1``, ``temperature = 2``:

- the logits are sliced to the previously seen classes *before* the softmax
  ("active units"), and there is no ``T^2`` factor;
- single-head model: one KL over the union of all classes seen so far, on the
  logits of the current batch;
- multi-head model: one KL per previously seen task, on that task's head
  (``classify(h, t)``) restricted to the classes seen for that task, summed over
  tasks (Avalanche distils every previous head of a ``MultiTaskModule``). The
  slice keeps only the task's own, unmasked classes, so the ``-inf`` logits of
  the masked heads never enter a softmax (no NaN).

The teacher's soft targets depend only on the sample: when the learner passes
``batch.index`` (its batches are drawn from the experience's in-memory training
set), they are computed once per experience for the whole training set, in
chunks, and each step looks its batch up by index: one forward pass of the
teacher per sample and experience instead of one per sample and epoch. Without
an index (any other caller) the teacher runs on the batch, as before. Both give
the same targets up to rounding.

Deviation: the teacher runs in eval mode (Avalanche's deep copy keeps the
training mode); the two agree for models without dropout or batch norm, which
includes every built-in model. The teacher is kept in the state as plain
tensors (its ``state_dict``) and rebuilt as ``copy.deepcopy(model)`` +
``load_state_dict`` after a restore: no pickled module.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import AliasChoices, Field
from torch import Tensor, nn

from ._registry import register_strategy
from .base import Batch, Context, Strategy, StrategyConfig


class LwFConfig(StrategyConfig):
    """Hyperparameters of Learning without Forgetting."""

    lambda_: float = Field(
        1.0,
        ge=0,
        alias="lambda",
        validation_alias=AliasChoices("lambda", "alpha", "lambda_"),
        description="Distillation weight (YAML key: `lambda`; Avalanche's `alpha`, default 1).",
    )
    temperature: float = Field(
        2.0, gt=0, description="Softmax temperature T of the distillation (Avalanche default 2)."
    )


@register_strategy("lwf")
class LwF(Strategy):
    """Distil the model of the previous experiences into the current one on new data."""

    formulas = (
        "soft_targets",
        "distil",
        "distillation",
    )
    Config = LwFConfig
    vectorize = "per_trial"  # each trial distils its own teacher on its own batch
    config: LwFConfig
    language_models = (
        "it distils the logits of the classes seen so far; a text stream has no classes"
    )

    def __init__(self, config: LwFConfig | None = None) -> None:
        super().__init__(config)
        self.seen: dict[int, list[int]] = {}  # task id -> sorted classes seen for it
        self.teacher_state: dict[str, Tensor] | None = None  # the teacher's weights
        self._teacher: nn.Module | None = None  # rebuilt from teacher_state on demand
        self._index: dict[int, Tensor] = {}  # task id -> class index tensor on the device
        # (experience, teacher) -> per-sample soft targets over its training set
        self._cache: tuple[object, object, list[tuple[int | None, Tensor]]] | None = None

    # ------------------------------------------------------------------ hooks
    def on_experience_start(self, ctx: Context) -> None:
        """Rebuild the teacher after a restore (the state holds only its tensors)."""
        if self.teacher_state is not None and self._teacher is None:
            self._teacher = self._build_teacher(ctx.model, self.teacher_state)
        self._cache = None

    def on_experience_end(self, ctx: Context) -> None:
        """Freeze the current model as the teacher and record this experience's classes."""
        exp = ctx.experience
        seen = set(self.seen.get(exp.task_id, [])) | set(exp.classes)
        self.seen[exp.task_id] = sorted(seen)
        self._index = {}
        state = {k: v.detach().clone() for k, v in ctx.model.state_dict().items()}
        self.teacher_state = state
        self._teacher = self._build_teacher(ctx.model, state)
        self._cache = None

    def loss_terms(self, ctx: Context, batch: Batch) -> dict[str, Tensor]:
        """Return ``{"lwf": lambda * KL(teacher || student)}`` over the seen classes.

        Returns nothing until a teacher exists (during the first experience).
        """
        if self.teacher_state is None:
            return {}
        if self._teacher is None:
            self._teacher = self._build_teacher(ctx.model, self.teacher_state)
        multi_head = _is_multi_head(ctx.model)
        device = batch.logits.device
        if batch.index is None:
            targets = self.soft_targets(batch.x, batch.task_id, multi_head, device)
        else:
            targets = [
                (t, q.index_select(0, batch.index))
                for t, q in self._cached_targets(ctx, batch.task_id, multi_head, device)
            ]
        if multi_head:
            loss = batch.logits.new_zeros(())
            for t, q in targets:
                new = ctx.model.classify(batch.features, t)
                loss = loss + self.distil(new.index_select(1, self._classes(t, device)), q)
        else:
            new = batch.logits.index_select(1, self._classes(None, device))
            loss = self.distil(new, targets[0][1])
        return {"lwf": self.config.lambda_ * loss}

    @torch.no_grad()
    def soft_targets(
        self, x: Tensor, task_id: int, multi_head: bool, device: torch.device
    ) -> list[tuple[int | None, Tensor]]:
        """The teacher's ``softmax(f_old(x)[:, C] / T)`` on ``x``.

        One ``(task, targets)`` pair per previously seen task for a multi-head model
        (that task's head and classes), else one ``(None, targets)`` pair.
        """
        teacher: Any = self._teacher
        h = teacher.features(x)
        t = self.config.temperature
        if multi_head:
            heads = [(k, teacher.classify(h, k)) for k in sorted(self.seen)]
            return [
                (k, F.softmax(old.index_select(1, self._classes(k, device)) / t, dim=1))
                for k, old in heads
            ]
        old = teacher.classify(h, task_id).index_select(1, self._classes(None, device))
        return [(None, F.softmax(old / t, dim=1))]

    def _cached_targets(
        self, ctx: Context, task_id: int, multi_head: bool, device: torch.device
    ) -> list[tuple[int | None, Tensor]]:
        """:meth:`soft_targets` on the whole training set of ``ctx.experience``, cached."""
        cache = self._cache
        if cache is None or cache[0] is not ctx.experience or cache[1] is not self._teacher:
            x = ctx.experience.x_train
            chunks = [
                self.soft_targets(x[i : i + _CHUNK], task_id, multi_head, device)
                for i in range(0, len(x), _CHUNK)
            ]
            whole = [
                (t, torch.cat([c[k][1] for c in chunks])) for k, (t, _) in enumerate(chunks[0])
            ]
            cache = self._cache = (ctx.experience, self._teacher, whole)
        return cache[2]

    def distil(self, new_logits: Tensor, soft_targets: Tensor) -> Tensor:
        """Return ``KL(soft_targets || softmax(new/T))``, summed over classes, batch mean."""
        log_p = F.log_softmax(new_logits / self.config.temperature, dim=1)
        return F.kl_div(log_p, soft_targets, reduction="batchmean")

    def distillation(self, new_logits: Tensor, old_logits: Tensor) -> Tensor:
        """Return ``KL(softmax(old/T) || softmax(new/T))``, summed over classes, batch mean."""
        return self.distil(new_logits, F.softmax(old_logits / self.config.temperature, dim=1))

    # ------------------------------------------------------------ diagnostics
    def metrics(self) -> dict[str, float]:
        """Return ``{"seen_classes": number of (task, class) pairs distilled}``."""
        return {"seen_classes": float(sum(len(c) for c in self.seen.values()))}

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Return ``{"teacher": {name: tensor}, "seen": {str(task id): [class, ...]}}``."""
        return {
            "teacher": dict(self.teacher_state) if self.teacher_state is not None else {},
            "seen": {str(t): list(c) for t, c in self.seen.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the teacher's weights and the seen classes; the module is rebuilt lazily."""
        if set(state) != {"teacher", "seen"}:
            raise ValueError(f"lwf: expected state keys ['seen', 'teacher'], got {sorted(state)}")
        teacher = state["teacher"]
        self.teacher_state = {k: v.detach().clone() for k, v in teacher.items()} or None
        self.seen = {int(t): [int(c) for c in cs] for t, cs in state["seen"].items()}
        self._teacher = None
        self._index = {}
        self._cache = None

    # --------------------------------------------------------------- helpers
    def _classes(self, task_id: int | None, device: torch.device) -> Tensor:
        """Index of the classes seen for ``task_id`` (``None``: all tasks), cached per device."""
        key = -1 if task_id is None else task_id
        idx = self._index.get(key)
        if idx is None or idx.device != device:
            if task_id is None:
                classes = sorted({c for cs in self.seen.values() for c in cs})
            else:
                classes = self.seen[task_id]
            idx = torch.tensor(classes, dtype=torch.long, device=device)
            self._index[key] = idx
        return idx

    @staticmethod
    def _build_teacher(model: nn.Module, state: dict[str, Tensor]) -> nn.Module:
        """Return a frozen, eval-mode copy of ``model`` holding the weights ``state``."""
        teacher = copy.deepcopy(model)
        teacher.load_state_dict(state)
        for p in teacher.parameters():
            p.requires_grad_(False)
            p.grad = None
        return teacher.eval()


_CHUNK = 4096  # samples per teacher forward pass when caching soft targets


def _is_multi_head(model: nn.Module) -> bool:
    """Whether ``model``'s head masks its logits per task (built-in multi-head models)."""
    return bool(getattr(getattr(model, "head", None), "multi_head", False))
