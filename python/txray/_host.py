"""The host backend of :class:`txray.Recorder` (the CPU engine): host arrays
checked and flattened (txray._inputs), then recorded by the native core, which
checks and records each update whole before it returns."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import _inputs, _native
from ._device import input_error


class HostBackend:
    """The CPU half of a :class:`txray.Recorder`. The native recorder locks
    itself (its calls release the GIL)."""

    def __init__(
        self, n_neurons: int, kinds: Mapping[str, int], mode: str, k: int, dense_limit_bytes: int, contexts: int = 0
    ) -> None:
        """``contexts``: top activating contexts kept per neuron (0: none)."""
        self.n_neurons, self.kinds = n_neurons, dict(kinds)
        self.native = _native.Recorder(
            n_neurons, list(kinds), list(kinds.values()), mode, k, dense_limit_bytes, contexts=contexts
        )

    def update(self, acts: Any, features: Mapping[str, Any], mask: Any, stream: Any, units: Any = None) -> None:
        if stream is not None:
            raise ValueError("stream is only used by CUDA recorders (Recorder(..., device='cuda'))")
        flat, dtype, lead = _inputs.activations(acts, self.n_neurons)
        ids = _inputs.feature_ids(features, self.kinds, lead)
        valid = _inputs.token_mask(mask, lead)
        numbers = _inputs.units(units, lead)
        try:
            self.native.update(flat, dtype, valid, ids, numbers)
        except _native.InputError as err:
            raise input_error(err, lead) from None

    def synchronize(self) -> None:
        """Nothing to wait for: every update was checked and recorded before it returned."""

    def merge(self, other: HostBackend) -> None:
        self.native.merge(other.native)  # locks both recorders

    def snapshot(self) -> tuple[int, Any, list[Any], Any]:
        """(tokens, mass, [(cells, frequencies) per kind], contexts or None) of one moment."""
        return self.native.snapshot()

    @property
    def tokens(self) -> int:
        return int(self.native.tokens)

    @property
    def nbytes(self) -> int:
        return int(self.native.nbytes)
