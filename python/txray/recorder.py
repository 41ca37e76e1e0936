"""The Recorder: accumulates what each neuron prefers, batch by batch."""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import numpy as np

from . import _inputs, _native
from .profile import KindCells, Profile

MODES = ("max1", "topk", "all")
DEFAULT_DENSE_LIMIT = 256 << 20


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
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if mode == "topk":
            if k is None:
                raise ValueError("mode='topk' needs k, the number of winners per token")
        elif k not in (None, 1) or (mode == "all" and k is not None):
            raise ValueError(f"k is only used with mode='topk' (got k={k} with mode={mode!r})")
        if isinstance(n_neurons, bool) or int(n_neurons) != n_neurons or n_neurons < 1:
            raise ValueError(f"n_neurons must be a positive integer, not {n_neurons!r}")
        if not features:
            raise ValueError("features needs at least one kind, e.g. {'token': vocab_size}")
        self.n_neurons = int(n_neurons)
        self.features = {str(kind): int(size) for kind, size in features.items()}
        self.mode = mode
        self.k = int(k) if mode == "topk" else (1 if mode == "max1" else None)
        self._native = _native.Recorder(
            self.n_neurons,
            list(self.features),
            list(self.features.values()),
            mode,
            self.k if self.k is not None else 1,
            int(dense_limit_bytes),
        )

    @property
    def tokens(self) -> int:
        """Number of (unmasked) tokens recorded so far."""
        return self._native.tokens

    @property
    def nbytes(self) -> int:
        """Bytes held by the accumulators."""
        return self._native.nbytes

    def update(self, acts: Any, features: Mapping[str, Any], mask: Any = None) -> None:
        """Record one batch.

        ``acts`` has shape ``(..., n_neurons)`` (for example ``(tokens, N)``
        or ``(batch, seq, N)``), float32, float16 or bfloat16, as a NumPy
        array or a CPU torch tensor, contiguous or not. ``features[kind]``
        and ``mask`` have the leading shape ``acts.shape[:-1]``; tokens where
        ``mask`` is False (padding) are skipped. On an input error (an id
        out of range, a NaN) nothing of the batch is recorded.
        """
        flat, dtype, lead = _inputs.activations(acts, self.n_neurons)
        ids = _inputs.feature_ids(features, self.features, lead)
        valid = _inputs.token_mask(mask, lead)
        try:
            self._native.update(flat, dtype, valid, ids)
        except _native.InputError as err:
            message = re.sub(r"token (\d+)", lambda m: _inputs.describe_position(int(m[1]), lead), str(err))
            raise ValueError(message) from None

    def merge(self, other: "Recorder") -> "Recorder":
        """Add another recorder's statistics to this one (same shape); returns self."""
        if not isinstance(other, Recorder):
            raise TypeError(f"can only merge a Recorder, not {type(other).__name__}")
        if (other.n_neurons, other.features, other.mode, other.k) != (self.n_neurons, self.features, self.mode, self.k):
            raise ValueError(
                "cannot merge recorders of different shapes: "
                f"{self._shape()} vs {other._shape()}"
            )
        self._native.merge(other._native)
        return self

    def profile(
        self,
        name: str | None = None,
        feature_names: Mapping[str, Sequence[str]] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Profile:
        """Snapshot the statistics as a :class:`Profile`.

        ``feature_names[kind]`` lists the string of every id of that kind
        (its vocabulary); ``metadata`` is any JSON-serialisable mapping kept
        with the profile (model, layer, corpus, ...).
        """
        if self.tokens == 0:
            raise ValueError("nothing was recorded: call update() with at least one unmasked token first")
        feature_names = dict(feature_names or {})
        unknown = [k for k in feature_names if k not in self.features]
        if unknown:
            raise ValueError(f"feature_names has kinds {unknown} that the recorder does not have")
        kinds = {}
        for index, (kind, size) in enumerate(self.features.items()):
            neuron, feature, count, total = self._native.cells(index)
            kinds[kind] = KindCells(
                neuron=neuron,
                feature=feature,
                count=count,
                sum=total,
                frequencies=self._native.frequencies(index),
                names=feature_names.get(kind),
            )
        return Profile(
            n_neurons=self.n_neurons,
            mode=self.mode,
            k=self.k,
            kinds=kinds,
            mass=self._native.mass(),
            tokens=self.tokens,
            name=name,
            metadata=metadata,
        )

    def _shape(self) -> str:
        return f"(n_neurons={self.n_neurons}, features={self.features}, mode={self.mode!r}, k={self.k})"

    def __repr__(self) -> str:
        return f"Recorder{self._shape()[:-1]}, tokens={self.tokens})"
