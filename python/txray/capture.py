"""Capture layer activations from any PyTorch module with forward hooks.

    with txray.Capture(model, ["encoder.layer.0.intermediate", "encoder.layer.5.intermediate"]) as cap:
        output = model(**inputs)
        acts = cap.collect(output)          # {layer name: (batch, seq, neurons) tensor}

A layer is a module's dotted name (``model.get_submodule``), or a
:class:`Layer` with a ``pick`` callable that chooses the tensor, from the
module's output or, without a module, from the model's output. Recurrent
modules (LSTM/GRU/RNN) give the hidden state at every step, batch first.
Hooks are removed when the ``with`` block ends, also after an exception.
"""

from __future__ import annotations

import dataclasses
import difflib
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

Pick = Callable[[Any], torch.Tensor]


@dataclasses.dataclass(frozen=True)
class Layer:
    """What to record, named ``name``.

    ``module``: dotted name of a submodule (defaults to ``name`` when no
    ``pick`` is given); its forward output is captured. ``pick``: turns the
    module's output (or, with ``module=None``, the model's output) into a
    (batch, seq, neurons) tensor, e.g. ``lambda out: out.hidden_states[3]``."""

    name: str
    module: str | None = None
    pick: Pick | None = None

    def __post_init__(self) -> None:
        if self.module is None and self.pick is None:
            object.__setattr__(self, "module", self.name)


def resolve_layers(model: nn.Module, layers: Iterable[str | Layer]) -> list[Layer]:
    """Turn layer specs into :class:`Layer` objects, checking that every module exists."""
    if isinstance(layers, (str, Layer)):
        layers = [layers]
    resolved = [spec if isinstance(spec, Layer) else Layer(str(spec)) for spec in layers]
    if not resolved:
        raise ValueError("give at least one layer to record (see txray.mlp_layers(model))")
    names = [layer.name for layer in resolved]
    if len(set(names)) != len(names):
        raise ValueError(f"layer names must be unique, got {names}")
    for layer in resolved:
        if layer.module is not None:
            find_module(model, layer.module)
    return resolved


def find_module(model: nn.Module, name: str) -> nn.Module:
    """``model.get_submodule(name)``, with an error that lists close matches."""
    try:
        return model.get_submodule(name)
    except AttributeError:
        known = [n for n, _ in model.named_modules() if n]
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; it has e.g. {', '.join(known[:8])}"
        raise ValueError(f"{type(model).__name__} has no layer {name!r}{hint}") from None


def mlp_layers(model: nn.Module) -> list[str]:
    """Names of the MLP activation modules, first layer first: BERT-like
    ``...intermediate`` (output = activation(dense(x))), GPT-2-like
    ``...mlp.act`` and TransformerLens hook points ``blocks.{i}.mlp.hook_post``
    (a hook point is a submodule, recorded by its name like any other). These
    are the "neurons" of a transformer layer."""
    found = []
    for name, module in model.named_modules():
        bert_like = name.endswith("intermediate") and hasattr(module, "intermediate_act_fn")
        gpt2_like = name.endswith("mlp.act")
        lens_like = name.endswith("mlp.hook_post")
        if bert_like or gpt2_like or lens_like:
            found.append(name)
    if not found:
        raise ValueError(
            f"found no BERT-like '*.intermediate', GPT-2-like '*.mlp.act' or TransformerLens "
            f"'*.mlp.hook_post' modules in {type(model).__name__}; name the layers to record"
        )
    return found


