"""Every size of the demo in one place: the presets (default, medium, paper) and their checks."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

PAPER: dict[str, Any] = {
    "hidden": 1500,
    "epochs": 60,
    "tokens": 400_000,
    "train_tokens": None,
    "val_tokens": 200_000,
    "vocab": 33_000,
    "embedding": 400,
    "tweets": None,
    "sup_epochs": 20,
    "sup_patience": 5,
    "seeds": 3,
    "lm_seeds": 3,
}
"""The paper's sizes (``--paper``): 1,500 hidden units, the LM trained to its plateau within
60 epochs (the paper's converged at 50), profiles on 400,000 tokens; the LM trains on the
whole Wikipedia corpus and the classifier on every positive and negative tweet, with the
original code's patience of 5 epochs. Three LM seeds, three replicates. Meant for a GPU."""

MEDIUM: dict[str, Any] = {
    "hidden": 256,
    "epochs": 12,
    "train_tokens": 300_000,
    "sup_epochs": 6,
    "sup_patience": 3,
    "seeds": 4,
    "lm_seeds": 2,
    "controls": 20,
}
"""``--preset medium``: more text and epochs for the LM, a longer patience for the classifier,
four replicates over two LMs, 20 random sets per pruning row; about 20 minutes on 2 CPU cores."""

PRESETS: dict[str, dict[str, Any]] = {"default": {}, "medium": MEDIUM, "paper": PAPER}
"""Settings by preset name; ``default`` is :class:`DemoConfig`'s defaults."""


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """The demo's settings. Defaults finish in about 5 minutes on 2 idle CPU cores."""

    out: Path = Path("demo-output")
    cache: Path | None = None  # default: $TXRAY_CACHE/demo, else OUT/cache
    preset: str = "default"  # the name recorded in the outputs; the sizes below are what runs
    hidden: int = 256  # LSTM units (the neurons studied)
    embedding: int = 128  # word embedding size
    vocab: int = 5_000  # LM vocabulary (most frequent training words, <unk> for the rest)
    epochs: int = 8  # most LM epochs; training stops earlier at the plateau of validation perplexity
    plateau: float = 0.01  # the plateau: validation perplexity improved by less than this share in an epoch
    train_tokens: int | None = 200_000  # Wikipedia words the LM trains on (None: all)
    val_tokens: int = 20_000  # Wikipedia words held out for the LM's validation perplexity
    tokens: int = 40_000  # words recorded per profile (the paper's 400,000 tokens)
    bptt: int = 35  # LM training window
    batch_size: int = 32
    lr: float = 3e-3  # LM learning rate (Adam)
    dropout: float = 0.2  # LM dropout on embeddings and hidden states (the original LM script's 0.2)
    tweets: int | None = 12_000  # positive + negative tweets used, balanced (None: all)
    test_share: float = 0.2  # of the tweets, held out for the test F1
    val_share: float = 0.2  # of the remaining tweets, held out for early stopping (as the original code)
    sup_epochs: int = 4  # most classifier epochs; early stopping on validation F1, the best epoch kept
    sup_patience: int = 2  # epochs without a better validation F1 before stopping (the original: 5)
    sup_lr: float = 1e-2  # classifier learning rate (Adam), as the original code
    sup_dropout: float = 0.65  # dropout on the embeddings while fine-tuning, as the original code
    prune_k: int = 20  # Table 2's "k least / most massive"
    seeds: int = 3  # replicates: fine-tuning, recorded text sample, controls (seeds seed .. seed + seeds - 1)
    lm_seeds: int = 1  # language models trained; replicate r uses LM r mod lm_seeds
    controls: int = 10  # random neuron sets of the same size per pruning row and replicate
    bootstrap: int = 1000  # resamples of the test set for each pruning row's interval
    seed: int = 0
    device: str = "auto"  # "auto": cuda when available
    progress: bool = True

    def __post_init__(self) -> None:
        positive = ("hidden", "embedding", "vocab", "tokens", "bptt", "batch_size", "sup_epochs", "sup_patience")
        for name in (*positive, "prune_k", "seeds", "lm_seeds", "controls", "bootstrap", "val_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        for name in ("train_tokens", "tweets"):
            value = getattr(self, name)
            if value is not None and value < 10:
                raise ValueError(f"{name} must be at least 10 (or None for all), not {value}")
        for name in ("test_share", "val_share"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} must be between 0 and 1, not {getattr(self, name)}")
        if not 0 <= self.plateau < 1:
            raise ValueError(f"plateau must be at least 0 and below 1, not {self.plateau}")
        for name in ("dropout", "sup_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 0 and below 1, not {getattr(self, name)}")
        if self.epochs < 3:
            raise ValueError(
                f"epochs must be at least 3 (the study compares epoch 1 with the last two), not {self.epochs}"
            )
        if self.lm_seeds > self.seeds:
            raise ValueError(
                f"lm_seeds ({self.lm_seeds}) cannot exceed seeds ({self.seeds}): each LM needs a replicate"
            )
        if self.vocab < 4:
            raise ValueError(f"vocab must be at least 4 (padding, <unk>, <eos> and one word), not {self.vocab}")

    @property
    def cache_dir(self) -> Path:
        """Where data, models and POS tags are cached between runs."""
        if self.cache is not None:
            return Path(self.cache)
        env = os.environ.get("TXRAY_CACHE")
        return Path(env) / "demo" if env else Path(self.out) / "cache"

    def key(self, *fields: str, **extra: Any) -> str:
        """A short hash of the named settings (and ``extra`` values): the cache name of what they determine."""
        values = {name: getattr(self, name) for name in fields} | extra
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:12]

    def replicate_seeds(self) -> list[int]:
        """The seed of each replicate."""
        return [self.seed + r for r in range(self.seeds)]

    def lm_seed(self, replicate: int) -> int:
        """The seed of the language model that replicate ``replicate`` (0-based) uses."""
        return self.seed + replicate % self.lm_seeds

    def resolved_device(self) -> str:
        """The torch device to train and record on."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
