"""Turning user arrays (NumPy, torch CPU tensors, array-likes) into the flat
buffers the native core reads, with errors that say what to fix."""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

ACTIVATION_DTYPES = ("float32", "float16", "bfloat16")


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _torch_to_numpy(x: Any, what: str) -> np.ndarray:
    if x.device.type != "cpu":
        raise ValueError(
            f"{what} is on device '{x.device}'; this recorder runs on the CPU: move it with .cpu(), "
            "or record on the GPU with Recorder(..., device='cuda')"
        )
    return x.detach().numpy()


def activations(acts: Any, n_neurons: int) -> tuple[np.ndarray, str, tuple[int, ...]]:
    """Return a 2-D (tokens, neurons) view, its logical dtype name, and the
    leading shape (for example (batch, sequence)) that was flattened."""
    if _is_torch(acts):
        import torch

        if acts.dtype == torch.bfloat16:
            array = _torch_to_numpy(acts.view(torch.int16), "activations").view(np.uint16)
            dtype = "bfloat16"
        else:
            array = _torch_to_numpy(acts, "activations")
            dtype = str(array.dtype)
    else:
        array = np.asarray(acts)
        dtype = str(array.dtype)
    if dtype not in ACTIVATION_DTYPES:
        raise TypeError(
            f"activations have dtype {dtype}; txray records float32, float16 or bfloat16 "
            "(convert with .astype(np.float32) or .float())"
        )
    if array.ndim < 2:
        raise ValueError(f"activations must have shape (..., tokens, {n_neurons}), got {array.shape}")
    if array.shape[-1] != n_neurons:
        raise ValueError(
            f"activations have {array.shape[-1]} neurons (last axis of shape {array.shape}), "
            f"the recorder was made for {n_neurons}"
        )
    lead = tuple(array.shape[:-1])
    return array.reshape(-1, n_neurons), dtype, lead


def feature_ids(features: Mapping[str, Any], kinds: Mapping[str, int], lead: tuple[int, ...]) -> list[np.ndarray]:
    """One contiguous int64 array per feature kind, in the recorder's kind order."""
    if not isinstance(features, Mapping):
        raise TypeError("features must be a mapping {kind: ids}, e.g. {'token': ids}")
    missing = [k for k in kinds if k not in features]
    extra = [k for k in features if k not in kinds]
    if missing or extra:
        raise ValueError(f"features must have exactly the kinds {list(kinds)}; missing {missing}, unexpected {extra}")
    out = []
    for kind in kinds:
        given = features[kind]
        ids = _torch_to_numpy(given, f"feature '{kind}'") if _is_torch(given) else np.asarray(given)
        if ids.dtype.kind in "fO" and not isinstance(given, np.ndarray) and not _is_torch(given):
            _check_huge_ids(given, kind, kinds[kind], lead)  # Python ints beyond int64 make a float/object array
        if ids.dtype.kind not in "iu":
            raise TypeError(f"feature '{kind}' ids must be integers, got dtype {ids.dtype}")
        if ids.shape != lead:
            raise ValueError(f"feature '{kind}' has shape {ids.shape}; the activations need {lead}")
        flat = ids.reshape(-1)
        if flat.dtype == np.uint64 and flat.size and flat.max() >= kinds[kind]:
            _raise_outside(kind, int(np.argmax(flat >= kinds[kind])), flat, kinds[kind], lead)
        out.append(np.ascontiguousarray(flat, dtype=np.int64))
    return out


def _raise_outside(kind: str, index: int, flat: Any, size: int, lead: tuple[int, ...]) -> None:
    """The native core's error for an id outside its vocabulary, with the id's
    true value (an int64 view would show 2**64-1 as -1)."""
    raise ValueError(
        f"feature '{kind}' of {describe_position(index, lead)} is {int(flat[index])}, outside its vocabulary [0, {size})"
    )


def _check_huge_ids(given: Any, kind: str, size: int, lead: tuple[int, ...]) -> None:
    values = np.asarray(given, dtype=object)
    if values.shape != lead:
        return
    flat = values.reshape(-1)
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in flat):
        return
    bad = next((i for i, v in enumerate(flat) if not 0 <= v < size), None)
    if bad is not None:
        _raise_outside(kind, bad, flat, size, lead)


