"""The Recorder: accumulates what each neuron prefers, batch by batch."""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from . import _inputs, _native
from .profile import KindCells, Profile, top_contexts

MODES = ("max1", "topk", "all")
DEFAULT_DENSE_LIMIT = 256 << 20
DEFAULT_CONTEXTS = 20
"""Top activating contexts kept per neuron by a CPU recorder unless told otherwise."""


def cuda_available() -> bool:
    """Whether ``Recorder(device="cuda")`` can run here: the CUDA kernels
    were compiled (``txray._native.has_cuda``) and a CUDA device is usable
    at runtime (a driver and at least one GPU)."""
    return bool(_native.has_cuda) and _native.cuda_device_count() > 0


def _parse_device(device: Any) -> int | None:
    """None for the CPU, else the CUDA device ordinal."""
    if device is None:
        return None
    index: int | None
    if isinstance(device, int) and not isinstance(device, bool):
        index, text = device, f"cuda:{device}"
    else:
        text = str(device)
        match = re.fullmatch(r"(cpu|cuda)(?::(\d+))?", text)
        if not match:
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', not {device!r}")
        if match[1] == "cpu":
            return None
        index = int(match[2]) if match[2] is not None else None
    if not _native.has_cuda:
        raise RuntimeError(
            f"Recorder(device={text!r}): this txray was built without CUDA kernels ({_native.cuda_status()}); "
            "rebuild with nvcc on PATH (TXRAY_CUDA=ON makes a missing nvcc an error), or record on the CPU"
        )
    count = _native.cuda_device_count()
    if count == 0:
        raise RuntimeError(
            f"Recorder(device={text!r}): no usable CUDA device ({_native.cuda_status()}); "
            "record on the CPU with device='cpu'"
        )
    if index is None:
        index = 0
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            index = torch.cuda.current_device()
    if not 0 <= index < count:
        raise ValueError(f"Recorder(device={text!r}): CUDA device {index} does not exist ({count} visible)")
    return index


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
        self._device = _parse_device(device)
        args = (
            self.n_neurons,
            list(self.features),
            list(self.features.values()),
            mode,
            self.k if self.k is not None else 1,
            _inputs.integer(dense_limit_bytes, "dense_limit_bytes", minimum=0),
        )
        self._native: Any  # _native.Recorder, or the DeviceRecorder (the same calls, and more)
        if self._device is None:
            self._native = _native.Recorder(*args, contexts=self.contexts)
        else:
            self._native = _native.DeviceRecorder(self._device, *args)
            self._leads: dict[int, tuple[int, ...]] = {}  # leading shape of each update since the last check
            self._inflight: list[Any] = []  # inputs the device may still be reading
        # A CPU recorder locks itself in the native core; a device one
        # serialises its calls with this lock (its Python state changes with them).
        self._lock = threading.RLock()

    @property
    def device(self) -> str:
        """``"cpu"`` or ``"cuda:N"``: where the statistics are kept."""
        return "cpu" if self._device is None else f"cuda:{self._device}"

    @property
    def tokens(self) -> int:
        """Number of (unmasked) tokens recorded so far (on a device: waits
        for the device and raises a pending input error)."""
        if self._device is None:
            return self._native.tokens
        with self._lock:
            self.synchronize()
            return self._native.tokens

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
        if self._device is None:
            return
        with self._lock:
            self._synchronize_device()

    def _synchronize_device(self) -> None:
        update, message = self._native.take_error()
        self._inflight.clear()
        leads, self._leads = self._leads, {}
        if update:
            lead = leads.get(update, ())
            message = re.sub(r"token (\d+)", lambda m: _inputs.describe_position(int(m[1]), lead), message)
            later = max(leads) - update if leads else 0
            raise ValueError(
                f"update {update}: {message}. Nothing of that update"
                + (f" or of the {later} after it" if later else "")
                + " was recorded."
            )

    @property
    def nbytes(self) -> int:
        """Bytes held by the accumulators."""
        if self._device is None:
            return self._native.nbytes
        with self._lock:
            return self._native.nbytes

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
        DLPack. Input errors found on the device are raised later, see
        :meth:`synchronize`.
        """
        if self._device is not None:
            if units is not None:
                raise ValueError("units number the tokens for contexts, which a CUDA recorder does not keep")
            stream = _inputs.stream_handle(stream)
            with self._lock:
                self._update_device(acts, features, mask, stream)
            return
        if stream is not None:
            raise ValueError("stream is only used by CUDA recorders (Recorder(..., device='cuda'))")
        flat, dtype, lead = _inputs.activations(acts, self.n_neurons)
        ids = _inputs.feature_ids(features, self.features, lead)
        valid = _inputs.token_mask(mask, lead)
        numbers = _inputs.units(units, lead)
        try:
            self._native.update(flat, dtype, valid, ids, numbers)
        except _native.InputError as err:
            message = re.sub(r"token (\d+)", lambda m: _inputs.describe_position(int(m[1]), lead), str(err))
            raise ValueError(message) from None

    def _update_device(self, acts: Any, features: Mapping[str, Any], mask: Any, stream: int | None) -> None:
        arr, row_stride, lead = _inputs.device_activations(acts, self.n_neurons, stream)
        if arr.device is not None and arr.device != self._device:
            raise ValueError(f"activations are on cuda:{arr.device}, the recorder on cuda:{self._device}")
        if stream is None:
            stream = arr.stream if arr.stream is not None else 0
        if not isinstance(features, Mapping):
            raise TypeError("features must be a mapping {kind: ids}, e.g. {'token': ids}")
        missing = [k for k in self.features if k not in features]
        extra = [k for k in features if k not in self.features]
        if missing or extra:
            raise ValueError(
                f"features must have exactly the kinds {list(self.features)}; missing {missing}, unexpected {extra}"
            )
        ids, keep = [], [arr.keep]
        for kind in self.features:
            value, held = _inputs.device_ids(features[kind], kind, lead, stream)
            ids.append(value)
            keep.append(held if held is not None else value)
        valid, held = _inputs.device_mask(mask, lead, stream)
        keep.append(held)
        rows = 1
        for n in lead:
            rows *= n
        if self._inflight and self._native.idle():
            self._inflight.clear()
        try:
            update = self._native.update(
                arr.ptr, rows, self.n_neurons, row_stride, arr.strides[-1], arr.dtype, valid, ids, stream
            )
        except _native.InputError as err:
            message = re.sub(r"token (\d+)", lambda m: _inputs.describe_position(int(m[1]), lead), str(err))
            raise ValueError(message) from None
        if update:
            self._leads[update] = lead
            self._inflight.append(keep)

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
        if self._device is None:
            self._native.merge(other._native)  # locks both recorders
            return self
        first, second = sorted((self, other), key=id)  # one order: crossed merges cannot deadlock
        with first._lock, second._lock:
            self.synchronize()
            other.synchronize()
            self._native.merge(other._native)
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
        neuron, _rank, activation, unit = columns  # the engine's ranks are the ones top_contexts gives
        table = top_contexts({"neuron": neuron, "activation": activation, "unit": unit}, self.contexts)
        return table if fill is None else fill(table, self.contexts)

    def context_units(self, latest: bool = False) -> Any:
        """The distinct units (ascending, int64) that some neuron keeps as a context
        now; with ``latest``, only those that entered with the latest :meth:`update`
        (a scan of the kept contexts, cheap enough for every batch). None when the
        recorder keeps no contexts. :func:`txray.record_model` keeps the text of
        these units only."""
        return self._native.context_units(latest) if self.contexts else None

    def _snapshot(self) -> tuple[int, Any, list[Any], Any]:
        """(tokens, mass, [((neuron, feature, count, sum), frequencies) per kind],
        (neuron, rank, activation, unit) or None) of one moment."""
        if self._device is None:
            return self._native.snapshot()
        with self._lock:
            self.synchronize()
            state = [(self._native.cells(i), self._native.frequencies(i)) for i in range(len(self.features))]
            return self._native.tokens, self._native.mass(), state, None

    def _shape(self) -> str:
        return (
            f"(n_neurons={self.n_neurons}, features={self.features}, mode={self.mode!r}, k={self.k}, "
            f"contexts={self.contexts})"
        )

    def __repr__(self) -> str:
        where = "" if self._device is None else f", device={self.device!r}"
        return f"Recorder{self._shape()[:-1]}{where}, tokens={self.tokens})"
