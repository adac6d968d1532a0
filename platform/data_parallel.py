"""Data parallelism for one learner: the batch is split over workers, gradients summed.

Every worker holds the whole stream and the same model, draws the same batch
order (same seed) and trains on its contiguous slice of every batch. Each
worker's loss is weighted by its share of the batch (examples, or scored tokens
on a text stream), so that after the gradients are summed over workers
(``all_reduce`` after the backward pass, what DDP does) every worker holds
the gradient of the whole batch's mean loss and takes the same optimizer
step. The same weighting makes a strategy's penalty count once
(``sum_r w_r * P = P``) and a batch-mean term the whole batch's mean. With
one worker nothing of this runs.

Evaluation is split too: each worker scores the experiences ``j`` with
``j % world_size == rank`` and the row is summed. The process group is the
one Ray Train's ``TorchTrainer`` sets up (gloo on CPU, NCCL on GPUs).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn


@dataclass(frozen=True)
class Shard:
    """A worker's slice of a batch and its weight (share of the batch's loss)."""

    x: Tensor
    y: Tensor
    index: Tensor | None
    weight: float
    """``n_local / n_batch`` (0 for a stand-in row when the batch has fewer rows than workers)."""


class DataParallel:
    """A worker's place in a data-parallel learner (``rank`` of ``world_size``).

    Args:
        rank: this worker's rank in the default process group.
        world_size: the number of workers.
    """

    def __init__(self, rank: int, world_size: int, gpu: int | None = None) -> None:
        if not dist.is_initialized():
            raise RuntimeError("data-parallel training needs torch.distributed's process group")
        self.rank = rank
        self.world_size = world_size
        self.gpu = gpu
        """This worker's GPU index (NCCL: one GPU per worker), or ``None`` on the CPU."""

    @classmethod
    def from_process_group(cls) -> DataParallel:
        """The data-parallel place of this process in the initialised default group.

        Under NCCL the worker's GPU is the current CUDA device, which Ray Train
        sets for each worker before the training function runs.
        """
        nccl = dist.get_backend() == "nccl"
        gpu = torch.cuda.current_device() if nccl else None
        return cls(dist.get_rank(), dist.get_world_size(), gpu)

    # ------------------------------------------------------------ training
    def shard(self, x: Tensor, y: Tensor, index: Tensor | None, scored: Tensor | None) -> Shard:
        """The contiguous slice of a batch that this worker trains on.

        ``scored``: on a text stream, the mask of scored (response) positions; the
        weight is then the share of scored tokens, else of examples. A batch with
        fewer rows than workers gives the surplus workers its first row at weight
        0, so every worker runs the same steps (and collectives).
        """
        n = y.shape[0]
        bounds = [n * r // self.world_size for r in range(self.world_size + 1)]
        lo, hi = bounds[self.rank], bounds[self.rank + 1]
        if hi == lo:  # more workers than rows: a stand-in row that adds nothing
            return Shard(x[:1], y[:1], None if index is None else index[:1], 0.0)
        part = slice(lo, hi)
        if scored is None:
            weight = (hi - lo) / n
        else:
            # One host sync per step, as the text step's boolean index already costs.
            # A batch that scores no token at all has a NaN mean loss, as in one process.
            total = int(scored.sum())
            weight = int(scored[part].sum()) / total if total else float("nan")
        return Shard(x[part], y[part], None if index is None else index[part], weight)

    def all_reduce_gradients(self, params: Sequence[nn.Parameter]) -> None:
        """Sum every parameter's gradient over the workers, in place.

        One small all-reduce first says which parameters have a gradient on any
        worker: one without a gradient anywhere keeps none (SGD and Adam then
        skip it, as in one process); one with a gradient on some worker gets the
        sum, zeros standing in where a worker has none. The gradients are then
        summed in place, all launched at once (``async_op``) and awaited: no
        flat copy, whose fresh buffer per step cost SmolLM2 more than the sum
        itself on gloo.
        """
        trainable = [p for p in params if p.requires_grad]
        if not trainable:
            return
        device = trainable[0].device
        present = torch.tensor(
            [p.grad is not None for p in trainable], dtype=torch.int32, device=device
        )
        dist.all_reduce(present, op=dist.ReduceOp.MAX)
        pending = []
        for p, anywhere in zip(trainable, present.tolist(), strict=True):
            if not anywhere:
                continue
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            pending.append(dist.all_reduce(p.grad, async_op=True))
        for work in pending:
            work.wait()

    def sum(self, value: Tensor) -> Tensor:
        """``value`` summed over the workers (a new tensor; ``value`` is left as it was)."""
        out = value.clone()
        dist.all_reduce(out)
        return out

    def check_same_terms(self, lengths: dict[str, int], device: torch.device) -> None:
        """Fail on every worker alike unless all logged the same loss terms, as often.

        A strategy whose terms depend on the data of a worker's slice (a term only
        for some batches) would otherwise make the workers' collectives disagree.
        """
        names = "\0".join(lengths)
        signature = [len(lengths), sum(lengths.values()), zlib.crc32(names.encode())]
        mine = torch.tensor(signature, dtype=torch.int64, device=device)
        high, low = mine.clone(), -mine
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        dist.all_reduce(low, op=dist.ReduceOp.MAX)
        if not torch.equal(high, -low):
            raise RuntimeError(
                f"the data-parallel workers logged different loss terms this epoch (worker "
                f"{self.rank}: {lengths}); a strategy whose terms depend on each worker's "
                "slice of the batch cannot train over several workers: set its class "
                "attribute data_parallel to the reason, or resources.workers to 1"
            )

    def any(self, flag: bool, device: torch.device) -> bool:
        """Whether ``flag`` is true on any worker (all workers get the same answer)."""
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def sync_module(self, module: nn.Module) -> None:
        """Give every worker rank 0's parameters and buffers (identical starting points)."""
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src=0)

    # ---------------------------------------------------------- evaluation
    def mine(self, items: Sequence[int]) -> list[int]:
        """The items (experiences, batches) this worker evaluates: ``j % world_size == rank``."""
        return [j for j in items if j % self.world_size == self.rank]
