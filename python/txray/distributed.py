"""Scale-out: record one corpus across processes and GPUs with torch.distributed.

Launched by ``torchrun`` (one process per device, on one node or many), every
rank records its own shard of the corpus (:class:`txray.corpus.Shard`: the
sequences ``i`` with ``i % world_size == rank``) on its own device, and rank 0
gathers the parts and merges them into the profile a single process would
have recorded: counts exactly, sums to float64 rounding.

    txray.distributed.init("cuda")                  # NCCL on cuda:LOCAL_RANK (gloo for "cpu")
    profiles = txray.distributed.record_model(model, tokenizer, corpus, layers, features=["token"])
    if profiles is not None:                        # rank 0 only
        txray.distributed.save_profiles({f"{layer}.parquet": p for layer, p in profiles.items()})

The same merge works offline on parts recorded by independent jobs
(``txray record --shard I/N``, then ``txray merge``): :func:`txray.merge_profiles`.

A rank that fails raises its error and its process exits; ``torchrun`` then
stops the other ranks (and gloo/NCCL collectives waiting on the dead rank
fail). Rank 0 writes only after it holds every rank's part, to temporary
names renamed at the end, so a failed job leaves no profile behind.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from .options import RecordOptions
from .profile import Profile, merge_profiles, missing_shards, save_profiles

__all__ = [
    "Context",
    "launched",
    "init",
    "shutdown",
    "record_model",
    "gather_profiles",
    # Offline merging lives in txray.profile; these names stay here for older callers.
    "merge_profiles",
    "missing_shards",
    "save_profiles",
]

DEFAULT_TIMEOUT = timedelta(hours=2)
"""How long a collective waits for the slowest rank (the gather at the end
waits for every rank to finish its shard)."""

LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
"""What ``torchrun`` sets for every worker; :func:`launched` checks for them."""


@dataclasses.dataclass(frozen=True)
class Context:
    """This process's place in the job."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: str

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the one that merges and writes."""
        return self.rank == 0


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (its variables are set)."""
    return all(name in os.environ for name in LAUNCH_VARIABLES)


def init(device: str = "cpu", timeout: timedelta = DEFAULT_TIMEOUT) -> Context:
    """Join the process group that ``torchrun`` describes in the environment.

    ``device`` is where this rank runs its model: ``"cpu"`` (backend gloo) or
    ``"cuda"`` (backend NCCL, device ``cuda:LOCAL_RANK``; ``"cuda:N"`` is
    taken as given). Returns the :class:`Context` with the device to use.
    """
    import torch
    import torch.distributed as dist

    missing = [name for name in LAUNCH_VARIABLES if name not in os.environ]
    if missing:
        raise RuntimeError(f"not started by torchrun: {', '.join(missing)} not set in the environment")
    local_rank = int(os.environ["LOCAL_RANK"])
    device = _rank_device(device, local_rank)
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(torch.device(device))
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timeout)
    return Context(dist.get_rank(), dist.get_world_size(), local_rank, backend, device)


def shutdown() -> None:
    """Leave the process group (if this process joined one)."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def record_model(
    model: Any,
    tokenizer: Any,
    corpus: Any,
    layers: Sequence[Any],
    features: Sequence[Any] | None = None,
    options: RecordOptions | None = None,
    **settings: Any,
) -> dict[str, Profile] | None:
    """:func:`txray.record_model` on this rank's shard, merged on rank 0.

    Call it on every rank after :func:`init`, with the same arguments (the
    model already on this rank's device); ``options`` and ``settings`` are
    those of :func:`txray.record_model` (a :class:`txray.RecordOptions`),
    except ``shard``: every rank takes its own. Vocabularies are built from the
    whole corpus on every rank (the same deterministic pass, no
    communication); ``limit_tokens`` cuts the whole corpus before it is
    sharded, so all ranks together record exactly the first ``limit_tokens``
    words. Only rank 0 shows a progress bar.

    Returns ``{layer: merged Profile}`` on rank 0 and ``None`` on the others.
    An exception on any rank propagates there (see the module docstring).
    """
    import torch.distributed as dist

    from .pipeline import record_model as record_shard

    opts = RecordOptions.resolve(options, features, settings)
    if opts.shard is not None:
        raise ValueError("distributed.record_model shards the corpus itself (one shard per rank): do not give shard")
    rank, world = dist.get_rank(), dist.get_world_size()
    opts = opts.replace(shard=(rank, world), progress=opts.progress and rank == 0)
    parts = record_shard(model, tokenizer, corpus, layers, options=opts)
    return gather_profiles(parts)


def gather_profiles(parts: Mapping[str, Profile]) -> dict[str, Profile] | None:
    """Merge every rank's ``{layer: Profile}`` on rank 0, one layer at a time.

    A rank may lack a layer (its shard was empty); a layer that no rank has
    is an error. Returns the merged profiles on rank 0, ``None`` elsewhere.
    """
    import torch.distributed as dist

    names: list[list[str] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(names, list(parts))
    layers = list(dict.fromkeys(name for rank_names in names for name in rank_names or ()))
    if not layers:
        raise ValueError("no rank recorded any words: the corpus is empty")
    main = dist.get_rank() == 0
    merged: dict[str, Profile] = {}
    for layer in layers:
        received: list[Profile | None] | None = [None] * dist.get_world_size() if main else None
        dist.gather_object(parts.get(layer), received, dst=0)
        if received is not None:  # rank 0
            merged[layer] = merge_profiles([p for p in received if p is not None])
            merged[layer].metadata.pop("shards", None)  # every rank answered: complete, even with empty shards
    return merged if main else None


def _rank_device(device: str, local_rank: int) -> str:
    device = str(device)
    if device == "cuda":
        return f"cuda:{local_rank}"
    if device == "cpu" or device.startswith("cuda:"):
        return device
    raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', not {device!r}")
