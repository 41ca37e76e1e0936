"""How many CPU threads the native core (OpenMP) and the numba kernels use."""

from __future__ import annotations

from . import _native


def set_num_threads(n: int) -> None:
    """Use ``n`` threads for recording and for the Hellinger kernels."""
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"the number of threads must be a positive integer, not {n!r}")
    _native.set_num_threads(int(n))
    import numba

    numba.set_num_threads(min(int(n), numba.config.NUMBA_NUM_THREADS))


def get_num_threads() -> int:
    """Threads the native core uses."""
    return _native.get_num_threads()
