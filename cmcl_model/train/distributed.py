"""Data-parallel training on torch.distributed: process groups, gathered embeddings, global
batch norm, and the launcher behind ``cmcl train --nproc N``.

One trainer (:func:`cmcl_model.train.loop.train`) runs in every process. With N processes (ranks)
each one takes its contiguous 1/N share of every global batch, the model is wrapped in
:class:`~torch.nn.parallel.DistributedDataParallel` (gloo on CPU, NCCL on CUDA), and the
pieces that would otherwise make N ranks train a different objective than one process are
replaced:

* contrastive losses see the whole global batch: embeddings are all-gathered *with their
  gradients* (:func:`torch.distributed.nn.functional.all_gather`, as CLIP-style training does;
  its backward sums the gradients of every rank's copy into the owner's slot);
* batch norm normalises with the statistics of the global batch (:class:`GlobalBatchNorm`,
  statistics all-reduced with gradients), so a rank's forward equals the matching rows of the
  one-process forward; torch's ``SyncBatchNorm`` does the same on GPUs only;
* every term is either computed identically on every rank from gathered tensors, or is a sum of
  per-rank parts that each rank scales by N (DDP averages gradients over ranks).

The collectives of the loss and of batch norm run on their own process group so that they
never interleave with DDP's gradient buckets.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = [
    "DistContext",
    "init_from_env",
    "gather_rows",
    "all_reduce_sum",
    "broadcast_object",
    "any_rank",
    "gather_counts",
    "ShardedBatches",
    "GlobalBatchNorm",
    "convert_batchnorm",
    "torchrun_command",
    "launch",
]


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a data-parallel run.

    Attributes
    ----------
    rank, world_size : int
        This process's rank and the number of processes.
    group : ProcessGroup
        The group used for the loss's and batch norm's collectives (not DDP's).
    """

    rank: int
    world_size: int
    group: object

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device: torch.device) -> DistContext | None:
    """Join the process group torchrun describes (``WORLD_SIZE``, ``RANK``, ``MASTER_ADDR``...).

    Returns None when this is a single process (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``, and no
    group initialised by the caller). Backend: NCCL for CUDA, gloo otherwise; on CUDA each
    process takes the GPU ``LOCAL_RANK``.
    """
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return None
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    world = dist.get_world_size()
    if world <= 1:
        return None
    group = dist.new_group(backend=dist.get_backend())
    return DistContext(rank=dist.get_rank(), world_size=world, group=group)


def gather_rows(x: Tensor, ctx: DistContext | None) -> Tensor:
    """Concatenate every rank's ``x`` (same shape on every rank) in rank order, with gradients.

    Shapes: (b, ...) -> (world_size * b, ...). The backward sums, into this rank's rows, the
    gradients that every rank's copy of them received.
    """
    if ctx is None:
        return x
    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "deprecated" in favour of a private module
        return torch.cat(all_gather(x.contiguous(), group=ctx.group), dim=0)


def all_reduce_sum(x: Tensor, ctx: DistContext | None) -> Tensor:
    """Sum of ``x`` over ranks, differentiable (the backward sums the gradients too)."""
    if ctx is None:
        return x
    from torch.distributed.nn.functional import all_reduce

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return all_reduce(x, group=ctx.group)


def broadcast_object(obj: object, ctx: DistContext | None) -> object:
    """Rank 0's ``obj`` on every rank (picklable objects: metrics, decisions)."""
    if ctx is None:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=ctx.group)
    return box[0]


