"""Every size of the demo in one place: CPU defaults and the paper's preset."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

PAPER: dict[str, Any] = {
    "hidden": 1500,
    "epochs": 50,
    "tokens": 400_000,
    "train_tokens": None,
    "vocab": 33_000,
    "embedding": 400,
    "tweets": None,
}
"""The paper's settings (``--paper``): 1,500 hidden units, 50 epochs, profiles on the
first 400,000 tokens; the LM trains on the whole Wikipedia corpus and the classifier on
every positive and negative tweet. Meant for a GPU."""


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """The demo's settings. Defaults finish in a few minutes on 2 CPU cores."""

    out: Path = Path("demo-output")
    cache: Path | None = None  # default: $TXRAY_CACHE/demo, else OUT/cache
    hidden: int = 256  # LSTM units (the neurons studied)
    embedding: int = 128  # word embedding size
    vocab: int = 5_000  # LM vocabulary (most frequent training words, <unk> for the rest)
    epochs: int = 8  # LM epochs; snapshots at the first and the last two
    train_tokens: int | None = 200_000  # Wikipedia words the LM trains on (None: all)
    tokens: int = 40_000  # words recorded per profile (the paper's "first 400,000 tokens")
    bptt: int = 35  # LM training window
    batch_size: int = 32
    lr: float = 3e-3  # LM learning rate (Adam)
    dropout: float = 0.2
    tweets: int | None = 12_000  # positive + negative tweets used, balanced (None: all)
    test_share: float = 0.2  # of the tweets, held out for the test F1
    sup_epochs: int = 2  # classifier fine-tuning epochs
    sup_lr: float = 2e-3
    prune_k: int = 20  # Table 2's "k least / most massive"
    seed: int = 0
    device: str = "auto"  # "auto": cuda when available
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("hidden", "embedding", "vocab", "tokens", "bptt", "batch_size", "sup_epochs", "prune_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        for name in ("train_tokens", "tweets"):
            value = getattr(self, name)
            if value is not None and value < 10:
                raise ValueError(f"{name} must be at least 10 (or None for all), not {value}")
        if not 0 < self.test_share < 1:
            raise ValueError(f"test_share must be between 0 and 1, not {self.test_share}")
        if self.epochs < 3:
            raise ValueError(
                f"epochs must be at least 3 (the study compares epoch 1 with the last two), not {self.epochs}"
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

    def key(self, *fields: str) -> str:
        """A short hash of the named settings: the cache name of what they determine."""
        values = {name: getattr(self, name) for name in fields}
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:12]

    def snapshots(self) -> list[int]:
        """The LM epochs kept: the first and the last two, as in the paper (1, 48, 49)."""
        return [1, self.epochs - 1, self.epochs]

    def resolved_device(self) -> str:
        """The torch device to train and record on."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
