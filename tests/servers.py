"""A small ``txray demo`` output folder for the server's tests and benchmark: profiles of a random layer and
untrained (random) demo models of the same width, saved the way ``txray demo`` saves them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import stages as st
import torch

from txray.demo.classifier import SentimentClassifier
from txray.demo.config import DemoConfig
from txray.demo.data import EOS, PAD, UNK, Tweet
from txray.demo.lm import Encoder, LanguageModel
from txray.demo.models import write_models


def demo_output(
    out: Path, hidden: int = 12, embedding: int = 8, words: int = 20, stages: int = 3, seed: int = 0, tweets: int = 40
) -> Path:
    """Write OUT/profiles/*.parquet (``stages`` profiles of ``hidden`` neurons, tokens w0.., with contexts), the
    models' state dicts in OUT/cache and OUT/models/ (what ``txray serve OUT`` reads). Returns ``out``."""
    torch.manual_seed(seed)
    vocab = [PAD, UNK, EOS, *st.vocabulary(words)]
    profiles = st.recorded_stages(n_stages=stages, n_neurons=hidden, vocab=words, contexts=4, seed=seed)
    paths = []
    for profile in profiles:
        path = out / "profiles" / f"{profile.name.replace(' ', '_')}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        profile.save(path)
        paths.append(path)
    cache = out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    lm = LanguageModel(len(vocab), embedding, hidden)
    torch.save(lm.state_dict(), cache / "epoch003.pt")
    classifier = SentimentClassifier(Encoder(len(vocab), embedding, hidden))
    torch.save(classifier.state_dict(), cache / "classifier.pt")
    rng = np.random.default_rng(seed)
    test = [Tweet([f"w{i}" for i in rng.integers(0, words, 6)], int(rng.integers(0, 2))) for _ in range(tweets)]
    config = DemoConfig(out=out, hidden=hidden, embedding=embedding, vocab=len(vocab))
    write_models(config, vocab, cache / "epoch003.pt", cache / "classifier.pt", paths, test)
    return out
