"""Data-parallel training under `torchrun` (docs/architecture.md, "Data parallelism": same results as one process with the
same global batch).

How the trainers use it, and why it is exact rather than approximately DDP:
- Every rank draws the *global* batch: the same data-stream indices, captions, flips, latents,
  timesteps and noise, from identically seeded generators, then keeps its contiguous rows
  `share(B)` for the forward/backward. So all RNG states stay identical on every rank
  (rank 0's checkpoint resumes them all) and per-sample randomness does not depend on the
  number of processes.
- Each rank's loss is the mean over its slice; the mean of the W slice means is the global
  mean, so averaging gradients (`reduce_gradients_`) gives the one-process gradient. The
  all-reduce is done by hand, not by `DistributedDataParallel`: the gradient penalty needs a
  double backward (which DDP's reducer hooks do not support) and a progressive network leaves
  different parameters unused at each stage.
- Batch-coupled layers stay exact because they only couple samples inside a slice: the
  minibatch-stddev groups are contiguous and the slice is a multiple of the group size.
- Decisions that end or skip steps (non-finite loss, SIGINT/SIGTERM) are reduced across ranks,
  so no rank leaves a collective the others are waiting in.

Launch: `torchrun --nproc_per_node N train_progan.py ...` (the env:// variables WORLD_SIZE,
RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT come from torchrun). Without them training runs
as one process and nothing here communicates. Under `torchrun --max-restarts N` a failed rank
makes torchrun restart every rank; the new group joins in a key space of its own
(`round_store`) and `--resume auto` continues from the newest checkpoint.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import torch
import torch.distributed as dist

from stylegan_t2i.batch_share import BatchShare


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job; world_size 1 means a plain single-process run."""
    rank:           int = 0
    world_size:     int = 1
    local_rank:     int = 0
    max_restarts:   int = 0     # torchrun --max-restarts: how often a failed group is started again.

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes logs, grids and checkpoints."""
        return self.rank == 0

    def local_batch(self, global_batch: int) -> int:
        if global_batch % self.world_size != 0:
            raise ValueError(f"the batch {global_batch} must be a multiple of the number of processes "
                             f"({self.world_size}): pass --batch {global_batch - global_batch % self.world_size or self.world_size}")
        return global_batch // self.world_size

    def share(self, global_batch: int) -> BatchShare:
        """This rank's contiguous rows of a global batch."""
        b = self.local_batch(global_batch)
        return BatchShare(global_batch, self.rank * b, (self.rank + 1) * b)

    def reduce_gradients_(self,
        params:     Iterable[torch.nn.Parameter],  # Parameters whose .grad to reduce (None grads are left out).
        loss:       torch.Tensor,           # This rank's loss (scalar): reduced along, to test finiteness.
        average:    bool = True,            # True: mean of the ranks' gradients; False: their sum.
    ) -> bool:
        """All-reduce the gradients in place, in one flat buffer; return whether every rank's loss
        and the reduced gradients are finite (the same answer on every rank).

        The set of parameters with a gradient must be the same on every rank; it is, because all
        ranks run the same code on the same stage.
        """
        grads = [p.grad for p in params if p.grad is not None]
        loss_ok = torch.isfinite(loss.detach()).all()
        if self.world_size == 1:    # One fused norm, one host sync: this runs every optimizer step.
            return bool(loss_ok) and (not grads or bool(torch.isfinite(torch.nn.utils.get_total_norm(grads))))
        # A non-finite loss on any rank turns the flag element into NaN on every rank.
        flag = torch.where(loss_ok, 0.0, float("nan")).to(loss.device, torch.float32).reshape(1)
        flat = torch.cat([g.reshape(-1).float() for g in grads] + [flag])
        dist.all_reduce(flat)
        if average:
            flat /= self.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()
        return bool(torch.isfinite(flat).all())

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when `flag` is true on any rank (e.g. a signal that reached one)."""
        if self.world_size == 1:
            return flag
        t = torch.tensor([float(flag)], device=device)
        dist.all_reduce(t)
        return bool(t.item() > 0)

    def all_gather(self, x: torch.Tensor) -> torch.Tensor:
        """[b, ...] on each rank -> [W*b, ...] in rank order, detached (no gradient flows back)."""
        if self.world_size == 1:
            return x.detach()
        parts = [torch.empty_like(x) for _ in range(self.world_size)]
        dist.all_gather(parts, x.detach().contiguous())
        return torch.cat(parts)

    def broadcast_object(self, obj: Any, device: torch.device) -> Any:
        """Rank 0's `obj` (plain data: a checkpoint dict, a path) on every rank."""
        if self.world_size == 1:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=device if device.type == "cuda" else None)
        return box[0]

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (e.g. builds the dataset cache), then the others."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()


