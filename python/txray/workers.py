"""Run one function over chunks of a stream in worker processes, results in chunk order.

``record_model`` can build its inputs (tokenizing, windows, feature ids) and count
its vocabularies in several processes (:attr:`txray.RecordOptions.workers`): the
chunks are numbered as they are read and dealt to the workers in turn (chunk ``i``
to worker ``i % workers``), and their results are read back in the same turn, so
what is recorded does not depend on how many workers there are. At most ``depth``
chunks are in flight (sent and not yet read back): memory stays bounded however
fast the stream is.

Each worker has a pipe of its own each way, and this process has no thread for them:
it pickles a chunk straight into the worker's pipe and reads the result straight
from the other one. (``concurrent.futures.ProcessPoolExecutor`` runs two threads
in this process to move its tasks and results; they took turns on the interpreter's
lock with the model's thread and made the reading here several times slower.) A
thread in each worker keeps its task pipe drained, so sending never waits on a
worker that is busy sending a result.

The workers are forked, as PyTorch's ``DataLoader`` forks its workers on Linux: they
start at once and inherit the tokenizer and the vocabularies instead of receiving a
pickled copy. They ignore Ctrl-C (the parent handles it and shuts them down), and
leaving the ``with`` block, however it is left, stops and joins every one of them.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import multiprocessing
import os
import pickle
import queue
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any, Generic, TypeVar

C = TypeVar("C")
R = TypeVar("R")

MAX_WORKERS_PER_CORE = 4
"""More worker processes than this per core is refused as a mistake (no pipeline needs them)."""

JOIN_TIMEOUT_S = 5.0
"""How long a worker may take to finish its chunk once told to stop, before it is terminated."""

PIPE_BYTES = 1 << 20
"""The size asked for each pipe to and from a worker (where the system allows it)."""

_PROTOCOL = pickle.HIGHEST_PROTOCOL
PR_SET_NAME = 15  # prctl(2): the calling thread's name, which ps shows for a process


class WorkerTraceback(Exception):
    """The traceback of an error raised in a worker process: the ``__cause__`` of that error here."""


class _Failure:
    """What a worker sends back instead of a result when ``work`` raised."""

    def __init__(self, error: BaseException, trace: str) -> None:
        self.error, self.trace = error, trace


def _serve(
    work: Callable[[Any], Any],
    initializer: Callable[[], None] | None,
    tasks: Connection,
    results: Connection,
    inherited: list[Connection],
) -> None:
    """A worker's life: ``initializer()``, then ``work`` on every chunk that arrives, each
    result sent back in order (an error of ``initializer`` answers every chunk)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _name_process(multiprocessing.current_process().name)
    for connection in inherited:  # the parent's pipe ends, copied by the fork
        connection.close()
    failed = None
    if initializer is not None:
        try:
            initializer()
        except BaseException as error:  # noqa: BLE001 - sent to the parent with the first result
            failed = _Failure(error, traceback.format_exc())
    inbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()

    def receive() -> None:
        try:
            while True:
                inbox.put(tasks.recv_bytes())
        except (EOFError, OSError):  # the parent closed the pipe: no more chunks
            inbox.put(None)

    threading.Thread(target=receive, name="txray-worker-inbox", daemon=True).start()
    while (task := inbox.get()) is not None:
        try:
            answer: Any = failed if failed is not None else work(pickle.loads(task))
        except BaseException as error:  # noqa: BLE001 - sent to the parent, which raises it
            answer = _Failure(error, traceback.format_exc())
        try:
            data = pickle.dumps(answer, protocol=_PROTOCOL)
        except Exception as error:  # noqa: BLE001 - a result or an error that cannot be pickled
            what = "error" if isinstance(answer, _Failure) else "result"
            failure = RuntimeError(f"a txray worker's {what} cannot be sent back: {error}")
            data = pickle.dumps(_Failure(failure, traceback.format_exc()), protocol=_PROTOCOL)
        try:
            results.send_bytes(data)
        except OSError:  # the parent stopped reading (it is shutting down)
            return


def _widen(connection: Connection) -> None:
    """Make a pipe hold a whole chunk (Linux: up to 1 MiB), so that a write rarely waits for
    the reader: the default 64 KiB held a third of a chunk, and the sender waited for the
    receiving process to get the interpreter's lock back for each third."""
    if hasattr(fcntl, "F_SETPIPE_SZ"):
        with contextlib.suppress(OSError):  # a lower limit (/proc/sys/fs/pipe-max-size) keeps the default
            fcntl.fcntl(connection.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)


def too_many_workers(workers: int) -> str | None:
    """Why ``workers`` worker processes are too many for this machine (more than
    :data:`MAX_WORKERS_PER_CORE` per core), as the end of a sentence that names the limit,
    or None. A typo such as 1000 would fork a thousand processes, each with a copy of the
    tokenizer. :func:`check_worker_count` and ``txray record --workers`` say it each their way."""
    cores = os.cpu_count() or 1
    if workers <= MAX_WORKERS_PER_CORE * cores:
        return None
    return (
        f"is more than {MAX_WORKERS_PER_CORE} processes per core "
        f"(this machine has {cores} cores): use at most {MAX_WORKERS_PER_CORE * cores}"
    )


def check_worker_count(workers: int) -> None:
    """Refuse more worker processes than :func:`too_many_workers` allows. Checked by
    :class:`txray.RecordOptions` before any work, and by :class:`ChunkWorkers`."""
    reason = too_many_workers(workers)
    if reason is not None:
        raise ValueError(f"workers={workers} {reason}")


