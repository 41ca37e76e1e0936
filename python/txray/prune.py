"""Pruning neurons to test what TX-Ray found (the paper's Table 2).

    with txray.prune(model, "encoder.rnn", [3, 17, 42]):
        f1 = evaluate(model)                       # the neurons output zero here

    sets = txray.pruning_sets(txray.compare(zero_shot, supervised), supervised, k=20)
    table = txray.pruning_table(model, "encoder.rnn", sets, evaluate, profile=supervised)

    from txray.prune import manipulate
    with manipulate(model, "encoder.rnn", [3, 17], scale=[0.0, 2.0], value=[5.0, 0.0]):
        logits = model(ids)                        # neuron 3 set to 5, neuron 17 doubled

``evaluate(model)`` is yours: it returns the metric per evaluation split,
e.g. ``{"train": 0.81, "test": 0.79}``. Needs PyTorch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from .profile import Profile

if TYPE_CHECKING:
    import torch

BASELINE = "none (baseline)"
"""Name of :func:`pruning_table`'s first row: nothing pruned."""


def _layer(model: torch.nn.Module, layer: str | torch.nn.Module) -> torch.nn.Module:
    """The module to prune: given, or looked up by dotted name (``encoder.layer.0.intermediate``)."""
    if not isinstance(layer, str):
        return layer
    try:
        return model.get_submodule(layer)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n][:12]
        raise ValueError(f"the model has no layer {layer!r}; some of its layers: {names}") from None


def _neuron_index(neurons: Sequence[int]) -> np.ndarray:
    ids = np.unique(np.asarray(list(neurons), dtype=np.int64))
    if len(ids) and ids[0] < 0:
        raise ValueError(f"neuron ids must be non-negative, got {int(ids[0])}")
    return ids


def _edited(
    tensor: torch.Tensor, index: torch.Tensor, scale: torch.Tensor | None, value: torch.Tensor | None
) -> torch.Tensor:
    """A copy of ``tensor`` whose chosen entries of the last (neuron) axis are ``entry * scale + value``;
    zero where ``scale`` and ``value`` are None (pruning)."""
    if index.numel() and int(index[-1]) >= tensor.shape[-1]:
        raise IndexError(f"neuron {int(index[-1])} is out of range: the layer outputs {tensor.shape[-1]} neurons")
    index = index.to(tensor.device)
    if scale is None and value is None:
        # index_fill, not an in-place write: the module's own output may be needed by autograd.
        return tensor.index_fill(-1, index, 0)
    out = tensor.clone()
    chosen = out.index_select(-1, index)
    if scale is not None:
        chosen = chosen * scale.to(tensor.device, tensor.dtype)
    if value is not None:
        chosen = chosen + value.to(tensor.device, tensor.dtype)
    return out.index_copy_(-1, index, chosen)


def _edit_rnn_state(
    module: torch.nn.RNNBase,
    state: torch.Tensor,
    index: torch.Tensor,
    scale: torch.Tensor | None,
    value: torch.Tensor | None,
) -> torch.Tensor:
    """Edit the chosen neurons in h_n of the top layer, whose rows are what the output sequence holds.

    h_n is (layers * directions, batch, hidden); a bidirectional output's
    neuron j >= hidden belongs to the backward direction's row.
    """
    hidden = state.shape[-1]
    directions = 2 if module.bidirectional else 1
    state = state.clone()
    for d in range(directions):
        row = state.shape[0] - directions + d
        mine = (index >= d * hidden) & (index < (d + 1) * hidden)
        local = index[mine] - d * hidden
        state[row] = _edited(
            state[row],
            local,
            None if scale is None else scale[mine.to(scale.device)],
            None if value is None else value[mine.to(value.device)],
        )
    return state


