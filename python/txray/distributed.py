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
(``txray record --shard I/N``, then ``txray merge``): :func:`merge_profiles`.

A rank that fails raises its error and its process exits; ``torchrun`` then
stops the other ranks (and gloo/NCCL collectives waiting on the dead rank
fail). Rank 0 writes only after it holds every rank's part, to temporary
names renamed at the end, so a failed job leaves no profile behind.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from . import parquet
from .profile import KindCells, Profile, check_compatible

DEFAULT_TIMEOUT = timedelta(hours=2)
"""How long a collective waits for the slowest rank (the gather at the end
waits for every rank to finish its shard)."""

LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
"""What ``torchrun`` sets for every worker; :func:`launched` checks for them."""

IDENTITY_KEYS = ("model", "layer", "tokenizer", "pooling", "include_special")
"""Metadata that must agree between parts: they record the same neurons the same way."""

SUMMED_KEYS = ("tokens", "words")


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
    model: Any, tokenizer: Any, corpus: Any, layers: Sequence[Any], features: Sequence[Any] = ("token",), **options: Any
) -> dict[str, Profile] | None:
    """:func:`txray.record_model` on this rank's shard, merged on rank 0.

    Call it on every rank after :func:`init`, with the same arguments (the
    model already on this rank's device). Vocabularies are built from the
    whole corpus on every rank (the same deterministic pass, no
    communication); ``limit_tokens`` cuts the whole corpus before it is
    sharded, so all ranks together record exactly the first ``limit_tokens``
    words. Only rank 0 shows a progress bar.

    Returns ``{layer: merged Profile}`` on rank 0 and ``None`` on the others.
    An exception on any rank propagates there (see the module docstring).
    """
    import torch.distributed as dist

    from .pipeline import record_model as record_shard

    rank, world = dist.get_rank(), dist.get_world_size()
    options["progress"] = options.get("progress", True) and rank == 0
    parts = record_shard(model, tokenizer, corpus, layers, features, shard=(rank, world), **options)
    return gather_profiles(parts)


