"""How a model is recorded: :class:`RecordOptions`, shared by :func:`txray.record_model`,
:func:`txray.distributed.record_model` and ``txray record``."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from .contexts import DEFAULT_CONTEXT_WINDOW
from .corpus import Shard
from .features import Feature
from .profile import Profile
from .recorder import DEFAULT_CONTEXTS, DEFAULT_DENSE_LIMIT
from .workers import check_worker_count


@dataclasses.dataclass(frozen=True)
class RecordOptions:
    """Everything about a recording but the model, tokenizer, corpus and layers.

    ``txray.record_model(model, tokenizer, corpus, layers, options=RecordOptions(mode="all"))``
    and ``txray.record_model(model, tokenizer, corpus, layers, mode="all")`` are the same call.

    Attributes
    ----------
    features:
        Feature kinds recorded per word: ``"token"``, ``"pos"``, ``"label"``,
        ``"prediction"``, ``"ngram2"``, ``"column:NAME"``, or
        :class:`txray.Feature` objects (a list is kept as a tuple).
    mode, k:
        ``"max1"`` (the paper), ``"topk"`` with ``k``, or ``"all"``.
    pooling:
        How a word's pieces become one row: ``"first"``, ``"last"``,
        ``"mean"`` or ``"max"``.
    include_special:
        Also record special tokens (``[CLS]``, ``[SEP]``) as units of their
        own; their word-level features are their own strings.
    limit_tokens:
        Record only the first this-many words of the corpus.
    max_tokens:
        Padded input positions per forward pass (the batch budget).
    max_length:
        Longest window (special tokens included); default: the tokenizer's
        ``model_max_length``. Longer sequences are split into windows.
    forward:
        ``forward(model, batch)`` runs the model on a :class:`txray.words.Batch`;
        default: ``model(input_ids=..., attention_mask=...)`` for Hugging Face
        models, ``model(input_ids, attention_mask=...)`` for other models whose
        ``forward`` takes an ``attention_mask`` (a TransformerLens
        ``HookedTransformer``), ``model(input_ids)`` otherwise.
    cache_dir:
        Where POS tags are cached (default ``~/.cache/txray``; ``False`` disables).
    progress:
        Show progress bars (the vocabulary pass, each tagging pass, the
        recording), with a total and an ETA where the corpus's size is known.
    name:
        Model name for the metadata; default: the model's ``name_or_path``.
    dense_limit_bytes:
        Per layer and feature kind, the most memory a dense table of cells may
        take (see :class:`txray.Recorder`); larger ones are hash tables.
    vocab_from:
        A :class:`txray.Profile` (or its path) whose vocabularies to record with: every
        feature that would build its vocabulary from the corpus takes the profile's
        vocabulary of its kind, so each word gets the id it has there and words the
        profile never saw become ``<unk>`` (:func:`txray.features.reuse_vocabularies`).
        Not needed to compare profiles of different corpora, which line up by feature
        name (:func:`txray.align`).
    profile_name:
        The profiles' names. It may hold ``{corpus}`` (the corpus's name without its
        file suffix) and ``{layer}``; recording several layers with a name without
        ``{layer}`` appends ``:{layer}``, so that each layer's profile has its own name.
        Default ``"{corpus}:{layer}"`` (``"{layer}"`` for an unnamed in-memory corpus).
    shard:
        ``(index, count)``, ``"INDEX/COUNT"`` or a :class:`txray.corpus.Shard`: record only the
        sequences ``i`` with ``i % count == index`` (counted after
        ``limit_tokens``). Vocabularies are still built from the whole corpus,
        so the parts of all shards merge (:func:`txray.merge_profiles`,
        ``txray merge``) into the profile of a whole run. Each part's metadata
        holds ``"shards": [[index, count]]``; an empty shard (more shards than
        sequences) records ``{}``.
    contexts:
        Top activating contexts kept per neuron (default 20; 0: none): each
        neuron's highest activations with the word, its sequence and the text
        around it, in each profile's ``contexts`` table. A context's ``unit`` is
        its word's position among the corpus's words (counted from 0, as
        ``limit_tokens`` counts them), the same for every model and every
        shard; special tokens are never contexts. Contexts are kept by the CPU
        engine only: a CUDA model records on its GPU with ``contexts=0``.
    context_window:
        Words of a context's text on either side of its word (default 8).
    workers:
        Worker processes that build the model's inputs ahead of the model: they split
        the records into words, tokenize them, cut the windows and look up the feature
        ids. ``0`` (default): one background thread of this process builds them. The
        chunks of the corpus go to the workers in turn and come back in corpus order,
        so the profiles are the same for any number of workers. Worth it when that
        thread cannot keep up with the model (a fast GPU, a Hugging Face tokenizer,
        cores to spare); see the performance page.
    record_on:
        Where the statistics are kept. ``None`` (default): where the captured
        activations are when the device can keep them all, so a model on a
        CUDA device records there with ``contexts=0``, inside the layer hooks,
        and only the statistics ever leave the device (see the GPU page of the
        docs); otherwise (a CPU model, or contexts asked for) on the CPU.
        ``"cpu"``: every batch's pooled rows are copied to the host and
        recorded there (to check the device path against the CPU engine).
    """

    features: tuple[str | Feature, ...] = ("token",)
    mode: str = "max1"
    k: int | None = None
    pooling: str = "mean"
    include_special: bool = False
    limit_tokens: int | None = None
    max_tokens: int = 4096
    max_length: int | None = None
    forward: Callable[[Any, Any], Any] | None = None
    cache_dir: str | os.PathLike[str] | Literal[False] | None = None
    progress: bool = True
    name: str | None = None
    dense_limit_bytes: int = DEFAULT_DENSE_LIMIT
    shard: Shard | tuple[int, int] | str | None = None
    vocab_from: Profile | str | os.PathLike[str] | None = None
    profile_name: str | None = None
    contexts: int = DEFAULT_CONTEXTS
    context_window: int = DEFAULT_CONTEXT_WINDOW
    record_on: str | None = None
    workers: int = 0

    def __post_init__(self) -> None:
        features: Iterable[str | Feature] = (
            (self.features,) if isinstance(self.features, (str, Feature)) else self.features
        )
        object.__setattr__(self, "features", tuple(features))
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 0:
            raise ValueError(f"workers must be 0 (a thread of this process) or more processes, not {self.workers!r}")
        check_worker_count(self.workers)
        object.__setattr__(self, "shard", _checked_shard(self.shard))
        if self.record_on not in (None, "cpu"):
            raise ValueError(f"record_on must be None (where the activations are) or 'cpu', not {self.record_on!r}")

    def fresh_shard(self) -> Shard | None:
        """A new :class:`txray.corpus.Shard` for :attr:`shard` (each run counts the sequences
        it reads in its own), or None."""
        shard = self.shard
        if shard is None:
            return None
        if isinstance(shard, Shard):
            return Shard(shard.index, shard.count)
        assert not isinstance(shard, str)  # __post_init__ keeps a pair
        return Shard(*shard)

    def replace(self, **changes: Any) -> RecordOptions:
        """A copy with some fields changed; an unknown name is a :class:`TypeError` that names it."""
        unknown = sorted(set(changes) - {field.name for field in dataclasses.fields(self)})
        if unknown:
            raise TypeError(f"unknown recording option(s) {unknown}; RecordOptions has {_FIELD_NAMES}")
        return dataclasses.replace(self, **changes)

    @classmethod
    def resolve(
        cls, options: RecordOptions | None, features: Iterable[str | Feature] | None, settings: Mapping[str, Any]
    ) -> RecordOptions:
        """The options of a ``record_model(..., features, options=..., **settings)`` call:
        ``options`` (default: the defaults) with ``features`` and each setting put in."""
        changes = dict(settings)
        if features is not None:
            if "features" in changes:
                raise TypeError("features given twice: as an argument and as a setting")
            changes["features"] = features
        return (options if options is not None else cls()).replace(**changes)


_FIELD_NAMES = [field.name for field in dataclasses.fields(RecordOptions)]


def _checked_shard(shard: object) -> Shard | tuple[int, int] | None:
    """``shard`` as :class:`RecordOptions` keeps it: a Shard, or ``(index, count)`` (from a
    list or tuple of two, or ``"INDEX/COUNT"``), checked; anything else is a ValueError."""
    if shard is None or isinstance(shard, Shard):
        return shard
    if isinstance(shard, str):
        parsed = Shard.parse(shard)
        return (parsed.index, parsed.count)
    if isinstance(shard, (list, tuple)) and len(shard) == 2:
        Shard(*shard)  # raises unless 0 <= index < count, in whole numbers
        return (int(shard[0]), int(shard[1]))
    raise ValueError(f"shard must be (index, count), 'INDEX/COUNT' or a txray.corpus.Shard, not {shard!r}")