def token_mask(mask: Any, lead: tuple[int, ...]) -> np.ndarray | None:
    """A contiguous bool array (True = record this token), or None for all."""
    if mask is None:
        return None
    mask = _torch_to_numpy(mask, "mask") if _is_torch(mask) else np.asarray(mask)
    if mask.dtype != np.bool_ and mask.dtype.kind not in "iu":
        raise TypeError(f"mask must be boolean (or 0/1 integers), got dtype {mask.dtype}")
    if mask.shape != lead:
        raise ValueError(f"mask has shape {mask.shape}; the activations need {lead}")
    return np.ascontiguousarray(mask.reshape(-1) != 0)


def units(numbers: Any, lead: tuple[int, ...]) -> np.ndarray | None:
    """A contiguous int64 array of the tokens' unit numbers (for contexts), or None."""
    if numbers is None:
        return None
    numbers = _torch_to_numpy(numbers, "units") if _is_torch(numbers) else np.asarray(numbers)
    if numbers.dtype.kind not in "iu":
        if numbers.size:
            raise TypeError(f"units must be integers, got dtype {numbers.dtype}")
        numbers = numbers.astype(np.int64)  # an empty list is float64 to NumPy
    if numbers.shape != lead:
        raise ValueError(f"units has shape {numbers.shape}; the activations need {lead}")
    flat = numbers.reshape(-1)
    if flat.dtype == np.uint64 and flat.size and flat.max() > np.iinfo(np.int64).max:
        raise ValueError(f"units must fit in int64; {describe_position(int(np.argmax(flat > 2**63 - 1)), lead)} is not")
    return np.ascontiguousarray(flat, dtype=np.int64)


def describe_position(flat: int, lead: tuple[int, ...]) -> str:
    """'token 17' for flat batches, 'token 17 (sequence 1, position 5)' for (batch, seq) ones."""
    if len(lead) < 2:
        return f"token {flat}"
    where = ", ".join(f"axis {i}: {j}" for i, j in enumerate(np.unravel_index(flat, lead)))
    return f"token {flat} ({where})"


# -- device arrays (Recorder(device="cuda")) ----------------------------------
#
# The extension never links against libtorch: a device array reaches it as a
# raw pointer, a shape, element strides, a dtype name and a stream handle.
# Sources: torch CUDA tensors, objects with __cuda_array_interface__ (CuPy,
# Numba, JAX, ...), and DLPack producers.

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
    stream = cai.get("stream") if int(cai.get("version", 0)) >= 3 else None
    if stream == 0:
        raise ValueError(f"{what}: __cuda_array_interface__ stream 0 is disallowed by the protocol (use 1 or 2)")
    if stream is not None:
        stream = int(stream)
    return DeviceArray(ptr or 0, shape, strides, dtype, device=None, stream=stream, keep=obj)


def from_dlpack(obj: Any, what: str, stream: int | None) -> DeviceArray | None:
    """A DLPack producer's buffer; None when it lives in host memory."""
    from . import _native

    device_type, device_id = obj.__dlpack_device__()
    if int(device_type) in _DLPACK_HOST:
        return None
    if int(device_type) not in _DLPACK_CUDA:
        raise ValueError(f"{what} is on DLPack device type {int(device_type)}; txray reads CUDA or host memory")
    # The consumer names the stream it will use; the producer orders its
    # work before it. 1 is the legacy default stream.
    use = 1 if stream is None else stream
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
            return device_activations(acts.reshape(-1, n_neurons), n_neurons, stream)[:2] + (lead,)
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
    if arr.dtype == "int64" and arr.strides == _contiguous_strides(arr.shape):
        return arr.ptr, arr
    if _is_torch(ids):  # convert on the device, on torch's current stream
        import torch

        return device_ids(ids.to(torch.int64).contiguous(), kind, lead, stream)
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
    if arr.dtype in ("bool", "uint8") and arr.strides == _contiguous_strides(arr.shape):
        return arr.ptr, arr
    if _is_torch(mask):
        if mask.is_floating_point() or mask.is_complex():
            raise TypeError(f"mask must be boolean (or 0/1 integers), got dtype {arr.dtype}")
        return device_mask((mask != 0).contiguous(), lead, stream)
    raise TypeError(
        f"a device mask must be a contiguous bool or uint8 array (got {arr.dtype}, strides {arr.strides}); "
        "convert it, or pass it as a host array"
    )


