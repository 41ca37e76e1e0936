"""The Recorder: accumulates what each neuron prefers, batch by batch."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from . import _inputs
from ._device import DeviceBackend, cuda_available, parse_device
from ._host import HostBackend
from .profile import CONTEXTS_SCHEMA, KindCells, Profile

__all__ = ["MODES", "DEFAULT_DENSE_LIMIT", "Recorder", "cuda_available"]

MODES = ("max1", "topk", "all")
DEFAULT_DENSE_LIMIT = 256 << 20
DEFAULT_CONTEXTS = 20
"""Top activating contexts kept per neuron by a CPU recorder unless told otherwise."""


class Recorder:
    """Record per-(neuron, feature) counts and activation sums over a corpus.

    Parameters
    ----------
    n_neurons:
        Width of the recorded layer (the last axis of every activation batch).
    features:
        ``{kind: vocabulary size}``, e.g. ``{"token": 33278, "pos": 45}``.
        Every token carries one integer id per kind, in ``[0, size)``.
    mode:
        ``"max1"`` (the paper: only each token's most active neuron records
        it), ``"topk"`` (its ``k`` most active neurons) or ``"all"`` (every
        neuron records every token). Ties go to the lowest neuron index.
    k:
        Number of winners per token for ``mode="topk"``.
    dense_limit_bytes:
        A feature kind whose ``n_neurons x size`` cells fit in this many
        bytes (16 per cell) is kept in a dense array, otherwise in a hash
        table of the cells that occurred. Memory never grows with the corpus.
        On a CUDA device the same limit chooses between dense device arrays
        and a device hash table (mode ``all``: 8 bytes a cell, dense rows or
        rows for the features seen).
    device:
        ``None`` or ``"cpu"`` (default): record on the CPU. ``"cuda"`` or
        ``"cuda:N"``: keep the statistics in device memory and record
        device arrays (torch CUDA tensors, ``__cuda_array_interface__`` or
        DLPack) on the caller's stream, with no host synchronisation per
        batch; input errors found on the device are raised at the next
        synchronisation point (see :meth:`synchronize`).
    contexts:
        How many top activating contexts to keep per neuron: its ``contexts``
        highest activations and the units (tokens) they occurred at, in
        :meth:`profile`'s ``contexts`` table. In max1 and topk a neuron's
        candidates are the tokens it won, in ``all`` every token; equal
        activations go to the lower unit. ``0`` keeps none. Default
        :data:`DEFAULT_CONTEXTS` (20) on the CPU; a CUDA recorder keeps none
        (its kernels do not record contexts yet, and it refuses ``contexts > 0``).

    Threads
    -------
    One recorder may be shared by several threads. Its calls serialise:
    each ``update``, ``merge``, ``profile``, ``tokens`` runs whole, one
    after another, so the statistics are exactly those of some serial order
    of the calls (counts equal the serial run's; float sums may differ in
    the last bits, as additions happen in another order), and a profile is
    never taken in the middle of an update. Updates release the GIL, so
    separate recorders in separate threads record in parallel; threads
    sharing one recorder wait for each other. ``a.merge(b)`` beside
    ``b.merge(a)`` does not deadlock; ``a.merge(a)`` raises ValueError.

    Examples
    --------
    >>> rec = Recorder(n_neurons=4, features={"token": 10})
    >>> rec.update(np.eye(4, dtype=np.float32), {"token": [1, 2, 3, 3]})
    >>> rec.tokens
    4
    """

    def __init__(
        self,
        n_neurons: int,
        features: Mapping[str, int],
        mode: str = "max1",
        k: int | None = None,
        dense_limit_bytes: int = DEFAULT_DENSE_LIMIT,
        device: Any = None,
        contexts: int | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if mode == "topk":
            if k is None:
                raise ValueError("mode='topk' needs k, the number of winners per token")
            k = _inputs.integer(k, "k")  # its range is checked by the native core
        elif k is not None and (mode == "all" or _inputs.integer(k, "k") != 1):
            raise ValueError(f"k is only used with mode='topk' (got k={k} with mode={mode!r})")
        self.n_neurons = _inputs.integer(n_neurons, "n_neurons", minimum=1)
        features = _inputs.feature_sizes(features)
        if not features:
            raise ValueError("features needs at least one kind, e.g. {'token': vocab_size}")
        self.features = features
        self.mode = mode
        self.k = k if mode == "topk" else (1 if mode == "max1" else None)
        # Checked before the device, so that the answer is the same with or without a GPU.
        on_cpu = device is None or str(device).startswith("cpu")
        if contexts is None:
            contexts = DEFAULT_CONTEXTS if on_cpu else 0
        self.contexts = _inputs.integer(contexts, "contexts", minimum=0)
        if self.contexts > 2**31 - 1:
            raise ValueError(f"contexts must be at most 2^31-1 per neuron, not {self.contexts}")
        if self.contexts and not on_cpu:
            raise ValueError(
                f"Recorder(device={str(device)!r}, contexts={self.contexts}): a CUDA recorder does not keep "
                "top activating contexts yet; pass contexts=0, or record on the CPU"
            )
        self._device = parse_device(device)
        dense_limit_bytes = _inputs.integer(dense_limit_bytes, "dense_limit_bytes", minimum=0)
        k_native = self.k if self.k is not None else 1
        # Where the statistics live decides everything device-specific, in one place: the
        # backend owns its input checks, streams, errors and the native recorder.
        self._backend: HostBackend | DeviceBackend
        if self._device is None:
            self._backend = HostBackend(
                self.n_neurons, self.features, mode, k_native, dense_limit_bytes, contexts=self.contexts
            )
        else:
            self._backend = DeviceBackend(
                self._device, self.n_neurons, self.features, mode, k_native, dense_limit_bytes
            )
        self._native: Any = self._backend.native  # the engine's recorder (for tests and benchmarks)
        # Serialises the calls (a device backend's Python state changes with them; the CPU
        # engine also locks itself, releasing the GIL).
        self._lock = threading.RLock()

    @property
    def device(self) -> str:
        """``"cpu"`` or ``"cuda:N"``: where the statistics are kept."""
        return "cpu" if self._device is None else f"cuda:{self._device}"

    @property
    def tokens(self) -> int:
        """Number of (unmasked) tokens recorded so far (on a device: waits
        for the device and raises a pending input error)."""
        with self._lock:
            return self._backend.tokens

    def synchronize(self) -> None:
        """Wait for recorded work and raise any input error found since the
        last call.

        On the CPU every update is checked and recorded before it returns,
        so this does nothing. On a CUDA device ``update()`` only enqueues
        work; an id out of range or a non-finite activation is found by the
        kernels and raised here, at the next of: ``synchronize()``,
        ``tokens``, ``profile()``, ``merge()``. The error names the update
        (counting from 1) and the token; the failing update and every later
        one until the error is raised are not recorded, so the statistics
        hold exactly the updates before it.
        """
        with self._lock:
            self._backend.synchronize()

    @property
    def nbytes(self) -> int:
        """Bytes held by the accumulators."""
        with self._lock:
            return self._backend.nbytes

    def update(
        self, acts: Any, features: Mapping[str, Any], mask: Any = None, *, units: Any = None, stream: Any = None
    ) -> None:
        """Record one batch.

        ``acts`` has shape ``(..., n_neurons)`` (for example ``(tokens, N)``
        or ``(batch, seq, N)``), float32, float16 or bfloat16, as a NumPy
        array or a CPU torch tensor, contiguous or not. ``features[kind]``
        and ``mask`` have the leading shape ``acts.shape[:-1]``; tokens where
        ``mask`` is False (padding) are skipped. On an input error (an id
        out of range, a NaN) nothing of the batch is recorded.

        ``units`` (same leading shape, integers) numbers the tokens for the
        top activating contexts: a context's ``unit`` is the number its token
        had here. A negative unit marks a token that is recorded but is never
        a context. Default: the recorded tokens are numbered on from
        :attr:`tokens` (masked ones not counted), so that the units of a
        whole run count its recorded tokens from 0.

        On a CUDA recorder ``acts`` is a device array (a torch CUDA tensor,
        or anything with ``__cuda_array_interface__`` or DLPack) on the
        recorder's device; ids and mask may be device or host arrays (host
        ones are copied through pinned memory; device ids should be int64
        and masks bool/uint8 to avoid a conversion). The kernels run on
        ``stream`` (a handle or a stream object), by default torch's current
        stream for torch tensors, the producer's stream for
        ``__cuda_array_interface__``, and the legacy default stream for
        DLPack; they wait (on the device) for the streams the inputs were
        made on. Input errors found on the device are raised later, see
        :meth:`synchronize`.
        """
        with self._lock:
            self._backend.update(acts, features, mask, stream, units)

    def merge(self, other: Recorder) -> Recorder:
        """Add another recorder's statistics to this one (same shape); returns self.

        The contexts become the top ``contexts`` of both, exactly those of one
        recorder that saw both streams (units as each was given them)."""
        if not isinstance(other, Recorder):
            raise TypeError(f"can only merge a Recorder, not {type(other).__name__}")
        # The device first: a CPU and a CUDA recorder also differ in their default contexts.
        if self._device != other._device:
            raise ValueError(
                f"cannot merge a recorder on {other.device} into one on {self.device}; "
                "merge their profiles instead (a.profile().merge(b.profile()))"
            )
        if (other.n_neurons, other.features, other.mode, other.k, other.contexts) != (
            self.n_neurons,
            self.features,
            self.mode,
            self.k,
            self.contexts,
        ):
            raise ValueError(f"cannot merge recorders of different shapes: {self._shape()} vs {other._shape()}")
        if other is self:
            raise ValueError("cannot merge a recorder into itself")
        first, second = sorted((self, other), key=id)  # one order: crossed merges cannot deadlock
        with first._lock, second._lock:
            self._backend.merge(other._backend)  # type: ignore[arg-type]  # same device, so same backend
        return self

    def profile(
        self,
        name: str | None = None,
        feature_names: Mapping[str, Sequence[str]] | None = None,
        metadata: Mapping[str, Any] | None = None,
        fill_contexts: Callable[[pa.Table, int], pa.Table] | None = None,
    ) -> Profile:
        """Snapshot the statistics as a :class:`Profile`.

        ``feature_names[kind]`` lists the string of every id of that kind
        (its vocabulary); ``metadata`` is any JSON-serialisable mapping kept
        with the profile (model, layer, corpus, ...).

        With ``contexts`` on, ``profile.contexts`` is the table of the kept
        contexts (:data:`txray.CONTEXTS_SCHEMA`): ``neuron``, ``rank``,
        ``activation`` and ``unit``; a recorder knows no text, so
        ``document``, ``word``, ``text`` and ``word_offset`` are null, unless
        ``fill_contexts(table, k)`` returns the table with them filled in
        (:func:`txray.record_model` does so).
        """
        names = _inputs.feature_names(feature_names, self.features)
        tokens, mass, state, contexts = self._snapshot()
        if tokens == 0:
            raise ValueError("nothing was recorded: call update() with at least one unmasked token first")
        table = self._contexts_table(contexts, fill_contexts)
        kinds = {}
        for kind, ((neuron, feature, count, total), frequencies) in zip(self.features, state):
            kinds[kind] = KindCells(
                neuron=neuron,
                feature=feature,
                count=count,
                sum=total,
                frequencies=frequencies,
                names=names.get(kind),
            )
        return Profile(
            n_neurons=self.n_neurons,
            mode=self.mode,
            k=self.k,
            kinds=kinds,
            mass=mass,
            tokens=tokens,
            name=name,
            metadata=metadata,
            contexts=table,
            contexts_k=self.contexts if table is not None else None,
        )

    def _contexts_table(
        self, columns: tuple[Any, Any, Any, Any] | None, fill: Callable[[pa.Table, int], pa.Table] | None
    ) -> pa.Table | None:
        if columns is None:
            return None
        # The engine's table is already what top_contexts gives (neuron-major, ranked by activation
        # then unit; a test checks): built as it is, not sorted again (a lexsort per layer).
        given = dict(zip(("neuron", "rank", "activation", "unit"), columns))
        n = len(given["unit"])
        table = pa.Table.from_arrays(
            [pa.array(given[f.name], f.type) if f.name in given else pa.nulls(n, f.type) for f in CONTEXTS_SCHEMA],
            schema=CONTEXTS_SCHEMA,
        )
        return table if fill is None else fill(table, self.contexts)

    def context_units(self, latest: bool = False) -> Any:
        """The distinct units (ascending, int64) that some neuron keeps as a context
        now; with ``latest``, only those that entered with the latest :meth:`update`
        (a scan of the kept contexts, cheap enough for every batch). None when the
        recorder keeps no contexts. :func:`txray.record_model` keeps the text of
        these units only."""
        return self._native.context_units(latest) if self.contexts else None

    def mark_context_units(self, lo: int, mark: Any) -> int:
        """Set ``mark[u - lo]`` (a writable contiguous uint8 array) for each unit ``u``
        that entered some neuron's contexts with the latest :meth:`update`: the same
        units as ``context_units(latest=True)``, by a scan with no sort, so that
        :func:`txray.record_model` can gather a batch's new contexts over several
        recorders in one array. Returns how many such candidates (one per neuron
        that holds one) fell outside the mark, unmarked. Needs a recorder that keeps contexts."""
        if not self.contexts:
            raise ValueError("mark_context_units: this recorder keeps no contexts (contexts=0)")
        return self._native.mark_context_units(int(lo), mark)

    def _snapshot(self) -> tuple[int, Any, list[Any], Any]:
        """(tokens, mass, [((neuron, feature, count, sum), frequencies) per kind],
        (neuron, rank, activation, unit) or None) of one moment."""
        with self._lock:
            return self._backend.snapshot()

    def _shape(self) -> str:
        return (
            f"(n_neurons={self.n_neurons}, features={self.features}, mode={self.mode!r}, k={self.k}, "
            f"contexts={self.contexts})"
        )

    def __repr__(self) -> str:
        where = "" if self._device is None else f", device={self.device!r}"
        return f"Recorder{self._shape()[:-1]}{where}, tokens={self.tokens})"