def init_distributed(device_arg: str = "auto", timeout_min: float = 30.0) -> tuple[Distributed, torch.device]:
    """Join the torchrun job described by the environment (or run alone); return (context, device).

    NCCL and cuda:LOCAL_RANK when the device is CUDA, gloo on CPU. `--device cuda:N` is refused
    under torchrun, because each rank's GPU is given by LOCAL_RANK.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Distributed(), resolve_device(device_arg)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_arg.startswith("cuda") or (device_arg == "auto" and torch.cuda.is_available())
    if device_arg.startswith("cuda:"):
        raise SystemExit(f"error: --device {device_arg}: under torchrun each rank uses cuda:LOCAL_RANK; pass --device cuda")
    device = resolve_device("cuda" if use_cuda else "cpu")     # One-line error when CUDA is missing.
    if use_cuda:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # The timeout bounds every collective, so a rank whose peer is gone for good fails and
        # torchrun can restart the group instead of it waiting forever.
        timeout = datetime.timedelta(minutes=timeout_min)
        store, _, _ = next(dist.rendezvous("env://", timeout=timeout))
        dist.init_process_group("nccl" if use_cuda else "gloo", store=round_store(store, rank, world_size, timeout),
                                rank=rank, world_size=world_size, timeout=timeout)
    return Distributed(rank, world_size, local_rank, int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0"))), device


def round_store(store: dist.Store, rank: int, world_size: int, timeout: datetime.timedelta) -> dist.Store:
    """A key space of `store` that no earlier group of this job wrote to.

    torchrun keeps one store for the whole job, and the ranks it restarts after a failure would
    read the previous group's keys there: the process group then dials a dead rank's address
    (pytorch/pytorch#135712). TORCHELASTIC_RESTART_COUNT cannot name the group, as each node
    counts only its own restarts. So rank 0 draws a fresh prefix and hands it to each rank under
    a key named by that rank's own fresh token (answering a token left by an earlier group is
    harmless), until every rank has confirmed inside the new prefix.
    """
    if rank != 0:
        token = uuid.uuid4().hex
        store.set(f"stylegan_t2i/token/{rank}", token)
        prefix = store.get(f"stylegan_t2i/prefix/{token}").decode()    # Waits up to the store's timeout.
        store.set(f"{prefix}/joined/{rank}", "")
        return dist.PrefixStore(prefix, store)
    prefix, answered = f"stylegan_t2i/{uuid.uuid4().hex}", set()
    waiting, deadline = set(range(1, world_size)), time.monotonic() + timeout.total_seconds()
    while True:
        for r in sorted(waiting):
            if store.check([f"{prefix}/joined/{r}"]):
                waiting.discard(r)
            elif store.check([f"stylegan_t2i/token/{r}"]):
                token = store.get(f"stylegan_t2i/token/{r}").decode()
                if token not in answered:
                    store.set(f"stylegan_t2i/prefix/{token}", prefix)
                    answered.add(token)
        if not waiting:
            return dist.PrefixStore(prefix, store)
        if time.monotonic() > deadline:
            raise TimeoutError(f"ranks {sorted(waiting)} did not join the process group within {timeout}")
        time.sleep(0.01)


@contextlib.contextmanager
def distributed_session(device_arg: str = "auto") -> Iterator[tuple[Distributed, torch.device]]:
    """`init_distributed` for the body, then the group torn down. After a body that finished,
    every rank first passes a barrier: a rank that destroyed the group while another still
    waited in its last collective made that one abort at exit (seen in CI). After an exception
    there is no barrier, since a failed rank may never reach it."""
    context, device = init_distributed(device_arg)
    try:
        yield context, device
        context.barrier()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def resolve_device(name: str) -> torch.device:
    """--device auto|cpu|cuda|cuda:N -> a device; asking for CUDA without a GPU is a one-line error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise SystemExit(f"error: bad --device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {name} but no CUDA GPU is available; use --device cpu")
    return device
