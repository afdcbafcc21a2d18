"""torch.distributed helpers: one code path for 1 process and for `torchrun --nproc_per_node N`.

`torchrun` sets RANK / WORLD_SIZE / LOCAL_RANK; we then join the process group (NCCL on GPUs, gloo
on CPU), shard the training split with DistributedSampler and let rank 0 alone write files.
Validation is sharded WITHOUT padding (`ShardSampler`), and predictions are gathered as
(cache_row, values) pairs and de-duplicated by row, so every image counts exactly once in the metrics
even when the split does not divide by the number of processes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from mura.devices import resolve_device


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_preference: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); otherwise a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_preference, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def wrap_ddp(module: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    """DistributedDataParallel over the trainable parameters (a frozen backbone is not synchronised)."""
    if not info.enabled:
        return module
    ids = [info.device.index] if info.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    return module.module if isinstance(module, torch.nn.parallel.DistributedDataParallel) else module


class ShardSampler(Sampler[int]):
    """Indices rank, rank + W, rank + 2W, ...: disjoint shards without padding (for evaluation)."""

    def __init__(self, length: int, rank: int = 0, world_size: int = 1) -> None:
        self.length, self.rank, self.world_size = length, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))


def all_reduce_sum(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a float64 tensor over ranks (a copy; the input is left alone)."""
    out = values.detach().to(torch.float64).clone()
    if info.enabled:
        out = out.to(info.device) if info.device.type == "cuda" else out
        dist.all_reduce(out)
    return out.cpu()


def gather_by_row(
    rows: torch.Tensor, values: torch.Tensor, info: DistInfo
) -> tuple[torch.Tensor, torch.Tensor]:
    """Collect (row, values) from every rank; return them sorted by row with each row once.

    rows: long [n] (this rank's cache rows), values: float [n, k]. Ranks may hold different n.
    """
    rows = rows.detach().to(torch.int64).cpu()
    values = _as_matrix(values.detach().to(torch.float64).cpu())
    if info.enabled:
        comm = info.device if info.device.type == "cuda" else torch.device("cpu")
        count = torch.tensor([len(rows)], dtype=torch.int64, device=comm)
        counts = [torch.zeros_like(count) for _ in range(info.world_size)]
        dist.all_gather(counts, count)
        longest = int(max(c.item() for c in counts))
        padded_rows = torch.full((longest,), -1, dtype=torch.int64)
        padded_rows[: len(rows)] = rows
        padded_values = torch.zeros(longest, values.shape[1], dtype=torch.float64)
        padded_values[: len(rows)] = values
        all_rows = [torch.empty(longest, dtype=torch.int64, device=comm) for _ in range(info.world_size)]
        all_values = [torch.empty_like(padded_values, device=comm) for _ in range(info.world_size)]
        dist.all_gather(all_rows, padded_rows.to(comm))
        dist.all_gather(all_values, padded_values.to(comm))
        rows = torch.cat([r.cpu()[: int(c.item())] for r, c in zip(all_rows, counts, strict=False)])
        values = torch.cat([v.cpu()[: int(c.item())] for v, c in zip(all_values, counts, strict=False)])
    unique_rows, first = _first_occurrence(rows)
    return unique_rows, values[first]


def gather_columns_by_row(
    rows: torch.Tensor, columns: Mapping[str, torch.Tensor], info: DistInfo
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`gather_by_row` for named columns ([n] or [n, k] each), in one gather, returned by the same names.

    Float columns come back float64, integer ones in their own dtype; [n] columns come back [N]. The
    width of each column is agreed over ranks (the widest), so a rank whose shard is empty may pass
    [0, 0] placeholders for the columns whose width only a batch reveals.
    """
    flat = {name: _as_matrix(value.detach().cpu()) for name, value in columns.items()}
    widths = torch.tensor([value.shape[1] for value in flat.values()], dtype=torch.int64)
    if info.enabled:
        comm = info.device if info.device.type == "cuda" else torch.device("cpu")
        every = [torch.zeros_like(widths, device=comm) for _ in range(info.world_size)]
        dist.all_gather(every, widths.to(comm))
        widths = torch.stack(every).amax(dim=0).cpu()
    blocks = [
        value.to(torch.float64) if len(value) else torch.zeros(0, int(width), dtype=torch.float64)
        for value, width in zip(flat.values(), widths, strict=True)
    ]
    all_rows, values = gather_by_row(rows, torch.cat(blocks, dim=1), info)
    gathered = {}
    for (name, original), block in zip(columns.items(), values.split(widths.tolist(), dim=1), strict=True):
        block = block.squeeze(1) if original.ndim == 1 else block
        gathered[name] = block if original.is_floating_point() else block.round().to(original.dtype)
    return all_rows, gathered


def _as_matrix(values: torch.Tensor) -> torch.Tensor:
    """[n] -> [n, 1], [n, ...] -> [n, k]; unlike reshape(n, -1), also for n = 0."""
    return values[:, None] if values.ndim == 1 else values.flatten(1)


def _first_occurrence(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.argsort(rows, stable=True)
    sorted_rows = rows[order]
    keep = torch.ones_like(sorted_rows, dtype=torch.bool)
    keep[1:] = sorted_rows[1:] != sorted_rows[:-1]
    return sorted_rows[keep], order[keep]


def broadcast_flag(flag: bool, info: DistInfo) -> bool:
    """Rank 0's decision (e.g. early stop) on every rank."""
    if not info.enabled:
        return flag
    comm = info.device if info.device.type == "cuda" else torch.device("cpu")
    tensor = torch.tensor([1 if flag else 0], device=comm)
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())
