"""Where a demo run's models are, written beside its profiles so that ``txray serve OUT`` can load them.

``OUT/models/models.json`` names the first replicate's language model (the
last snapshot) and classifier (both state dicts stay in the cache), their
sizes, the recorded layer and the profiles in the study's order;
``OUT/models/vocab.txt`` holds the vocabulary (one word a line, id = line)
and ``OUT/models/tweets_test.csv`` the labelled test tweets (``text``,
``label``), for the ablation view.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .classifier import SentimentClassifier
from .config import DemoConfig
from .data import LABELS, Tweet
from .files import write_json, write_text
from .lm import LAYER, Encoder, LanguageModel

FORMAT = "txray-demo-models/1"
MANIFEST = Path("models") / "models.json"


def _relative(path: Path, out: Path) -> str:
    """``path`` relative to the output folder when inside it (the folder can move), else absolute."""
    path, out = Path(path).resolve(), Path(out).resolve()
    return path.relative_to(out).as_posix() if path.is_relative_to(out) else str(path)


def write_models(
    config: DemoConfig,
    vocab: Sequence[str],
    language_model: Path,
    classifier: Path,
    stages: Sequence[Path],
    test: Sequence[Tweet],
) -> dict[str, Path]:
    """Write ``OUT/models/`` (see the module's docs); returns the files written."""
    import pyarrow as pa

    from .files import write_table

    out = Path(config.out)
    folder = out / MANIFEST.parent
    names = {v: k for k, v in LABELS.items()}
    files = {"models": out / MANIFEST, "vocab": folder / "vocab.txt", "labelled": folder / "tweets_test.csv"}
    write_text("".join(f"{w}\n" for w in vocab), files["vocab"])
    write_table(
        pa.table({"text": [" ".join(t.words) for t in test], "label": [names[t.label] for t in test]}),
        files["labelled"],
    )
    write_json(
        {
            "format": FORMAT,
            "layer": LAYER,
            "embedding": config.embedding,
            "hidden": config.hidden,
            "vocab": "vocab.txt",
            "language_model": _relative(language_model, folder),
            "classifier": _relative(classifier, folder),
            "labelled": "tweets_test.csv",
            "labels": [names[i] for i in sorted(names)],
            "stages": [_relative(p, out) for p in stages],
        },
        files["models"],
    )
    return files


@dataclasses.dataclass
class DemoModels:
    """What ``OUT/models/models.json`` says, with paths resolved."""

    out: Path
    layer: str
    embedding: int
    hidden: int
    vocab: list[str]
    language_model: Path
    classifier: Path
    labelled: Path
    labels: list[str]
    stages: list[Path]

    def load_lm(self) -> LanguageModel:
        """The language model, on the CPU, in eval mode."""
        model = LanguageModel(len(self.vocab), self.embedding, self.hidden)
        model.load_state_dict(_state(self.language_model))
        return model.eval()

    def load_classifier(self) -> SentimentClassifier:
        """The fine-tuned classifier, on the CPU, in eval mode."""
        model = SentimentClassifier(Encoder(len(self.vocab), self.embedding, self.hidden))
        model.load_state_dict(_state(self.classifier))
        return model.eval()


def _state(path: Path) -> dict[str, Any]:
    import torch

    if not path.is_file():
        raise FileNotFoundError(f"the demo's model {path} is missing (was its cache deleted? run txray demo again)")
    return torch.load(path, map_location="cpu", weights_only=True)


def read_models(out: str | os.PathLike) -> DemoModels:
    """The models of the demo output folder ``out``; FileNotFoundError when it has no ``models/models.json``
    (a run from before it was written: run ``txray demo`` again, the cache makes it quick)."""
    out = Path(out)
    manifest = out / MANIFEST
    if not manifest.is_file():
        raise FileNotFoundError(f"{out} has no {MANIFEST.as_posix()}: run txray demo --out {out} again to write it")
    meta = json.loads(manifest.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        raise ValueError(f"{manifest}: not a {FORMAT} file")
    folder = manifest.parent
    vocab = (folder / meta["vocab"]).read_text(encoding="utf-8").split("\n")[:-1]
    return DemoModels(
        out=out,
        layer=meta["layer"],
        embedding=int(meta["embedding"]),
        hidden=int(meta["hidden"]),
        vocab=vocab,
        language_model=folder / meta["language_model"],
        classifier=folder / meta["classifier"],
        labelled=folder / meta["labelled"],
        labels=list(meta["labels"]),
        stages=[out / s for s in meta["stages"]],
    )
