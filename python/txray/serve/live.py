"""A live model: its activations over the words of a typed text, and its output before and after neurons
of its layer are set by hand (:func:`txray.prune.manipulate`)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..corpus import split_words
from ..word_tokenizers import WordTokenizer, as_word_tokenizer, piece_arrays
from .folders import RequestError

MAX_WORDS = 256
"""Words of a typed text the model reads (the rest is cut)."""

TOP_OUTPUTS = 10
"""Next words (classes) shown of the model's output."""

OUTPUT_KINDS = ("next word", "masked word", "class", "embedding")
"""What a model's output is shown as: a language model's next-word distribution, a masked language model's
distribution at a mask after the text, a classifier's class probabilities, a bare encoder's pooled output."""


@dataclasses.dataclass
class Readout:
    """Turns a model's output into what the page shows: labels and their probabilities (or values)."""

    kind: str  # one of OUTPUT_KINDS
    scores: Callable[[Any, Any], Any]  # (model output, input ids (1, seq)) -> a 1-d tensor of probabilities
    labels: Callable[[Sequence[int]], list[str]]  # the labels of positions of that tensor


@dataclasses.dataclass
class Encoded:
    """A text as the model reads it."""

    words: list[str]
    ids: Any  # torch.LongTensor (1, seq)
    owner: np.ndarray  # per position: the word it belongs to, -1 for a special or appended token
    cut: bool  # whether words were left out (too long for the model)