def hidden_states(module: nn.Module | None, output: Any) -> torch.Tensor:
    """The default pick: the tensor of a module's output, batch first.

    A tuple output gives its first element (an LSTM's ``(output, (h, c))``:
    the hidden state at every step); a PackedSequence is unpacked; a
    recurrent module that is not ``batch_first`` is transposed."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    elif not isinstance(output, torch.Tensor) and hasattr(output, "to_tuple"):
        output = output.to_tuple()[0]  # a Hugging Face ModelOutput
    if isinstance(output, nn.utils.rnn.PackedSequence):
        return nn.utils.rnn.pad_packed_sequence(output, batch_first=True)[0]
    if not isinstance(output, torch.Tensor):
        raise TypeError(
            f"the layer's output is a {type(output).__name__}; give a Layer with pick=... to choose a tensor"
        )
    if isinstance(module, nn.RNNBase) and not module.batch_first:
        return output.transpose(0, 1)
    return output


_CAPTURED: weakref.WeakSet[nn.Module] = weakref.WeakSet()  # models a Capture hooks at the moment
_CAPTURED_LOCK = threading.Lock()


class Capture:
    """Forward hooks on several layers at once; a context manager.

    Inside the ``with`` block every forward pass stores each layer's tensor
    (detached, no copy); :meth:`collect` returns them and clears the store.
    With a ``consumer``, the hook hands each tensor to ``consumer(name,
    tensor)`` at once and keeps nothing, so the model can reuse the memory of
    layers already recorded (what makes recording many layers cheap).

    One Capture at a time per model: hooks fire for every forward pass of the
    model, whichever thread runs it, so a second Capture (another
    ``record_model`` on the same model in another thread, say) would mix both
    runs' activations. It is refused with a RuntimeError."""

    def __init__(
        self,
        model: nn.Module,
        layers: Iterable[str | Layer],
        consumer: Callable[[str, torch.Tensor], None] | None = None,
    ) -> None:
        self.model = model
        self.layers = resolve_layers(model, layers)
        self.consumer = consumer
        self._store: dict[str, torch.Tensor] = {}
        self._consumed: set[str] = set()
        self._handles: list[Any] = []
        self._holds_model = False

    def __enter__(self) -> Capture:
        with _CAPTURED_LOCK:
            if self.model in _CAPTURED:
                raise RuntimeError(
                    f"model {type(self.model).__name__} is already being recorded (a record_model or Capture on "
                    "it is under way, in another thread?): both would record each other's forward passes; "
                    "give each its own model (copy.deepcopy(model))"
                )
            _CAPTURED.add(self.model)
            self._holds_model = True
        try:
            for layer in self.layers:
                if layer.module is not None:
                    module = find_module(self.model, layer.module)
                    self._handles.append(module.register_forward_hook(self._hook(layer, module)))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook (idempotent) and forget stored tensors."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._store.clear()
        self._consumed.clear()
        if self._holds_model:
            with _CAPTURED_LOCK:
                _CAPTURED.discard(self.model)
            self._holds_model = False

    def _hook(self, layer: Layer, module: nn.Module) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            tensor = layer.pick(output) if layer.pick is not None else hidden_states(module, output)
            if self.consumer is None:
                self._store[layer.name] = tensor.detach()
            else:
                self.consumer(layer.name, tensor.detach())
                self._consumed.add(layer.name)

        return hook

    def collect(self, model_output: Any = None) -> dict[str, torch.Tensor]:
        """The tensors of the last forward pass, ``{layer name: tensor}``.

        Layers without a module are picked from ``model_output`` here; layers
        already handed to the consumer are left out."""
        out = {}
        for layer in self.layers:
            if layer.module is None:
                assert layer.pick is not None  # a Layer without a module has a pick (__post_init__)
                out[layer.name] = layer.pick(model_output).detach()
            elif layer.name in self._store:
                out[layer.name] = self._store.pop(layer.name)
            elif layer.name not in self._consumed:
                raise RuntimeError(f"layer {layer.name!r} did not run in the forward pass")
        self._consumed.clear()
        return out


def check_shape(name: str, acts: torch.Tensor, batch_shape: tuple[int, ...]) -> None:
    """Raise a clear error unless ``acts`` is (batch, seq, neurons) for this input."""
    if acts.dim() != 3 or tuple(acts.shape[:2]) != batch_shape:
        raise ValueError(
            f"layer {name!r} gave a tensor of shape {tuple(acts.shape)}; txray records one row per input "
            f"position, shape (batch={batch_shape[0]}, seq={batch_shape[1]}, neurons). Pick a per-token "
            "layer, or give txray.Layer(..., pick=...) to choose the right tensor"
        )
