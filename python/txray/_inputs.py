"""Checks of user arguments, and host arrays (NumPy, torch CPU tensors,
array-likes) turned into the flat buffers the CPU engine reads, with errors
that say what to fix. Device arrays are txray._device's."""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping
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


class TokenError(ValueError):
    """Bad input of one token of an update (a non-finite activation, a feature id outside
    its vocabulary). ``token``: the token's flat index among the update's rows; ``template``:
    the message with ``{token}`` where the token is named, so that a caller who knows what the
    rows are (:func:`txray.record_model`: words) can name it better."""

    def __init__(self, message: str, token: int, template: str) -> None:
        super().__init__(message)
        self.token = token
        self.template = template

    def naming(self, token: str) -> TokenError:
        """The same error with its token named ``token``."""
        return TokenError(self.template.replace("{token}", token), self.token, self.template)


def describe_position(flat: int, lead: tuple[int, ...]) -> str:
    """'token 17' for flat batches, 'token 17 (sequence 1, position 5)' for (batch, seq) ones."""
    if len(lead) < 2:
        return f"token {flat}"
    where = ", ".join(f"axis {i}: {j}" for i, j in enumerate(np.unravel_index(flat, lead)))
    return f"token {flat} ({where})"


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
