"""The device backend of :class:`txray.Recorder` (``device="cuda"``): device
arrays (torch CUDA tensors, ``__cuda_array_interface__``, DLPack) turned into
what the CUDA engine takes, the streams the kernels run on and wait for, the
inputs kept alive while the device may read them, and the input errors the
kernels find, raised at the next synchronisation point.

The extension never links against libtorch: a device array reaches it as a
raw pointer, a shape, element strides, a dtype name and a stream handle.
"""

from __future__ import annotations

import re
import sys
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from . import _native
from ._inputs import ACTIVATION_DTYPES, TokenError, describe_position, token_mask

CAPTURE_REFUSED = (
    "txray cannot record while a CUDA graph is being captured (an update allocates and may synchronise): "
    "record outside the captured region, e.g. on the outputs of the graph's replay"
)
LEGACY_STREAM = 1  # cudaStreamLegacy: the legacy default stream, as DLPack and __cuda_array_interface__ name it


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


# __cuda_array_interface__ typestr (without the byte-order character) -> dtype
_TYPESTR = {
    "f4": "float32",
    "f2": "float16",
    "f8": "float64",
    "i8": "int64",
    "i4": "int32",
    "i2": "int16",
    "i1": "int8",
    "u8": "uint64",
    "u4": "uint32",
    "u2": "uint16",
    "u1": "uint8",
    "b1": "bool",
}
_ITEMSIZE = {
    "float32": 4,
    "float16": 2,
    "bfloat16": 2,
    "float64": 8,
    "int64": 8,
    "int32": 4,
    "int16": 2,
    "int8": 1,
    "uint64": 8,
    "uint32": 4,
    "uint16": 2,
    "uint8": 1,
    "bool": 1,
}
_DLPACK_CUDA = (2, 13)  # kDLCUDA, kDLCUDAManaged
_DLPACK_HOST = (1, 3)  # kDLCPU, kDLCUDAHost


class DeviceArray:
    """A device buffer as the native core takes it. ``strides`` are in
    elements; ``device`` is the CUDA ordinal when the source says it;
    ``stream`` the stream handle the producer asks consumers to use (None:
    not given); ``keep`` must stay alive until the device is done with it."""

    __slots__ = ("ptr", "shape", "strides", "dtype", "device", "stream", "keep")

    def __init__(
        self,
        ptr: int,
        shape: Iterable[int],
        strides: Iterable[int],
        dtype: str,
        device: int | None = None,
        stream: int | None = None,
        keep: Any = None,
    ) -> None:
        self.ptr = int(ptr)
        self.shape = tuple(int(s) for s in shape)
        self.strides = tuple(int(s) for s in strides)
        self.dtype = dtype
        self.device = device
        self.stream = stream
        self.keep = keep

    def __repr__(self) -> str:
        return (
            f"DeviceArray(ptr={self.ptr:#x}, shape={self.shape}, strides={self.strides}, dtype={self.dtype}, "
            f"device={self.device}, stream={self.stream})"
        )


def _contiguous_strides(shape: Sequence[int]) -> tuple[int, ...]:
    out, step = [], 1
    for size in reversed(shape):
        out.append(step)
        step *= int(size)
    return tuple(reversed(out))


def stream_handle(stream: Any) -> int | None:
    """A cudaStream_t as an integer from an int, a torch.cuda.Stream (or
    anything with ``cuda_stream``/``ptr``), or None."""
    if stream is None:
        return None
    if isinstance(stream, bool):
        raise TypeError("stream must be a CUDA stream handle (int) or a stream object, not a bool")
    if isinstance(stream, int):
        return stream
    for attr in ("cuda_stream", "ptr", "handle"):
        value = getattr(stream, attr, None)
        if isinstance(value, int):
            return value
    raise TypeError(f"cannot get a CUDA stream handle from {type(stream).__name__}")