def _edit_output(
    module: torch.nn.Module, output: Any, index: torch.Tensor, scale: torch.Tensor | None, value: torch.Tensor | None
) -> Any:
    """The module's output with the neurons edited: a tensor, or the first tensor of a tuple (RNNs)."""
    import torch

    if isinstance(output, torch.Tensor):
        return _edited(output, index, scale, value)
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
        rest = output[1:]
        if isinstance(module, torch.nn.RNNBase) and rest:
            h = rest[0]
            if isinstance(h, tuple):  # LSTM: (h_n, c_n); c_n is internal cell state, not the neurons' output
                rest = ((_edit_rnn_state(module, h[0], index, scale, value), h[1]),) + rest[1:]
            elif isinstance(h, torch.Tensor):  # GRU / RNN: h_n
                rest = (_edit_rnn_state(module, h, index, scale, value),) + rest[1:]
        return (_edited(output[0], index, scale, value),) + tuple(rest)
    raise TypeError(
        f"cannot edit the output of {type(module).__name__} ({type(output).__name__}): pick a layer that "
        "returns a tensor or a tuple whose first element is the activations"
    )


@contextlib.contextmanager
def prune(model: torch.nn.Module, layer: str | torch.nn.Module, neurons: Sequence[int]) -> Iterator[torch.nn.Module]:
    """Zero the outputs of ``neurons`` of ``layer`` while the context is open.

    ``layer`` is a module of ``model`` or its dotted name. The neurons are
    indices on the last axis of the layer's output (for an LSTM/GRU, the
    output sequence and the top layer's final hidden state h_n). A forward
    hook does it; the hook is removed on exit, also after an exception.
    Yields the model.
    """
    with _hooked(model, layer, _neuron_index(neurons), None, None):
        yield model


@contextlib.contextmanager
def manipulate(
    model: torch.nn.Module,
    layer: str | torch.nn.Module,
    neurons: Sequence[int],
    scale: Sequence[float] | float = 0.0,
    value: Sequence[float] | float = 0.0,
) -> Iterator[torch.nn.Module]:
    """Set the outputs of ``neurons`` of ``layer`` to ``output * scale + value`` while the context is open.

    ``scale`` and ``value`` are one number or one per neuron (in the order of
    ``neurons``): ``scale=0, value=v`` sets a neuron to v at every position,
    ``scale=s, value=0`` scales it, the defaults zero it (as :func:`prune`).
    The same forward hook as :func:`prune` (the output sequence and h_n of an
    LSTM/GRU); removed on exit. Yields the model.
    """
    import torch

    ids = np.asarray(list(neurons), dtype=np.int64)
    if len(np.unique(ids)) != len(ids):
        raise ValueError("neurons: each neuron may be given once")
    scales = np.broadcast_to(np.asarray(scale, dtype=np.float64), ids.shape)
    values = np.broadcast_to(np.asarray(value, dtype=np.float64), ids.shape)
    if not (np.isfinite(scales).all() and np.isfinite(values).all()):
        raise ValueError("scale and value must be finite numbers")
    order = np.argsort(ids, kind="stable")
    index = _neuron_index(ids[order].tolist())
    with _hooked(model, layer, index, torch.as_tensor(scales[order].copy()), torch.as_tensor(values[order].copy())):
        yield model


@contextlib.contextmanager
def _hooked(
    model: torch.nn.Module,
    layer: str | torch.nn.Module,
    ids: np.ndarray,
    scale: torch.Tensor | None,
    value: torch.Tensor | None,
) -> Iterator[None]:
    """A forward hook on ``layer`` that edits neurons ``ids`` (sorted, unique) while the context is open."""
    import torch

    module = _layer(model, layer)
    index = torch.as_tensor(ids, dtype=torch.long)

    def hook(mod: torch.nn.Module, inputs: Any, output: Any) -> Any:
        return _edit_output(mod, output, index, scale, value)

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


# -- which neurons to prune -------------------------------------------------------


def states(comparison: pa.Table, state: str) -> list[int]:
    """The neurons of a :func:`txray.compare` table in one state (shared, avoided, gained, dead)."""
    mask = np.asarray(comparison.column("state").to_pylist()) == state
    return comparison.column("neuron").to_numpy()[mask].astype(int).tolist()