class LiveModel:
    """A model, its word tokenizer and the layer whose neurons the profiles describe.

    ``forward(model, ids)`` runs the model on input ids (1, seq) and returns
    its output; ``readout`` says what that output means. ``append``: token
    ids put after the words (a mask token, an end-of-text token). Forward
    passes are serialised (one model, shared by the server's threads).
    """

    def __init__(
        self,
        name: str,
        model: Any,
        tokenizer: Any,
        layer: str,
        forward: Callable[[Any, Any], Any],
        readout: Readout,
        append: Sequence[int] = (),
    ) -> None:
        from ..capture import find_module

        self.name = name
        self.model = model.eval()
        self.tokenizer: WordTokenizer = as_word_tokenizer(tokenizer)
        self.layer = layer
        find_module(model, layer)  # a ValueError naming close matches when the model has no such layer
        self.forward = forward
        self.readout = readout
        self.append = list(append)
        self._lock = threading.Lock()
        self._width: int | None = None
        self._labels: list[str] | None = None

    @property
    def kind(self) -> str:
        return self.readout.kind

    @property
    def n_neurons(self) -> int:
        """The layer's width (found by running the model once)."""
        if self._width is None:
            self._width = int(self._run(self.encode("the"), capture=True)[1].shape[-1])
        return self._width

    def encode(self, text: str) -> Encoded:
        """The text's words (:func:`txray.split_words`, at most :data:`MAX_WORDS`) as input ids."""
        import torch

        words = split_words(text)
        if not words:
            raise RequestError("text: type some words")
        cut = len(words) > MAX_WORDS
        words = words[:MAX_WORDS]
        tok = self.tokenizer
        ids, counts = piece_arrays(tok, [words])
        extra = len(tok.prefix) + len(tok.suffix) + len(self.append)
        if tok.max_length is not None:
            fits = int(np.searchsorted(np.cumsum(counts), tok.max_length - extra, side="right"))
            if fits < len(words):
                cut, words, counts, ids = True, words[:fits], counts[:fits], ids[: int(counts[:fits].sum())]
        keep = counts > 0
        owner = np.repeat(np.arange(len(words)), counts)
        head, tail = list(tok.prefix), [*self.append, *tok.suffix]
        all_ids = np.concatenate([np.array(head, np.int64), ids, np.array(tail, np.int64)])
        owner = np.concatenate([np.full(len(head), -1), owner, np.full(len(tail), -1)])
        if not keep.any():
            raise RequestError("text: the tokenizer gives no pieces for these words")
        return Encoded(words, torch.from_numpy(all_ids).unsqueeze(0), owner, cut)

    def _run(self, encoded: Encoded, capture: bool = False, edit: Callable[[], Any] | None = None) -> tuple[Any, Any]:
        """The model's output on the text, and (``capture``) the layer's activations (seq, neurons)."""
        import contextlib

        import torch

        from ..capture import Capture

        device = next(self.model.parameters()).device
        with self._lock, torch.inference_mode():
            with contextlib.ExitStack() as stack:
                if edit is not None:
                    stack.enter_context(edit())
                hooks = stack.enter_context(Capture(self.model, [self.layer])) if capture else None
                output = self.forward(self.model, encoded.ids.to(device))
                acts = hooks.collect(output)[self.layer][0].float().cpu() if hooks is not None else None
        return output, acts

    def _neurons(self, neurons: Sequence[int]) -> list[int]:
        width = self.n_neurons
        ids = [int(n) for n in neurons]
        bad = [n for n in ids if not 0 <= n < width]
        if bad:
            raise RequestError(f"neuron {bad[0]} is out of range: layer {self.layer} has {width} neurons")
        if len(set(ids)) != len(ids):
            raise RequestError("neurons: each neuron may be given once")
        return ids

    def activations(self, text: str, neurons: Sequence[int]) -> dict[str, Any]:
        """Each word's activation of each neuron (a word's pieces averaged): ``{"words", "neurons",
        "activations": [per neuron: per word]}``, for the heat map."""
        import torch

        ids = self._neurons(neurons)
        encoded = self.encode(text)
        _, acts = self._run(encoded, capture=True)
        owner = torch.from_numpy(encoded.owner)
        kept = owner >= 0
        n_words = len(encoded.words)
        sums = torch.zeros(n_words, acts.shape[-1]).index_add_(0, owner[kept], acts[kept])
        counts = torch.bincount(owner[kept], minlength=n_words).clamp(min=1).unsqueeze(1)
        per_word = (sums / counts)[:, ids].T
        return {
            "words": encoded.words,
            "neurons": ids,
            "activations": [[float(f"{v:.4g}") for v in row] for row in per_word.tolist()],
            "cut": encoded.cut,
        }

    def outputs(
        self, text: str, neurons: Sequence[int], scale: Sequence[float], value: Sequence[float]
    ) -> dict[str, Any]:
        """The model's output on the text as it is and with each neuron set to ``activation * scale + value``:
        ``{"kind", "before": [[label, p], ...], "after": [...], "distance"}`` (top :data:`TOP_OUTPUTS` of each;
        ``distance``: total variation distance between the two distributions, or the Euclidean one of
        embeddings)."""
        from ..prune import manipulate

        ids = self._neurons(neurons)
        encoded = self.encode(text)
        before = self.readout.scores(self._run(encoded)[0], encoded.ids)
        after = self.readout.scores(
            self._run(encoded, edit=lambda: manipulate(self.model, self.layer, ids, scale, value))[0], encoded.ids
        )
        before, after = before.double().cpu(), after.double().cpu()
        if self.kind == "embedding":
            distance = float((before - after).norm())
        else:
            distance = float(0.5 * (before - after).abs().sum())
        return {
            "kind": self.kind,
            "before": self._top(before, after),
            "after": self._top(after, before),
            "distance": float(f"{distance:.4g}"),
            "words": encoded.words,
            "cut": encoded.cut,
        }

    def _top(self, scores: Any, other: Any) -> list[list[Any]]:
        """[label, score, the other side's score] of the highest scores (largest magnitude for embeddings)."""
        import torch

        key = scores.abs() if self.kind == "embedding" else scores
        k = min(TOP_OUTPUTS, len(scores))
        top = torch.topk(key, k).indices.tolist()
        labels = self.readout.labels(top)
        return [[label, float(f"{scores[i]:.4g}"), float(f"{other[i]:.4g}")] for label, i in zip(labels, top)]

    def class_labels(self) -> list[str]:
        """The labels of every position of the output (a classifier's classes)."""
        if self._labels is None:
            encoded = self.encode("the")
            n = len(self.readout.scores(self._run(encoded)[0], encoded.ids))
            self._labels = self.readout.labels(list(range(n)))
        return self._labels

    def describe(self) -> dict[str, Any]:
        """What the page shows about the model."""
        return {"name": self.name, "layer": self.layer, "kind": self.kind, "neurons": self.n_neurons}