def gather_profiles(parts: Mapping[str, Profile]) -> dict[str, Profile] | None:
    """Merge every rank's ``{layer: Profile}`` on rank 0, one layer at a time.

    A rank may lack a layer (its shard was empty); a layer that no rank has
    is an error. Returns the merged profiles on rank 0, ``None`` elsewhere.
    """
    import torch.distributed as dist

    names: list[list[str] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(names, list(parts))
    layers = list(dict.fromkeys(name for rank_names in names for name in rank_names))
    if not layers:
        raise ValueError("no rank recorded any words: the corpus is empty")
    main = dist.get_rank() == 0
    merged: dict[str, Profile] = {}
    for layer in layers:
        received: list[Profile | None] | None = [None] * dist.get_world_size() if main else None
        dist.gather_object(parts.get(layer), received, dst=0)
        if main:
            merged[layer] = merge_profiles([p for p in received if p is not None])
            merged[layer].metadata.pop("shards", None)  # every rank answered: complete, even with empty shards
    return merged if main else None


def merge_profiles(parts: Sequence[Profile], name: str | None = None) -> Profile:
    """Combine profiles recorded on disjoint parts of a corpus into one.

    The parts must record the same layer the same way: same number of neurons,
    mode and k, feature kinds and vocabularies, and the same ``model``,
    ``layer``, ``tokenizer``, ``pooling`` and ``include_special`` metadata
    where they have them (else :class:`ValueError` says which differ). Counts,
    frequencies and token counts add up exactly; sums and masses are float64.

    Metadata: that of the first part, with ``tokens`` and ``words`` summed;
    any other key whose values differ becomes the list of its distinct values.
    Parts recorded as shards (``"shards"`` metadata) must not repeat a shard
    and must agree on the number of shards; the merge's ``"shards"`` lists
    the shards it holds, and is dropped once they are all there.
    """
    if not parts:
        raise ValueError("nothing to merge: no profiles given")
    first = parts[0]
    for index, part in enumerate(parts[1:], start=1):
        try:
            check_mergeable(first, part)
        except ValueError as err:
            raise ValueError(f"cannot merge part {index} into part 0: {err}") from None
    kinds = {kind: _merge_kind([p.cells(kind) for p in parts]) for kind in first.kinds}
    mass = np.sum([p.mass() for p in parts], axis=0)
    return Profile(
        first.n_neurons,
        first.mode,
        first.k,
        kinds,
        mass,
        sum(p.tokens for p in parts),
        name=name if name is not None else first.name,
        metadata=_merge_metadata([p.metadata for p in parts]),
    )


def missing_shards(profile: Profile) -> list[int]:
    """The shards a merged profile still lacks (``[]`` when complete or unsharded)."""
    shards = profile.metadata.get("shards")
    if not shards:
        return []
    have = {index for index, _ in shards}
    return [index for index in range(shards[0][1]) if index not in have]


def save_profiles(profiles: Mapping[str | os.PathLike, Profile]) -> None:
    """Write ``{path: profile}`` all or nothing: every profile to a temporary
    name first, renamed once all of them are written. On an error the
    temporary files are removed and no target is touched."""
    temporary = {Path(path): Path(parquet.temporary_path(path)) for path in profiles}
    try:
        for profile, tmp in zip(profiles.values(), temporary.values()):
            profile.save(tmp)
        for path, tmp in temporary.items():
            parquet.replace(tmp, path)
    finally:
        for tmp in temporary.values():
            parquet.remove(tmp)


def _rank_device(device: str, local_rank: int) -> str:
    device = str(device)
    if device == "cuda":
        return f"cuda:{local_rank}"
    if device == "cpu" or device.startswith("cuda:"):
        return device
    raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', not {device!r}")


def check_mergeable(a: Profile, b: Profile) -> None:
    """Raise :class:`ValueError` saying what differs unless ``b`` can be merged into ``a``."""
    if (a.mode, a.k) != (b.mode, b.k):
        raise ValueError(f"mode {b.mode!r} (k={b.k}) differs from mode {a.mode!r} (k={a.k})")
    if a.kinds != b.kinds:
        raise ValueError(f"feature kinds {list(b.kinds)} differ from {list(a.kinds)}")
    check_compatible(a, b, a.kinds, same_neurons=True)
    for key in IDENTITY_KEYS:
        if key in a.metadata and key in b.metadata and a.metadata[key] != b.metadata[key]:
            raise ValueError(f"{key} {b.metadata[key]!r} differs from {a.metadata[key]!r}")


def _merge_kind(parts: Sequence[KindCells]) -> KindCells:
    """Add up the cells of several parts in one stable sort (key: neuron * size + feature)."""
    n_features = len(parts[0].frequencies)
    key = np.concatenate([c.neuron.astype(np.int64) * n_features + c.feature for c in parts])
    order = np.argsort(key, kind="stable")  # stable: a cell's sums are added in part order
    key = key[order]
    starts = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]])) if len(key) else np.zeros(0, np.int64)
    unique = key[starts]
    count = _sum_runs(np.concatenate([c.count for c in parts])[order], starts)
    total = _sum_runs(np.concatenate([c.sum for c in parts])[order], starts)
    return KindCells(
        neuron=(unique // n_features).astype(np.int32),
        feature=(unique % n_features).astype(np.int32),
        count=count,
        sum=total,
        frequencies=np.sum([c.frequencies for c in parts], axis=0, dtype=np.int64),
        names=next((c.names for c in parts if c.names is not None), None),
    )


def _sum_runs(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """The sum of each run ``values[starts[i]:starts[i + 1]]`` (exact for integers)."""
    return np.add.reduceat(values, starts) if len(starts) else values[:0]


def _merge_metadata(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    merged = dict(parts[0])
    for key in merged.keys() - set(SUMMED_KEYS) - {"shards"}:
        values = _distinct(part.get(key) for part in parts)
        if len(values) > 1:
            merged[key] = values
    for key in SUMMED_KEYS:
        if all(isinstance(part.get(key), int) for part in parts):
            merged[key] = sum(part[key] for part in parts)
    shards = _merge_shards(parts)
    merged.pop("shards", None)
    if shards is not None:
        merged["shards"] = shards
    return merged


def _merge_shards(parts: Sequence[Mapping[str, Any]]) -> list[list[int]] | None:
    """The union of the parts' shards; None when complete or when no part is a shard."""
    listed = [(int(i), int(n)) for part in parts for i, n in part.get("shards") or ()]
    if not listed:
        return None
    counts = {n for _, n in listed}
    if len(counts) > 1:
        raise ValueError(f"cannot merge shards of different splits: parts were cut into {sorted(counts)} shards")
    seen: set[int] = set()
    for index, count in listed:
        if index in seen:
            raise ValueError(f"cannot merge: shard {index}/{count} is in more than one part (it would count twice)")
        seen.add(index)
    count = counts.pop()
    if len(seen) == count:
        return None
    return [[index, count] for index in sorted(seen)]


def _distinct(values: Iterable[Any]) -> list[Any]:
    distinct: list[Any] = []
    for value in values:
        if value not in distinct:
            distinct.append(value)
    return distinct