def any_rank(flag: bool, ctx: DistContext | None) -> bool:
    """True on every rank if ``flag`` is true on any (e.g. a time limit reached on one)."""
    if ctx is None:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    if dist.get_backend(ctx.group) == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=ctx.group)
    return bool(t.item() > 0)


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over the global batch of a data-parallel run, on CPU (gloo) and GPU alike.

    In training mode the per-channel mean and (biased) variance are those of the rows of every
    rank together, computed in two all-reduced passes (sum and count, then the sum of squared
    deviations) in float32; the running statistics are updated like torch's (unbiased variance
    of the global batch, ``momentum`` or the cumulative average when ``momentum`` is None).
    Evaluation mode uses the running statistics and communicates nothing. Parameters and buffers
    are those of :class:`torch.nn.BatchNorm1d`/``2d``, so state dicts are interchangeable.

    Shapes: (N, C) or (N, C, H, W) -> same; ``N`` may differ between ranks (graph nodes).
    """

    def __init__(self, num_features: int, *, ctx: DistContext, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.ctx = ctx

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"GlobalBatchNorm expects (N, C, ...) input, got shape {tuple(x.shape)}")

    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        if not self.training:  # running statistics, or (without them) this batch's: nothing to share
            return nn.functional.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                            not self.track_running_stats, 0.0, self.eps)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.float()
        local_n = torch.tensor([xf.numel() // max(1, xf.size(1))], dtype=torch.float32, device=x.device)
        packed = all_reduce_sum(torch.cat([xf.sum(dims), local_n]), self.ctx)
        n = packed[-1]
        mean = packed[:-1] / n
        centred = xf - mean.view(shape)
        var = all_reduce_sum((centred * centred).sum(dims), self.ctx) / n
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            self._update_running(mean.detach(), var.detach(), n.detach())
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running(self, mean: Tensor, var: Tensor, n: Tensor) -> None:
        self.num_batches_tracked.add_(1)
        m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = var * n / (n - 1).clamp(min=1)
        self.running_mean.mul_(1 - m).add_(m * mean)
        self.running_var.mul_(1 - m).add_(m * unbiased)


def convert_batchnorm(module: nn.Module, ctx: DistContext) -> nn.Module:
    """Replace every ``BatchNorm1d/2d`` of ``module`` (in place, recursively) by a
    :class:`GlobalBatchNorm` holding the same parameters and buffers; returns ``module``."""
    for name, child in list(module.named_children()):
        if isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d)) and not isinstance(child, GlobalBatchNorm):
            new = GlobalBatchNorm(child.num_features, ctx=ctx, eps=child.eps, momentum=child.momentum,
                                  affine=child.affine, track_running_stats=child.track_running_stats)
            new.load_state_dict(child.state_dict())
            new.train(child.training)
            setattr(module, name, new.to(next(child.buffers(), torch.empty(0)).device))
        else:
            convert_batchnorm(child, ctx)
    return module


# --------------------------------------------------------------------------------------------
def torchrun_command(nproc: int, args: Sequence[str]) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc-per-node N -m cmcl_model.train.worker ARGS``."""
    if nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {nproc}")
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "cmcl_model.train.worker", *args]


def launch(nproc: int, args: Sequence[str]) -> None:
    """Run :mod:`cmcl_model.train.worker` under torchrun on this machine (``cmcl train --nproc N``).

    Raises
    ------
    RuntimeError
        If a rank failed (torchrun's exit status; the ranks' errors are on stderr).
    """
    res = subprocess.run(torchrun_command(nproc, args))
    if res.returncode != 0:
        raise RuntimeError(f"distributed training with {nproc} processes failed (torchrun exit status {res.returncode})")


def gather_counts(n: int, ctx: DistContext | None, *, device: torch.device | str = "cpu") -> list[int]:
    """Every rank's ``n`` in rank order (``[n]`` in a single process); no gradients."""
    if ctx is None:
        return [int(n)]
    t = torch.tensor([int(n)], dtype=torch.int64, device=device)
    out = [torch.zeros_like(t) for _ in range(ctx.world_size)]
    dist.all_gather(out, t, group=ctx.group)
    return [int(x.item()) for x in out]


class ShardedBatches(torch.utils.data.Sampler):
    """This rank's contiguous share of every batch of ``batches`` (a batch sampler).

    Rank ``r`` of ``N`` gets rows ``[r*b/N, (r+1)*b/N)`` of each global batch of ``b`` indices,
    so the ranks together see exactly the one-process batches, in the same order, and a resume
    from batch ``k`` of an epoch resumes every rank at its share of batch ``k``.

    Raises
    ------
    ValueError
        If a batch's size is not a multiple of ``world_size``.
    """

    def __init__(self, batches: torch.utils.data.Sampler, *, rank: int, world_size: int) -> None:
        self.batches, self.rank, self.world_size = batches, rank, world_size

    def __iter__(self):
        for batch in self.batches:
            if len(batch) % self.world_size:
                raise ValueError(f"a batch of {len(batch)} samples cannot be split over {self.world_size} processes")
            k = len(batch) // self.world_size
            yield batch[self.rank * k:(self.rank + 1) * k]

    def __len__(self) -> int:
        return len(self.batches)
