"""Turning user arrays (NumPy, torch CPU tensors, array-likes) into the flat
buffers the native core reads, with errors that say what to fix."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

ACTIVATION_DTYPES = ("float32", "float16", "bfloat16")


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _torch_to_numpy(x: Any, what: str) -> np.ndarray:
    if x.device.type != "cpu":
        raise ValueError(
            f"{what} is on device '{x.device}'; this recorder runs on the CPU: move it with .cpu()"
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
        raise ValueError(
            f"features must have exactly the kinds {list(kinds)}; missing {missing}, unexpected {extra}"
        )
    out = []
    for kind in kinds:
        ids = features[kind]
        ids = _torch_to_numpy(ids, f"feature '{kind}'") if _is_torch(ids) else np.asarray(ids)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"feature '{kind}' ids must be integers, got dtype {ids.dtype}")
        if ids.shape != lead:
            raise ValueError(f"feature '{kind}' has shape {ids.shape}; the activations need {lead}")
        out.append(np.ascontiguousarray(ids.reshape(-1), dtype=np.int64))
    return out


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


def describe_position(flat: int, lead: tuple[int, ...]) -> str:
    """'token 17' for flat batches, 'token 17 (sequence 1, position 5)' for (batch, seq) ones."""
    if len(lead) < 2:
        return f"token {flat}"
    where = ", ".join(f"axis {i}: {j}" for i, j in enumerate(np.unravel_index(flat, lead)))
    return f"token {flat} ({where})"