def massive(profile: Profile, k: int, largest: bool = True, kind: str | None = None) -> list[int]:
    """The k preferred neurons with the largest (or smallest) activation mass.

    Only neurons preferred for ``kind`` (default: the profile's first kind)
    count, as in the paper: unpreferred neurons carry no mass to rank. Ties:
    lower neuron first.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    kind = kind or profile.kinds[0]
    candidates = np.flatnonzero(profile.preferred(kind))
    mass = profile.mass()[candidates]
    order = np.lexsort((candidates, -mass if largest else mass))
    return candidates[order[:k]].astype(int).tolist()


def pruning_sets(comparison: pa.Table, profile: Profile, k: int = 20, kind: str | None = None) -> dict[str, list[int]]:
    """The paper's four neuron sets, named as its Table 2 rows.

    From a comparison of the model before and after (``txray.compare(before,
    after)``) and the profile of the model that will be pruned (after):
    ``avoided`` (preferred before, not after), ``k least massive`` and ``k
    most massive`` (of the pruned model's preferred neurons) and ``gained``
    (preferred after only).
    """
    return {
        "avoided": states(comparison, "avoided"),
        f"{k} least massive": massive(profile, k, largest=False, kind=kind),
        f"{k} most massive": massive(profile, k, largest=True, kind=kind),
        "gained": states(comparison, "gained"),
    }


# -- the table ------------------------------------------------------------------------


def _metrics(evaluate: Callable[[Any], Mapping[str, float]], model: Any) -> dict[str, float]:
    result = evaluate(model)
    if not isinstance(result, Mapping) or not result:
        raise TypeError(f"evaluate(model) must return a mapping split -> metric, e.g. {{'test': 0.8}}, not {result!r}")
    return {str(split): float(value) for split, value in result.items()}


def _relative(value: float, base: float) -> float | None:
    """(value - base) / |base|; undefined (None) when the baseline is zero."""
    return None if base == 0 else (value - base) / abs(base)


def pruning_table(
    model: torch.nn.Module,
    layer: str | torch.nn.Module,
    sets: Mapping[str, Sequence[int]],
    evaluate: Callable[[Any], Mapping[str, float]],
    profile: Profile | None = None,
) -> pa.Table:
    """Prune each named neuron set in turn and measure the metric (the paper's Table 2).

    ``evaluate(model)`` returns the metric per split (e.g. ``{"train": f1,
    "test": f1}``); it runs once unpruned (the baseline row, named
    :data:`BASELINE`) and once per set. Columns: ``set`` (string),
    ``neurons`` (int64, set size), ``mass_removed`` (float64: the set's share
    of ``profile``'s total activation mass, 0..1; null without a profile),
    then per split ``metric_<split>`` (the metric) and ``change_<split>``
    (relative change from the baseline, (pruned - baseline) / |baseline|;
    null when the baseline is 0).
    """
    names = [str(n) for n in sets]
    if BASELINE in names:
        raise ValueError(f"{BASELINE!r} names the unpruned baseline row; choose another set name")
    mass = profile.mass() if profile is not None else None
    total = float(mass.sum()) if mass is not None else 0.0
    base = _metrics(evaluate, model)
    baseline_mass = 0.0 if mass is not None else None
    rows: list[dict[str, Any]] = [
        {"set": BASELINE, "neurons": 0, "mass_removed": baseline_mass, **_metric_cols(base, base)}
    ]
    for name, neurons in sets.items():
        ids = _neuron_index(neurons)
        if mass is not None and len(ids) and ids[-1] >= len(mass):
            raise ValueError(
                f"set {name!r}: neuron {int(ids[-1])} is out of range for the profile ({len(mass)} neurons)"
            )
        with prune(model, layer, ids.tolist()):
            pruned = _metrics(evaluate, model)
        if set(pruned) != set(base):
            raise ValueError(f"evaluate returned splits {sorted(pruned)} for set {name!r} but {sorted(base)} unpruned")
        removed = None if mass is None or total == 0 else float(mass[ids].sum()) / total
        rows.append({"set": str(name), "neurons": len(ids), "mass_removed": removed, **_metric_cols(pruned, base)})
    schema = pa.schema(
        [
            pa.field("set", pa.string(), nullable=False),
            pa.field("neurons", pa.int64(), nullable=False),
            pa.field("mass_removed", pa.float64()),
        ]
        + [pa.field(f"{prefix}_{split}", pa.float64()) for split in base for prefix in ("metric", "change")]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def _metric_cols(values: Mapping[str, float], base: Mapping[str, float]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for split, value in values.items():
        out[f"metric_{split}"] = value
        out[f"change_{split}"] = _relative(value, base[split])
    return out
