"""Run one function over chunks of a stream in worker processes, results in chunk order.

``record_model`` can build its inputs (tokenizing, windows, feature ids) and count
its vocabularies in several processes (:attr:`txray.RecordOptions.workers`): the
chunks are numbered as they are read, handed to whichever worker is free, and
their results come back in chunk order, so what is recorded does not depend on
how many workers there are. At most ``depth`` chunks are in flight (sent and not
yet read back): memory stays bounded however fast the stream is.

The workers are forked, as PyTorch's ``DataLoader`` forks its workers on Linux: they
start at once and inherit the tokenizer and the vocabularies instead of receiving a
pickled copy; only the chunks and their results travel, pickled, through pipes.
They ignore Ctrl-C (the parent handles it and shuts them down), and leaving the
``with`` block, however it is left, stops and joins every one of them.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import signal
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from types import TracebackType
from typing import Any, Generic, TypeVar

C = TypeVar("C")
R = TypeVar("R")

MAX_WORKERS_PER_CORE = 4
"""More worker processes than this per core is refused as a mistake (no pipeline needs them)."""

_work: Callable[[Any], Any] | None = None  # in a worker: the function it applies to every chunk


def _start_worker(work: Callable[[Any], Any]) -> None:
    global _work
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _work = work


def _run(chunk: Any) -> Any:
    assert _work is not None  # set by _start_worker in every worker
    return _work(chunk)


def _ready() -> None:
    """A task that does nothing: submitted once per worker to start them all at once."""


class ChunkWorkers(Generic[C, R]):
    """``work(chunk)`` for every chunk, in ``workers`` processes; a context manager.

    ``work`` can be any callable (a closure too): the workers are forked, so it is
    inherited, never pickled; the chunks and the results are pickled. Errors raised
    by ``work`` are raised again by :meth:`map` (their traceback in the worker as
    their ``__cause__``); a worker that dies (killed, out of memory) is a
    :class:`RuntimeError` that says so.

    >>> with ChunkWorkers(len, workers=2) as pool:
    ...     list(pool.map([[1, 2], [3], []]))
    [2, 1, 0]
    """

    def __init__(self, work: Callable[[C], R], workers: int, depth: int | None = None) -> None:
        if workers < 1:
            raise ValueError(f"workers must be 1 or more processes, not {workers}")
        cores = os.cpu_count() or 1
        if workers > MAX_WORKERS_PER_CORE * cores:
            # A typo such as 1000 would fork a thousand processes, each with a copy of the tokenizer.
            raise ValueError(
                f"workers={workers} is more than {MAX_WORKERS_PER_CORE} processes per core "
                f"(this machine has {cores} cores): use at most {MAX_WORKERS_PER_CORE * cores}"
            )
        if "fork" not in multiprocessing.get_all_start_methods():
            raise RuntimeError("worker processes need the 'fork' start method (Linux, macOS); use workers=0")
        self.workers = workers
        self.depth = depth if depth is not None else 2 * workers
        if self.depth < 1:
            raise ValueError(f"depth must be positive, not {self.depth}")
        self._work = work
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> ChunkWorkers[C, R]:
        with warnings.catch_warnings():
            # Python 3.12+ warns about forking a process that has threads (torch's); the workers
            # run only NumPy, the tokenizer and txray's Python, as a DataLoader's workers do.
            warnings.simplefilter("ignore", DeprecationWarning)
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("fork"),
                initializer=_start_worker,
                initargs=(self._work,),
            )
            try:
                # Every worker is forked now, from this thread, before any other starts.
                self._pool.submit(_ready).result()
            except BaseException:
                self._shutdown()
                raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._shutdown()

    def _shutdown(self) -> None:
        if self._pool is not None:
            # Chunks not started are dropped; the workers finish the one they hold and are joined.
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def map(self, chunks: Iterable[C]) -> Iterator[R]:
        """``work(chunk)`` of every chunk, in the order of ``chunks``; up to ``depth``
        chunks are read ahead and worked on while the caller uses the results."""
        if self._pool is None:
            raise RuntimeError("ChunkWorkers.map runs inside its with block")
        pool = self._pool
        pending: collections.deque[Future[R]] = collections.deque()
        source = iter(chunks)
        exhausted = False
        try:
            while True:
                while not exhausted and len(pending) < self.depth:
                    chunk = next(source, _END)
                    if chunk is _END:
                        exhausted = True
                    else:
                        pending.append(pool.submit(_run, chunk))
                if not pending:
                    return
                try:
                    result = pending.popleft().result()
                except BrokenProcessPool:
                    raise RuntimeError(
                        "a txray worker process died (killed, or out of memory?); "
                        "try fewer workers, or workers=0 to build the inputs in this process"
                    ) from None
                yield result
        finally:
            for future in pending:
                future.cancel()


_END: Any = object()