def _name_process(name: str) -> None:
    """Show the worker as ``name`` (``txray-worker-0``) in ``ps``, ``top`` and ``pgrep`` (Linux;
    elsewhere it keeps the parent's name): its command line is the parent's."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


class ChunkWorkers(Generic[C, R]):
    """``work(chunk)`` for every chunk, in ``workers`` processes; a context manager.

    ``work`` can be any callable (a closure too): the workers are forked, so it is
    inherited, never pickled; the chunks and the results are pickled. Errors raised
    by ``work`` are raised again by :meth:`map` (their traceback in the worker as
    their ``__cause__``, a :class:`WorkerTraceback`); a worker that dies (killed, out
    of memory) is a :class:`RuntimeError` that says so. ``initializer()`` runs once in
    each worker before its first chunk (an error there is raised by :meth:`map`).

    >>> with ChunkWorkers(len, workers=2) as pool:
    ...     list(pool.map([[1, 2], [3], []]))
    [2, 1, 0]
    """

    def __init__(
        self,
        work: Callable[[C], R],
        workers: int,
        depth: int | None = None,
        initializer: Callable[[], None] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be 1 or more processes, not {workers}")
        check_worker_count(workers)
        if "fork" not in multiprocessing.get_all_start_methods():
            raise RuntimeError("worker processes need the 'fork' start method (Linux, macOS); use workers=0")
        self.workers = workers
        self.depth = depth if depth is not None else 2 * workers
        if self.depth < 1:
            raise ValueError(f"depth must be positive, not {self.depth}")
        self._work, self._initializer = work, initializer
        self._processes: list[Any] = []  # multiprocessing's fork Process
        self._tasks: list[Connection] = []  # this process's end of each worker's task pipe
        self._results: list[Connection] = []  # and of its result pipe
        self._sent = self._read = 0  # chunks sent and results read, over every map

    def __enter__(self) -> ChunkWorkers[C, R]:
        context = multiprocessing.get_context("fork")
        try:
            with warnings.catch_warnings():
                # Python 3.12+ warns about forking a process that has threads (torch's); the workers
                # run only NumPy, the tokenizer and txray's Python, as a DataLoader's workers do.
                warnings.simplefilter("ignore", DeprecationWarning)
                for number in range(self.workers):
                    task_out, task_in = context.Pipe(duplex=False)  # (reading end, writing end)
                    result_out, result_in = context.Pipe(duplex=False)
                    _widen(task_in)
                    _widen(result_in)
                    # Every end this process keeps, the new worker's own included: a pipe
                    # ends (EOF) only once every copy of its writing end is closed.
                    inherited = [*self._tasks, *self._results, task_in, result_out]
                    process = context.Process(
                        target=_serve,
                        args=(self._work, self._initializer, task_out, result_in, inherited),
                        name=f"txray-worker-{number}",
                        daemon=True,
                    )
                    process.start()
                    task_out.close()  # the worker's ends: only the worker holds them now
                    result_in.close()
                    self._processes.append(process)
                    self._tasks.append(task_in)
                    self._results.append(result_out)
        except BaseException:
            self._shutdown()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._shutdown()

    def _shutdown(self) -> None:
        # Closing the pipes tells every worker to stop: chunks not started are dropped, and a
        # worker finishes the one it holds (its result has nowhere to go) and exits.
        for connection in self._tasks + self._results:
            connection.close()
        for process in self._processes:
            process.join(JOIN_TIMEOUT_S)
            if process.is_alive():  # still busy with a long chunk
                process.terminate()
                process.join()
        self._processes, self._tasks, self._results = [], [], []

    def map(self, chunks: Iterable[C]) -> Iterator[R]:
        """``work(chunk)`` of every chunk, in the order of ``chunks``; up to ``depth``
        chunks are read ahead and worked on while the caller uses the results."""
        if not self._processes:
            raise RuntimeError("ChunkWorkers.map runs inside its with block")
        while self._read < self._sent:  # the results of an earlier map that was left early
            self._receive()
        source = iter(chunks)
        exhausted = False
        while True:
            while not exhausted and self._sent - self._read < self.depth:
                try:
                    chunk = next(source, _END)
                except BaseException:
                    # Reading failed: the chunks sent before come first (their errors too), as
                    # they would if each were worked on before the next one was read.
                    while self._read < self._sent:
                        yield self._receive()
                    raise
                if chunk is _END:
                    exhausted = True
                else:
                    self._send(chunk)
            if self._read == self._sent:
                return
            yield self._receive()

    def _send(self, chunk: C) -> None:
        try:
            data = pickle.dumps(chunk, protocol=_PROTOCOL)
        except Exception as error:  # noqa: BLE001 - pickle raises several kinds
            raise TypeError(f"a chunk cannot be sent to a txray worker process (it must pickle): {error}") from error
        try:
            self._tasks[self._sent % self.workers].send_bytes(data)
        except OSError:
            raise self._died() from None
        self._sent += 1

    def _receive(self) -> R:
        connection = self._results[self._read % self.workers]
        try:
            data = connection.recv_bytes()
        except (EOFError, OSError):
            raise self._died() from None
        self._read += 1
        answer = pickle.loads(data)
        if isinstance(answer, _Failure):
            raise answer.error from WorkerTraceback(answer.trace)
        return answer

    def _died(self) -> RuntimeError:
        return RuntimeError(
            "a txray worker process died (killed, or out of memory?); "
            "try fewer workers, or workers=0 to build the inputs in this process"
        )


_END: Any = object()
