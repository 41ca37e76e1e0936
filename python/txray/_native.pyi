"""txray native core: fused recording of neuron feature preferences (cpp/bindings.cpp).

``DeviceRecorder``, ``DeviceError``, ``cuda_pointer_device`` and
``cuda_order_after`` exist only in a build with CUDA kernels (``has_cuda``); the rest is in every build.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

class InputError(ValueError):
    """Input the native core cannot take (a ValueError). ``token``: the failing
    token's position in the flattened batch (-1: none); ``template``: the
    message with ``{token}`` where the token goes."""

    token: int
    template: str

class DeviceError(RuntimeError):
    """A CUDA failure (CUDA builds only)."""

has_cuda: bool

class Recorder:
    def __init__(
        self,
        n_neurons: int,
        kinds: Sequence[str],
        vocab_sizes: Sequence[int],
        mode: str,
        k: int,
        dense_limit_bytes: int,
        contexts: int = 0,
    ) -> None: ...
    def update(
        self,
        acts: npt.NDArray[np.generic],
        dtype: str,
        mask: npt.NDArray[np.bool_] | None,
        features: Sequence[npt.NDArray[np.int64]],
        units: npt.NDArray[np.int64] | None = None,
    ) -> None: ...
    def merge(self, other: Recorder) -> None: ...
    def cells(
        self, kind: int
    ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """(neuron int32, feature int32, count int64, sum float64) of one kind, sorted by neuron then feature"""
    def snapshot(
        self,
    ) -> tuple[
        int,
        npt.NDArray[np.float64],
        list[
            tuple[
                tuple[npt.NDArray[np.int32], npt.NDArray[np.int32], npt.NDArray[np.int64], npt.NDArray[np.float64]],
                npt.NDArray[np.int64],
            ]
        ],
        tuple[npt.NDArray[np.int32], npt.NDArray[np.int32], npt.NDArray[np.float64], npt.NDArray[np.int64]] | None,
    ]:
        """(tokens, mass, [(cells, frequencies) per kind], contexts or None) of one moment"""
    def contexts(
        self,
    ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32], npt.NDArray[np.float64], npt.NDArray[np.int64]] | None:
        """(neuron int32, rank int32, activation float64, unit int64) of the kept contexts, sorted by neuron then rank; None when the recorder keeps none"""
    def context_units(self, latest: bool = False) -> npt.NDArray[np.int64] | None:
        """the distinct units some neuron keeps as a context, ascending (with latest: only those that entered with the latest update); None when the recorder keeps none"""
    def mark_context_units(self, lo: int, mark: npt.NDArray[np.uint8]) -> int:
        """sets mark[u - lo] (uint8) for each unit u that entered some neuron's contexts with the latest update; returns how many such candidates (one per neuron holding one) fell outside the mark"""
    def frequencies(self, arg0: int, /) -> npt.NDArray[np.int64]: ...
    def mass(self) -> npt.NDArray[np.float64]: ...
    def dense(self, arg0: int, /) -> bool: ...
    @property
    def tokens(self) -> int: ...
    @property
    def nbytes(self) -> int: ...

class DeviceRecorder:
    def __init__(
        self,
        device: int,
        n_neurons: int,
        kinds: Sequence[str],
        vocab_sizes: Sequence[int],
        mode: str,
        k: int,
        dense_limit_bytes: int,
    ) -> None: ...
    def update(
        self,
        data: int,
        rows: int,
        cols: int,
        row_stride: int,
        col_stride: int,
        dtype: str,
        mask: int | npt.NDArray[np.bool_] | None,
        features: Sequence[int | npt.NDArray[np.int64]],
        stream: int,
    ) -> int: ...
    def merge(self, arg0: DeviceRecorder, /) -> None: ...
    def idle(self) -> bool: ...
    def completed(self) -> int:
        """the highest n such that updates 1..n have finished on the device (never blocks)"""

    def synchronize(self) -> None: ...
    def take_error(self) -> tuple[int, int, str]:
        """(update, token, message with '{token}') of the first input error found on the device; update 0: none"""

    def cells(
        self, arg0: int, /
    ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32], npt.NDArray[np.int64], npt.NDArray[np.float64]]: ...
    def frequencies(self, arg0: int, /) -> npt.NDArray[np.int64]: ...
    def mass(self) -> npt.NDArray[np.float64]: ...
    def dense(self, arg0: int, /) -> bool: ...
    @property
    def tokens(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def device(self) -> int: ...

def set_num_threads(arg0: int, /) -> None: ...
def get_num_threads() -> int: ...
def has_openmp() -> bool: ...
def simd() -> str:
    """instruction set of the CPU kernels in use: 'avx512', 'avx2', 'baseline' or 'native' (-march=native build)"""

def simd_variants() -> list[str]:
    """instruction sets this build has and this CPU runs, best first"""

def set_simd(name: str) -> None:
    """use the kernels of this instruction set from now on (one of simd_variants(); for tests)"""

def stream_read(acts: npt.NDArray[np.generic], dtype: str = "float32") -> float:
    """sum of a 2-D activation array read on all threads as the argmax reads it (the benchmark's floor)"""

def select_winners(
    acts: npt.NDArray[np.generic], dtype: str = "float32", k: int = 1
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
    """(neuron int32, value float32) of every row's k winners, selected on all threads as Recorder.update selects
    them, nothing recorded (bench_floor.py)"""

def dlpack_info(capsule: object) -> dict[str, Any]:
    """pointer, shape, element strides, dtype and device of an unconsumed DLPack capsule (not consumed)"""

def cuda_device_count() -> int: ...
def cuda_status() -> str:
    """'' when a CUDA device is usable, otherwise the reason"""

def cuda_pointer_device(arg0: int, /) -> int: ...
def cuda_order_after(consumer: int, producer: int) -> None:
    """order work enqueued on stream `consumer` from now on after the work enqueued so far on `producer`"""
