"""Run an iterator ahead of its consumer on a background thread.

``record_model`` builds its batches (tokenizing, windows, padding, feature ids)
while the model runs the previous ones: the model's forward pass releases the
GIL, so on a fast device the wall time comes near the larger of the two, not
their sum."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Generic, TypeVar

T = TypeVar("T")

_POLL_S = 0.1  # how often a blocked side looks whether the other has stopped


class _Done:
    pass


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class Prefetch(Generic[T]):
    """The items of ``source``, in order, produced by a thread up to ``depth`` items ahead.

    Use it as a context manager: leaving the block (at the end, on an error, on
    Ctrl-C, or after a ``break``) stops the thread and waits for it, so it never
    outlives the block. An error raised by ``source`` (KeyboardInterrupt too) is
    raised again in the consumer, with its traceback; items read before it come first.

    >>> with Prefetch(range(3), depth=2) as items:
    ...     list(items)
    [0, 1, 2]
    """

    def __init__(self, source: Iterable[T], depth: int = 4, name: str = "txray-prefetch") -> None:
        if depth < 1:
            raise ValueError(f"depth must be positive, not {depth}")
        self._source = source
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name=name, daemon=True)

    def __enter__(self) -> Iterator[T]:
        self._thread.start()
        return self._items()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._stop.set()
        while self._thread.is_alive():
            self._drain()  # a producer blocked on a full queue sees the stop at its next poll
            self._thread.join(_POLL_S)
        self._drain()

    def _drain(self) -> None:
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            for item in self._source:
                if not self._put(item):
                    return
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, which raises it
            self._put(_Failed(error))
            return
        self._put(_Done())

    def _items(self) -> Iterator[T]:
        while True:
            try:
                # A timeout, so that Ctrl-C reaches a consumer waiting on a slow producer.
                item = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise RuntimeError("the prefetch thread stopped without a result") from None
                continue
            if isinstance(item, _Done):
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item  # type: ignore[misc]