def from_cuda_array_interface(obj: Any, what: str) -> DeviceArray:
    """Parse ``obj.__cuda_array_interface__`` (versions 0 to 3)."""
    cai = obj.__cuda_array_interface__
    if not isinstance(cai, Mapping):
        raise TypeError(f"{what}: __cuda_array_interface__ must be a dict")
    try:
        ptr = cai["data"][0]
        shape = tuple(int(s) for s in cai["shape"])
        typestr = str(cai["typestr"])
    except (KeyError, TypeError, IndexError) as err:
        raise TypeError(f"{what}: malformed __cuda_array_interface__ ({err!r})") from None
    if cai.get("mask") is not None:
        raise ValueError(f"{what}: masked arrays (__cuda_array_interface__ 'mask') are not supported")
    if len(typestr) < 3 or typestr[0] not in "<|=" or typestr[1:] not in _TYPESTR:
        raise TypeError(
            f"{what}: unsupported __cuda_array_interface__ typestr {typestr!r}; txray reads little-endian "
            "float32/float16 activations and integer ids (bfloat16: pass a torch tensor or use DLPack)"
        )
    dtype = _TYPESTR[typestr[1:]]
    item = _ITEMSIZE[dtype]
    strides = cai.get("strides")
    if strides is None:
        strides = _contiguous_strides(shape)
    else:
        strides = tuple(int(s) for s in strides)
        if len(strides) != len(shape) or any(s % item for s in strides):
            raise ValueError(f"{what}: strides {strides} are not multiples of the item size {item}")
        strides = tuple(s // item for s in strides)
    # v3: the stream the producer wrote the data on; consumers order their work after it.
    stream = cai.get("stream") if int(cai.get("version", 0)) >= 3 else None
    if stream == 0:
        raise ValueError(f"{what}: __cuda_array_interface__ stream 0 is disallowed by the protocol (use 1 or 2)")
    if stream is not None:
        stream = int(stream)
    return DeviceArray(ptr or 0, shape, strides, dtype, device=None, stream=stream, keep=obj)


def from_dlpack(obj: Any, what: str, stream: int | None) -> DeviceArray | None:
    """A DLPack producer's buffer; None when it lives in host memory."""
    device_type, device_id = obj.__dlpack_device__()
    if int(device_type) in _DLPACK_HOST:
        return None
    if int(device_type) not in _DLPACK_CUDA:
        raise ValueError(f"{what} is on DLPack device type {int(device_type)}; txray reads CUDA or host memory")
    # The consumer names the stream it will use; the producer orders its
    # work before it. The spec forbids 0: the legacy default stream is 1.
    use = LEGACY_STREAM if not stream else stream
    try:
        capsule = obj.__dlpack__(stream=use)
    except TypeError:
        capsule = obj.__dlpack__()
    info = _native.dlpack_info(capsule)
    return DeviceArray(
        info["ptr"],
        info["shape"],
        info["strides"],
        info["dtype"],
        device=int(info["device_id"]),
        stream=use,
        keep=(obj, capsule),
    )


def device_array(x: Any, what: str, stream: int | None = None) -> DeviceArray | None:
    """The device buffer behind ``x``, or None when ``x`` is in host memory
    (a NumPy array, a list, a CPU torch tensor)."""
    if _is_torch(x) and hasattr(x, "device"):
        kind = x.device.type
        if kind == "cpu":
            return None
        if kind != "cuda":
            raise ValueError(f"{what} is on device '{x.device}'; txray records CPU or CUDA tensors")
        import torch

        x = x.detach()
        dtype = "bfloat16" if x.dtype == torch.bfloat16 else str(x.dtype).replace("torch.", "")
        own = torch.cuda.current_stream(x.device).cuda_stream
        return DeviceArray(x.data_ptr(), x.shape, x.stride(), dtype, device=x.device.index, stream=own, keep=x)
    if isinstance(x, np.ndarray):
        return None
    if hasattr(x, "__cuda_array_interface__"):
        return from_cuda_array_interface(x, what)
    if hasattr(x, "__dlpack__") and hasattr(x, "__dlpack_device__"):
        return from_dlpack(x, what, stream)
    return None


def is_contiguous(shape: Sequence[int], strides: Sequence[int]) -> bool:
    """Row-major contiguous, ignoring the strides of size-1 axes (as torch does:
    ``input_ids[:, -1:]`` of batch 1 has shape (1, 1) and strides (S, 1))."""
    step = 1
    for size, stride in zip(reversed(shape), reversed(strides)):
        if size != 1 and stride != step:
            return False
        step *= size
    return True


def collapse_rows(shape: tuple[int, ...], strides: tuple[int, ...]) -> int | None:
    """Element stride of the single token axis that the leading axes
    ``shape`` flatten to, or None when they cannot be flattened without a
    copy."""
    dims = [(n, s) for n, s in zip(shape, strides) if n != 1]
    if not dims:
        return strides[-1] if strides else 0
    for (_, outer), (n_inner, inner) in zip(dims[:-1], dims[1:]):
        if outer != inner * n_inner:
            return None
    return dims[-1][1]


def device_activations(acts: Any, n_neurons: int, stream: int | None) -> tuple[DeviceArray, int, tuple[int, ...]]:
    """(DeviceArray of a (tokens, neurons) view, row stride, leading shape)."""
    arr = device_array(acts, "activations", stream)
    if arr is None:
        raise ValueError(
            "activations are in host memory; this recorder runs on a CUDA device: pass a CUDA tensor "
            "(or a __cuda_array_interface__ / DLPack device array), or record on the CPU with Recorder(device='cpu')"
        )
    if arr.dtype not in ACTIVATION_DTYPES:
        raise TypeError(
            f"activations have dtype {arr.dtype}; txray records float32, float16 or bfloat16 (convert with .float())"
        )
    if len(arr.shape) < 2:
        raise ValueError(f"activations must have shape (..., tokens, {n_neurons}), got {arr.shape}")
    if arr.shape[-1] != n_neurons:
        raise ValueError(
            f"activations have {arr.shape[-1]} neurons (last axis of shape {arr.shape}), "
            f"the recorder was made for {n_neurons}"
        )
    lead = arr.shape[:-1]
    row_stride = collapse_rows(lead, arr.strides[:-1])
    if row_stride is None:
        if _is_torch(acts):  # a copy on the device, on torch's current stream
            flat = device_array(acts.reshape(-1, n_neurons), "activations", stream)
            assert flat is not None  # still a CUDA tensor
            return flat, flat.strides[0], lead
        raise ValueError(
            f"activations of shape {arr.shape} with strides {arr.strides} (elements) cannot be flattened to "
            "(tokens, neurons) without a copy; pass a contiguous array"
        )
    return arr, row_stride, lead


def device_ids(ids: Any, kind: str, lead: tuple[int, ...], stream: int | None) -> tuple[np.ndarray | int, Any]:
    """A device pointer (int) to contiguous int64 ids, with what to keep
    alive; or a host int64 array (copied by the extension)."""
    arr = device_array(ids, f"feature '{kind}'", stream)
    if arr is None:
        host = np.asarray(ids.numpy() if _is_torch(ids) else ids)
        if host.dtype.kind not in "iu":
            raise TypeError(f"feature '{kind}' ids must be integers, got dtype {host.dtype}")
        if host.shape != lead:
            raise ValueError(f"feature '{kind}' has shape {host.shape}; the activations need {lead}")
        return np.ascontiguousarray(host.reshape(-1), dtype=np.int64), None
    if not (arr.dtype.startswith("int") or arr.dtype.startswith("uint")):
        raise TypeError(f"feature '{kind}' ids must be integers, got dtype {arr.dtype}")
    if arr.shape != lead:
        raise ValueError(f"feature '{kind}' has shape {arr.shape}; the activations need {lead}")
    if arr.dtype == "int64" and is_contiguous(arr.shape, arr.strides):
        return arr.ptr, arr
    if _is_torch(ids):  # convert on the device, on torch's current stream (once: no recursion)
        import torch

        converted = device_array(ids.to(torch.int64).contiguous(), f"feature '{kind}'", stream)
        assert converted is not None and is_contiguous(converted.shape, converted.strides)
        return converted.ptr, converted
    raise TypeError(
        f"feature '{kind}' ids on the device must be contiguous int64 (got {arr.dtype}, strides {arr.strides}); "
        "convert them, or pass them as a host array"
    )


def device_mask(mask: Any, lead: tuple[int, ...], stream: int | None) -> tuple[np.ndarray | int | None, Any]:
    """None, a device pointer (int) to one byte per token, or a host bool array."""
    if mask is None:
        return None, None
    arr = device_array(mask, "mask", stream)
    if arr is None:
        return token_mask(mask.numpy() if _is_torch(mask) else mask, lead), None
    if arr.shape != lead:
        raise ValueError(f"mask has shape {arr.shape}; the activations need {lead}")
    if arr.dtype in ("bool", "uint8") and is_contiguous(arr.shape, arr.strides):
        return arr.ptr, arr
    if _is_torch(mask):
        if mask.is_floating_point() or mask.is_complex():
            raise TypeError(f"mask must be boolean (or 0/1 integers), got dtype {arr.dtype}")
        converted = device_array((mask != 0).contiguous(), "mask", stream)
        assert converted is not None and is_contiguous(converted.shape, converted.strides)
        return converted.ptr, converted
    raise TypeError(
        f"a device mask must be a contiguous bool or uint8 array (got {arr.dtype}, strides {arr.strides}); "
        "convert it, or pass it as a host array"
    )


def cuda_available() -> bool:
    """Whether ``Recorder(device="cuda")`` can run here: the CUDA kernels
    were compiled (``txray._native.has_cuda``) and a CUDA device is usable
    at runtime (a driver and at least one GPU)."""
    return bool(_native.has_cuda) and _native.cuda_device_count() > 0


def parse_device(device: Any) -> int | None:
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


def _torch_stream(device: int) -> int | None:
    """torch's current stream on ``device`` (a handle), or None without torch's CUDA."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return int(torch.cuda.current_stream(device).cuda_stream)


class DeviceBackend:
    """The CUDA half of a :class:`txray.Recorder`: its device recorder, the
    input checks of device arrays, the streams, the inputs in flight and the
    errors found on the device. Not synchronised: the Recorder serialises the
    calls."""

    def __init__(
        self,
        device: int,
        n_neurons: int,
        kinds: Mapping[str, int],
        mode: str,
        k: int,
        dense_limit_bytes: int,
        native: Any = None,
    ) -> None:
        """``native``: the engine's recorder; by default a new ``_native.DeviceRecorder``
        (tests pass a stand-in that records the calls)."""
        self.device, self.n_neurons, self.kinds = device, n_neurons, dict(kinds)
        if native is None:
            native = _native.DeviceRecorder(
                device, n_neurons, list(kinds), list(kinds.values()), mode, k, dense_limit_bytes
            )
        self.native = native
        self._leads: dict[int, tuple[int, ...]] = {}  # leading shape of each update since the last check
        # (update number, inputs the device may still read); dropped once the device is past that update.
        self._inflight: deque[tuple[int, list[Any]]] = deque()

    @property
    def inflight(self) -> int:
        """How many updates' inputs are still kept alive (for tests)."""
        return len(self._inflight)

    def update(self, acts: Any, features: Mapping[str, Any], mask: Any, stream: Any, units: Any = None) -> None:
        """Check the inputs, order the kernels after their producers, enqueue."""
        if units is not None:
            raise ValueError("units number the tokens for contexts, which a CUDA recorder does not keep")
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
            raise ValueError(CAPTURE_REFUSED)
        explicit = stream_handle(stream)
        arr, row_stride, lead = device_activations(acts, self.n_neurons, explicit)
        if arr.device is not None and arr.device != self.device:
            raise ValueError(f"activations are on cuda:{arr.device}, the recorder on cuda:{self.device}")
        if not isinstance(features, Mapping):
            raise TypeError("features must be a mapping {kind: ids}, e.g. {'token': ids}")
        missing = [k for k in self.kinds if k not in features]
        extra = [k for k in features if k not in self.kinds]
        if missing or extra:
            raise ValueError(
                f"features must have exactly the kinds {list(self.kinds)}; missing {missing}, unexpected {extra}"
            )
        ids, keep = [], [arr.keep]
        for kind in self.kinds:
            value, held = device_ids(features[kind], kind, lead, explicit)
            ids.append(value)
            keep.append(held if held is not None else value)
        valid, held = device_mask(mask, lead, explicit)
        keep.append(held)
        # The kernels run on the explicit stream, else on the producer's (torch's current stream,
        # the __cuda_array_interface__ stream), else on the legacy default stream; they wait for
        # every producer they do not run on: torch's current stream (where torch tensors and any
        # conversions above were made) and the interface's stream.
        torch_stream = (
            _torch_stream(self.device) if any(_is_torch(x) for x in (acts, mask, *features.values())) else None
        )
        run = explicit if explicit is not None else (arr.stream if arr.stream is not None else LEGACY_STREAM)
        producers = {p for p in (torch_stream, arr.stream) if p is not None and p != run}
        for producer in sorted(producers):
            _native.cuda_order_after(run, producer)
        rows = 1
        for n in lead:
            rows *= n
        try:
            update = self.native.update(
                arr.ptr, rows, self.n_neurons, row_stride, arr.strides[-1], arr.dtype, valid, ids, run
            )
        except _native.InputError as err:
            raise input_error(err, lead) from None
        if update:
            self._leads[update] = lead
            self._inflight.append((update, keep))
        self._release_finished()

    def _release_finished(self) -> None:
        """Drop the inputs of the updates the device is done with (one event query)."""
        if not self._inflight:
            return
        done = self.native.completed()
        while self._inflight and self._inflight[0][0] <= done:
            self._inflight.popleft()

    def synchronize(self) -> None:
        """Wait for the device; raise the first input error found since the last call."""
        update, token, template = self.native.take_error()
        self._inflight.clear()
        leads, self._leads = self._leads, {}
        if update:
            message = (
                template.replace("{token}", describe_position(token, leads.get(update, ()))) if token >= 0 else template
            )
            later = max(leads) - update if leads else 0
            raise ValueError(
                f"update {update}: {message}. Nothing of that update"
                + (f" or of the {later} after it" if later else "")
                + " was recorded."
            )

    def merge(self, other: DeviceBackend) -> None:
        self.synchronize()
        other.synchronize()
        self.native.merge(other.native)

    def snapshot(self) -> tuple[int, Any, list[Any], Any]:
        """(tokens, mass, [(cells, frequencies) per kind], None: no contexts) of one moment."""
        self.synchronize()
        state = [(self.native.cells(i), self.native.frequencies(i)) for i in range(len(self.kinds))]
        return self.native.tokens, self.native.mass(), state, None

    @property
    def tokens(self) -> int:
        self.synchronize()
        return int(self.native.tokens)

    @property
    def nbytes(self) -> int:
        return int(self.native.nbytes)


def input_error(err: Any, lead: tuple[int, ...]) -> ValueError:
    """An engine InputError as a ValueError whose message names its token in the caller's
    shape; a :class:`TokenError` (with the token as data) when it concerns one token
    (the engine gives it as data: ``err.token``, ``err.template``)."""
    token = getattr(err, "token", -1)
    if token is None or token < 0:
        return ValueError(str(err))
    token = int(token)
    template = str(err.template)
    return TokenError(template.replace("{token}", describe_position(token, lead)), token, template)
