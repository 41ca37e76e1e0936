"""The models of a ``txray demo`` output folder as live models: the LSTM language model and the classifier."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .live import LiveModel, Readout


def is_demo_output(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` is a demo output folder that says where its models are."""
    from ..demo.models import MANIFEST

    return (Path(folder) / MANIFEST).is_file()


def demo_live_models(folder: str | os.PathLike) -> tuple[list[Path], list[LiveModel], Path]:
    """The demo's profiles (in the study's order), its language model and classifier, and its labelled test file."""
    import torch

    from ..demo.data import EOS, UNK
    from ..demo.models import read_models
    from ..word_tokenizers import VocabTokenizer

    found = read_models(folder)
    vocab = found.vocab
    tokenizer = VocabTokenizer(vocab, unk=UNK, pad_id=0, name="demo-lm-vocab")

    def lm_forward(model: Any, ids: torch.Tensor) -> Any:
        return model(ids)[0]

    def words(ix: Any) -> list[str]:
        return [vocab[i] for i in ix]

    lm = LiveModel(
        "demo language model",
        found.load_lm(),
        tokenizer,
        found.layer,
        lm_forward,
        Readout("next word", lambda logits, ids: logits[0, -1].float().softmax(-1), words),
    )

    def classify(model: Any, ids: torch.Tensor) -> Any:
        return model(ids, torch.tensor([ids.shape[1]]))

    labels = found.labels
    classifier = LiveModel(
        "demo classifier",
        found.load_classifier(),
        tokenizer,
        found.layer,
        classify,
        Readout(
            "class",
            lambda logit, ids: torch.stack([1 - logit[0].sigmoid(), logit[0].sigmoid()]).float(),
            lambda ix: [labels[i] for i in ix],
        ),
        append=[vocab.index(EOS)],  # a tweet ends in <eos>, where the classifier reads the state
    )
    return found.stages, [lm, classifier], found.labelled
