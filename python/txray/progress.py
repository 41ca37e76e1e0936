"""Progress bars over passes through a corpus, with a total and an ETA wherever
the corpus's size is known.

A bar's total is, in this order of choice:

- ``limit_tokens`` words, when the pass stops there and sees every sequence
  (not a shard, which sees a part of them);
- the corpus's size (:meth:`Corpus.size`): bytes of a text, CSV or TSV file,
  records of a Parquet file, a saved dataset, a ``Dataset`` or a list; the bar
  follows how far the reader got (:attr:`Example.position`) and shows the words
  seen beside it;
- none: a count of words and a rate (a generator, an ``IterableDataset`` of
  unknown size).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm.auto import tqdm

from .corpus import Corpus, Example


class CorpusBar:
    """One pass's bar: call :meth:`seen` with each example the pass has done
    (or wrap the stream in :meth:`track`)."""

    def __init__(self, corpus: Corpus, desc: str, limit_tokens: int | None, sharded: bool, enabled: bool) -> None:
        size = corpus.size() if enabled else None
        total: int | None
        if limit_tokens is not None and not sharded:
            self._by_position, total, unit = False, limit_tokens, "word"
        elif size is not None:
            self._by_position, (total, unit) = True, size
        else:
            self._by_position, total, unit = False, None, "word"
        self.words = 0
        self._note = ""
        self._enabled = enabled
        self._next_postfix = 0.0
        self._ends: collections.deque[tuple[int, int]] = collections.deque()  # (words read, position) of :meth:`read`
        self._bar = tqdm(
            total=total,
            desc=desc,
            unit=unit,
            unit_scale=True,
            unit_divisor=1024 if unit == "B" else 1000,
            disable=not enabled,
        )

    @property
    def count(self) -> float:
        """What the bar shows done: bytes, records or words (its unit)."""
        return self._bar.n

    def seen(self, example: Example) -> None:
        """Count one example the pass is done with."""
        self.words += len(example.words)
        if self._enabled:
            self._show(example.position)

    def track(self, examples: Iterable[Example]) -> Iterator[Example]:
        """The examples, counted as the pass takes them."""
        for example in examples:
            self.seen(example)
            yield example

    def read(self, examples: Iterable[Example]) -> Iterator[Example]:
        """The examples, for a pass that is done with them later than it takes them
        (recording reads a pool of batches ahead and sorts it by length): it calls
        :meth:`done` with the words it finished, and the bar shows where in the
        corpus the words finished so far end."""
        words = 0
        for example in examples:
            words += len(example.words)
            self._ends.append((words, example.position))
            yield example

    def done(self, words: int) -> None:
        """Count ``words`` more words finished by a pass that :meth:`read` its examples."""
        self.words += words
        position = None
        while self._ends and self._ends[0][0] <= self.words:
            position = self._ends.popleft()[1]
        if self._enabled and (position is not None or not self._by_position):
            self._show(position or 0)

    def _show(self, position: int) -> None:
        # The words beside the counts are formatted at most as often as tqdm redraws
        # (formatting them for every example cost more than the rest of this call).
        now = time.monotonic()
        if now >= self._next_postfix:
            self._bar.set_postfix_str(self._postfix(), refresh=False)
            self._next_postfix = now + self._bar.mininterval
        self._bar.update((position if self._by_position else self.words) - self._bar.n)

    def note(self, text: str) -> None:
        """Show ``text`` beside the counts (e.g. how many chunks came from a cache)."""
        self._note = text
        self._bar.set_postfix_str(self._postfix(), refresh=False)

    def finish(self) -> None:
        """The pass is done: show it complete. A bar by position ends at the corpus's
        size (after trailing blank lines, or a shard's last sequence); one by words at
        the words seen (a corpus shorter than ``limit_tokens``, a stream of unknown size)."""
        if not self._enabled:
            return
        if self._by_position and self._bar.total is not None:
            self._bar.update(self._bar.total - self._bar.n)
        elif self._bar.total != self._bar.n:
            self._bar.total = self._bar.n
        self._bar.set_postfix_str(self._postfix(), refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()

    def _postfix(self) -> str:
        words = f"{self.words:,} words" if self._by_position else ""
        return ", ".join(part for part in (words, self._note) if part)


class Progress:
    """The bars of one run over a corpus, made by one rule and closed together;
    a context manager."""

    def __init__(
        self, corpus: Corpus, limit_tokens: int | None = None, sharded: bool = False, enabled: bool = True
    ) -> None:
        self._corpus, self._limit, self._sharded, self._enabled = corpus, limit_tokens, sharded, enabled
        self._bars: list[CorpusBar] = []

    def bar(self, desc: str) -> CorpusBar:
        """A new bar for a pass named ``desc``."""
        bar = CorpusBar(self._corpus, desc, self._limit, self._sharded, self._enabled)
        self._bars.append(bar)
        return bar

    def finish(self) -> None:
        """Every pass read the whole stream (see :meth:`CorpusBar.finish`)."""
        for bar in self._bars:
            bar.finish()

    def close(self) -> None:
        for bar in self._bars:
            bar.close()
        self._bars.clear()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
