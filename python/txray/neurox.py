"""Read activations that NeuroX already extracted, and record them with txray.

NeuroX (``neurox.data.extraction.transformers_extractor``) writes one of:

- ``.hdf5``: a dataset per sentence, named ``"0"``, ``"1"``, ..., of shape
  (layers, words, neurons), and a dataset ``sentence_to_index`` holding one
  JSON string ``{"the words joined by spaces": "0", ...}`` (a repeated
  sentence gets the suffix `` (Occurrence 2)``).
- ``.json``: one JSON object per line, ``{"linex_index": i, "features":
  [{"token": word, "layers": [{"index": l, "values": [...]}, ...]}, ...]}``.

With ``--decompose_layers`` each layer is its own file of either kind.

    profiles = txray.record_neurox("acts.hdf5", features=["token", "pos"])   # {layer index: Profile}
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ._version import __version__
from .corpus import Example
from .features import (
    Column,
    Feature,
    Prediction,
    annotate,
    build_vocabularies,
    needs_vocabulary_pass,
    resolve_features,
    word_feature_ids,
)
from .profile import Profile
from .recording import LayerRecorders
from .taggers import default_cache_dir

_OCCURRENCE = re.compile(r" \(Occurrence \d+\)$")
LABEL_COLUMN = "neurox_labels"  # the per-word labels of a NeuroX labels file


def read_neurox(path: str | os.PathLike) -> Iterator[tuple[list[str], np.ndarray]]:
    """Yield ``(words, activations)`` per sentence, in sentence index order;
    activations have shape (layers, words, neurons), float32."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"NeuroX activation file not found: {path}")
    if path.suffix == ".hdf5":
        return _read_hdf5(path)
    if path.suffix == ".json":
        return _read_json(path)
    raise ValueError(f"{path}: NeuroX activation files end in .hdf5 or .json")


def _read_hdf5(path: Path) -> Iterator[tuple[list[str], np.ndarray]]:
    import h5py

    with h5py.File(path, "r") as data:
        if "sentence_to_index" not in data:
            raise ValueError(f"{path} has no 'sentence_to_index' dataset: not a NeuroX activation file")
        raw = data["sentence_to_index"][0]
        index = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
        words_of = {int(i): _OCCURRENCE.sub("", sentence).split(" ") for sentence, i in index.items()}
        for i in sorted(words_of):
            acts = np.asarray(data[str(i)], dtype=np.float32)
            yield words_of[i], _checked(acts, words_of[i], path, i)


def _read_json(path: Path) -> Iterator[tuple[list[str], np.ndarray]]:
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines):
            if not line.strip():
                continue
            features = json.loads(line)["features"]
            words = [f["token"] for f in features]
            if not features:
                continue
            acts = np.array(
                [
                    [layer["values"] for layer in sorted(f["layers"], key=lambda layer_: layer_["index"])]
                    for f in features
                ],
                dtype=np.float32,
            )  # (words, layers, neurons)
            yield words, _checked(acts.transpose(1, 0, 2), words, path, number)


def _checked(acts: np.ndarray, words: list[str], path: Path, sentence: int) -> np.ndarray:
    if acts.ndim != 3 or acts.shape[1] != len(words):
        raise ValueError(
            f"{path}: sentence {sentence} has activations of shape {acts.shape} for {len(words)} words; "
            "NeuroX files hold (layers, words, neurons)"
        )
    return acts


def record_neurox(
    path: str | os.PathLike,
    features: Sequence[str | Feature] = ("token",),
    layers: Sequence[int] | None = None,
    mode: str = "max1",
    k: int | None = None,
    labels: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike[str] | Literal[False] | None = None,
) -> dict[int, Profile]:
    """Record a NeuroX activation file: ``{layer index: Profile}``.

    ``features`` are as in :func:`txray.record_model` (``"token"``, ``"pos"``,
    ``"ngram2"``, ...; the words are NeuroX's). ``labels`` is a NeuroX
    labels file (one line per sentence, one label per word, space separated),
    recorded as feature kind ``"label"``. ``layers`` picks layer indices
    (default: all)."""
    features = resolve_features(features)
    if any(isinstance(f, Prediction) for f in features):
        raise ValueError("a NeuroX file holds no model predictions: record 'label' from a labels file instead")
    if labels is not None:
        if not Path(labels).is_file():
            raise FileNotFoundError(f"labels file not found: {labels}")
        features.append(Column(LABEL_COLUMN, kind="label"))
    if needs_vocabulary_pass(features):
        build_vocabularies(features, _examples(path, labels, None))
    cache = None if cache_dir is False else (cache_dir or default_cache_dir())
    acts_of: dict[int, np.ndarray] = {}
    recorders: LayerRecorders[int] = LayerRecorders(features, mode, k)
    for example in annotate(_examples(path, labels, acts_of), features, cache):
        acts = acts_of.pop(example.index)
        chosen = range(acts.shape[0]) if layers is None else layers
        ids = word_feature_ids(features, example)
        for layer in chosen:
            if not 0 <= layer < acts.shape[0]:
                raise ValueError(f"{path} has {acts.shape[0]} layers; there is no layer {layer}")
            recorders.update(layer, acts[layer], ids)
    if not recorders:
        raise ValueError(f"{path} holds no sentences")
    meta = {"source": "neurox", "corpus": Path(path).name, "txray_version": __version__}
    return recorders.profiles(meta, name=lambda layer: f"{Path(path).stem}:layer{layer}")


def _examples(
    path: str | os.PathLike, labels: str | os.PathLike | None, acts_of: dict[int, np.ndarray] | None
) -> Iterator[Example]:
    """Examples of the file's sentences (with their labels line, if any); each
    sentence's activations wait in ``acts_of`` under its index until recorded."""
    label_lines = open(labels, encoding="utf-8") if labels is not None else None
    try:
        for index, (words, acts) in enumerate(read_neurox(path)):
            record: dict[str, Any] = {}
            if label_lines is not None:
                line = label_lines.readline()
                if not line:
                    raise ValueError(f"the labels file {labels} has fewer lines than {path} has sentences")
                record[LABEL_COLUMN] = line.split()
            if acts_of is not None:
                acts_of[index] = acts
            yield Example(index, words, record)
    finally:
        if label_lines is not None:
            label_lines.close()
