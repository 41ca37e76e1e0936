"""Recording several layers at once: one :class:`Recorder` per layer, and their profiles.

:func:`txray.record_model` and :func:`txray.record_neurox` both see rows of
activations layer by layer; a layer's recorder is made when its first rows
arrive (their width is the layer's), and every layer's profile carries the
same feature vocabularies and metadata, plus its own layer and token count.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from typing import Any, Generic, TypeVar

import pyarrow as pa

from ._inputs import TokenError
from .features import Feature
from .profile import Profile
from .recorder import DEFAULT_CONTEXTS, DEFAULT_DENSE_LIMIT, Recorder

LayerKey = TypeVar("LayerKey", bound=Hashable)

DEFAULT_PROFILE_NAME = "{corpus}:{layer}"
"""How recorded profiles are named unless told otherwise: corpus and layer, so that profiles
of other corpora or layers never share a name (``wiki:encoder.layer.5.intermediate``)."""


def profile_name(template: str | None, corpus: str | None, layer: str, several_layers: bool) -> str:
    """A recorded profile's name (:attr:`txray.RecordOptions.profile_name`).

    ``template`` may hold ``{corpus}`` and ``{layer}`` (default :data:`DEFAULT_PROFILE_NAME`,
    or ``{layer}`` when the corpus has no name); with ``several_layers`` a template without
    ``{layer}`` gets ``:{layer}`` appended, so that each layer's profile has its own name."""
    if template is None:
        template = DEFAULT_PROFILE_NAME if corpus else "{layer}"
    elif several_layers and "{layer}" not in template:
        template += ":{layer}"
    return template.replace("{corpus}", corpus or "corpus").replace("{layer}", layer)


class LayerRecorders(Generic[LayerKey]):
    """A :class:`Recorder` per layer, all with the same features, mode, k and contexts.

    Layers are keyed by whatever names them (a module name, a NeuroX layer
    index). A feature's vocabulary is read when a layer's recorder is made
    (a :class:`~txray.Prediction` learns its classes from the first batch).
    A layer first updated with ``device="cuda:N"`` gets a recorder on that
    device, any other a CPU recorder.
    """

    def __init__(
        self,
        features: Sequence[Feature],
        mode: str = "max1",
        k: int | None = None,
        dense_limit_bytes: int = DEFAULT_DENSE_LIMIT,
        contexts: int = DEFAULT_CONTEXTS,
    ) -> None:
        self.features = list(features)
        self.mode, self.k, self.dense_limit_bytes, self.contexts = mode, k, dense_limit_bytes, contexts
        self._recorders: dict[LayerKey, Recorder] = {}

    def update(
        self,
        layer: LayerKey,
        rows: Any,
        features: Mapping[str, Any],
        units: Any = None,
        device: str | None = None,
        mask: Any = None,
    ) -> None:
        """Record ``rows`` (tokens x neurons) of ``layer`` with their feature ids, one per row and
        kind, and their unit numbers for the contexts (default: counted on, see :meth:`Recorder.update`);
        rows where ``mask`` is False are skipped.
        ``device`` (``"cuda:N"``) makes a new layer's recorder keep its statistics on that device
        (the rows and ids are then device arrays; it keeps no contexts); None: on the CPU."""
        recorder = self._recorders.get(layer)
        if recorder is None:
            sizes = {f.kind: len(f._vocab()) for f in self.features}
            recorder = Recorder(
                rows.shape[-1],
                sizes,
                mode=self.mode,
                k=self.k,
                dense_limit_bytes=self.dense_limit_bytes,
                device=device,
                contexts=self.contexts if device is None else 0,
            )
            self._recorders[layer] = recorder
        try:
            recorder.update(rows, features, mask, units=units)
        except TokenError as err:
            raise TokenError(f"layer {layer!r}: {err}", err.token, f"layer {layer!r}: {err.template}") from None
        except ValueError as err:
            raise ValueError(f"layer {layer!r}: {err}") from None

    def __len__(self) -> int:
        """How many layers have recorded rows."""
        return len(self._recorders)

    def __iter__(self) -> Iterator[LayerKey]:
        return iter(self._recorders)

    def recorders(self) -> Iterator[Recorder]:
        """The layers' recorders."""
        return iter(self._recorders.values())

    def profiles(
        self,
        metadata: Mapping[str, Any],
        name: Callable[[LayerKey], str] = str,
        fill_contexts: Callable[[pa.Table, int], pa.Table] | None = None,
    ) -> dict[LayerKey, Profile]:
        """``{layer: Profile}``, each named ``name(layer)``, with the features' vocabularies;
        its metadata is ``metadata`` with the layer and the layer's token count added, and
        ``fill_contexts`` fills in the text of its contexts (see :meth:`Recorder.profile`)."""
        feature_names = {f.kind: f.names() for f in self.features}
        return {
            layer: recorder.profile(
                name=name(layer),
                feature_names=feature_names,
                metadata={**metadata, "layer": layer, "tokens": recorder.tokens},
                fill_contexts=fill_contexts,
            )
            for layer, recorder in self._recorders.items()
        }