# -- arguments ------------------------------------------------------------------


def integer(value: Any, name: str, minimum: int | None = None) -> int:
    """``value`` as an int, or a clear error: integers (Python or NumPy) and
    integral floats (``3.0``) are taken; ``2.7``, bools, strings and None are
    refused rather than truncated."""
    if isinstance(value, (bool, np.bool_)) or value is None:
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if isinstance(value, (int, np.integer)):
        number = int(value)
    elif isinstance(value, (float, np.floating)):
        if not float(value).is_integer():
            raise ValueError(f"{name} must be a whole number, not {value!r}")
        number = int(value)
    else:
        try:
            number = operator.index(value)
        except TypeError:
            raise TypeError(f"{name} must be an integer, not {type(value).__name__} {value!r}") from None
    if minimum is not None and number < minimum:
        wanted = "a positive integer" if minimum == 1 else f"an integer of at least {minimum}"
        raise ValueError(f"{name} must be {wanted}, not {number}")
    return number


def neuron_ids(neurons: Any, n_neurons: int, name: str = "neuron") -> np.ndarray:
    """Neuron ids (one or a sequence) as int64, or a clear error naming ``name``: each an
    integer (see :func:`integer`) in 0..n_neurons-1."""
    values = [neurons] if np.ndim(neurons) == 0 else list(neurons)
    ids = np.array([integer(v, name) for v in values], dtype=np.int64)
    bad = ids[(ids < 0) | (ids >= n_neurons)]
    if len(bad):
        raise ValueError(
            f"{name} {int(bad[0])} is out of range: the layer has {n_neurons} neurons (0..{n_neurons - 1})"
        )
    return ids


def feature_sizes(features: Any) -> dict[str, int]:
    """``{kind: vocabulary size}`` checked: a mapping of names to positive integers."""
    if not isinstance(features, Mapping):
        example = ""
        if isinstance(features, (list, tuple)) and all(isinstance(k, str) for k in features):
            example = f", e.g. {{{', '.join(f'{k!r}: vocab_size' for k in features)}}}"
        raise TypeError(
            f"features must be a mapping {{kind: vocabulary size}}{example}; got {type(features).__name__} {features!r}"
        )
    sizes = {}
    for kind, size in features.items():
        if not isinstance(kind, str):
            raise TypeError(f"feature kinds are names (str), not {type(kind).__name__} {kind!r}")
        sizes[kind] = integer(size, f"the vocabulary size of feature {kind!r}", minimum=1)
    return sizes


def feature_names(names: Any, kinds: Mapping[str, int]) -> dict[str, list[str] | None]:
    """``{kind: vocabulary}`` checked: each vocabulary a sequence of strings,
    one per id (a single string is refused, not split into letters)."""
    if names is None:
        return {}
    if not isinstance(names, Mapping):
        raise TypeError(f"feature_names must be a mapping {{kind: [name of each id]}}, not {type(names).__name__}")
    unknown = [k for k in names if k not in kinds]
    if unknown:
        raise ValueError(f"feature_names has kinds {unknown} that the recorder does not have")
    out: dict[str, list[str] | None] = {}
    for kind, vocab in names.items():
        if vocab is None:
            out[kind] = None
            continue
        if isinstance(vocab, (str, bytes)) or not isinstance(vocab, Iterable):
            raise TypeError(
                f"feature_names[{kind!r}] must be a list of strings, one per id, not {type(vocab).__name__} {vocab!r}"
            )
        vocab = list(vocab)
        bad = next((i for i, n in enumerate(vocab) if not isinstance(n, str)), None)
        if bad is not None:
            raise TypeError(
                f"feature_names[{kind!r}][{bad}] is {type(vocab[bad]).__name__} {vocab[bad]!r}; names must be strings"
            )
        if len(vocab) != kinds[kind]:
            raise ValueError(f"feature_names[{kind!r}] has {len(vocab)} names for {kinds[kind]} feature ids")
        out[kind] = vocab
    return out
