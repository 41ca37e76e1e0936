"""The ablation view: pruning tables (:func:`txray.pruning_table`) of a live classifier against a labelled file,
computed in the background with progress, and cached."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..profile import Profile
from .folders import Folders, RequestError
from .live import LiveModel

LABELLED_SUFFIXES = (".csv", ".tsv", ".parquet")
MAX_ROWS = 5000
"""Most rows of a labelled file one pruning table evaluates."""
MAX_SETS = 16
"""Most neuron sets one pruning table holds."""
SPLIT = "file"
"""The name of the one split (the labelled file) in the table's columns: ``metric_file``, ``change_file``."""


def read_labelled(path: Path, rows: int, text: str = "text", label: str = "label") -> tuple[list[str], list[str]]:
    """The first ``rows`` (text, label) pairs of a CSV, TSV or Parquet file."""
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    try:
        if path.suffix.lower() == ".parquet":
            table = pq.read_table(path, columns=[text, label])
        else:
            options = pcsv.ParseOptions(delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
            table = pcsv.read_csv(path, parse_options=options)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the request's problem
        raise RequestError(f"cannot read {path.name}: {err}") from None
    missing = [c for c in (text, label) if c not in table.column_names]
    if missing:
        raise RequestError(f"{path.name} has no column {missing[0]!r} (it has {', '.join(table.column_names)})")
    table = table.slice(0, rows)
    texts = [str(t) for t in table.column(text).to_pylist()]
    labels = [str(v) for v in table.column(label).to_pylist()]
    if not texts:
        raise RequestError(f"{path.name} has no rows")
    return texts, labels


@dataclasses.dataclass
class Job:
    """One pruning table being computed (or done)."""

    id: int
    model: str
    file: str
    sets: dict[str, list[int]]
    total: int  # evaluations of one row each
    done: int = 0
    table: list[dict[str, Any]] | None = None
    error: str | None = None

    def state(self) -> dict[str, Any]:
        status = "error" if self.error else "done" if self.table is not None else "running"
        return {
            "id": self.id,
            "status": status,
            "model": self.model,
            "file": self.file,
            "sets": {k: len(v) for k, v in self.sets.items()},
            "progress": self.done / self.total if self.total else 1.0,
            "done": self.done,
            "total": self.total,
            "table": self.table,
            "error": self.error,
        }


class Ablation:
    """Pruning tables of the server's classifiers, one job at a time, each result kept."""

    def __init__(self, folders: Folders) -> None:
        self.folders = folders
        self._jobs: dict[int, Job] = {}
        self._keys: dict[tuple, int] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="txray-ablation")
        self._closing = False

    def close(self) -> None:
        """Stop the running job (it ends with an error) and drop the waiting ones: the server is stopping."""
        self._closing = True
        self._pool.shutdown(wait=False, cancel_futures=True)

    def start(
        self, live: LiveModel, file: str, sets: Mapping[str, Sequence[int]], profile: Profile | None, rows: int
    ) -> dict[str, Any]:
        """Start (or find, when the same table was asked for before) the pruning table of these sets."""
        if live.kind != "class":
            raise RequestError(f"the ablation view needs a classifier; {live.name} outputs a {live.kind}")
        if not sets:
            raise RequestError("sets: choose at least one neuron set")
        if len(sets) > MAX_SETS:
            raise RequestError(f"sets: at most {MAX_SETS} sets at once, not {len(sets)}")
        width = live.n_neurons
        for name, ids in sets.items():
            bad = [n for n in ids if not 0 <= n < width]
            if bad:
                raise RequestError(f"set {name!r}: neuron {bad[0]} is out of range ({width} neurons)")
        path = self.folders.file(file, LABELLED_SUFFIXES)
        if not 1 <= rows <= MAX_ROWS:
            raise RequestError(f"rows: 1 to {MAX_ROWS:,}, not {rows}")
        stat = path.stat()
        clean = {str(k): sorted({int(n) for n in v}) for k, v in sets.items()}
        key = (
            live.name,
            str(path),
            stat.st_mtime_ns,
            stat.st_size,
            rows,
            tuple((k, tuple(v)) for k, v in clean.items()),
        )
        with self._lock:
            if key in self._keys and self._jobs[self._keys[key]].error is None:
                return self._jobs[self._keys[key]].state()
            texts, labels = read_labelled(path, rows)
            names = live.class_labels()
            wanted = [_label_index(names, live.name, label) for label in labels]
            encoded = [_encoded(live, text, row, file) for row, text in enumerate(texts)]
            job = Job(next(self._ids), live.name, file, clean, total=len(texts) * (len(clean) + 1))
            self._jobs[job.id] = job
            self._keys[key] = job.id
        self._pool.submit(self._run, job, live, encoded, wanted, profile)
        return job.state()

    def job(self, job_id: int) -> dict[str, Any]:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise RequestError(f"no ablation job {job_id}", 404)
        return job.state()

    def _run(self, job: Job, live: LiveModel, encoded: list[Any], wanted: list[int], profile: Profile | None) -> None:
        import torch

        from ..prune import pruning_table

        try:
            # A copy: the pruning hooks must not reach the model that answers the other views meanwhile.
            model = copy.deepcopy(live.model)

            def evaluate(m: Any) -> dict[str, float]:
                right = 0
                with torch.inference_mode():
                    for ids, want in zip(encoded, wanted):
                        if self._closing:
                            raise RuntimeError("the server is stopping")
                        scores = live.readout.scores(live.forward(m, ids), ids)
                        right += int(int(scores.argmax()) == want)
                        job.done += 1
                return {SPLIT: right / len(encoded)}

            table = pruning_table(model, live.layer, job.sets, evaluate, profile=profile)
            job.table = table.to_pylist()
        except RequestError as err:
            job.error = str(err)
        except Exception as err:  # noqa: BLE001 - shown in the page; the server goes on
            job.error = f"{type(err).__name__}: {err}"


def _encoded(live: LiveModel, text: str, row: int, file: str) -> Any:
    """A row's text as input ids; an error names the row (the header is line 1 of a CSV)."""
    try:
        return live.encode(text).ids
    except RequestError as err:
        raise RequestError(f"{file}, row {row + 1}: {err}") from None


def _label_index(names: list[str], model: str, label: str) -> int:
    """The class index of a label of the file: the classifier's label name, or its index."""
    if label in names:
        return names.index(label)
    if label.isdigit() and int(label) < len(names):
        return int(label)
    raise RequestError(f"label {label!r} is none of {model}'s classes ({', '.join(names)})")
