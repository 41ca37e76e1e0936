"""The paper's encoder: a one-layer LSTM language model, trained with snapshots.

The encoder (embedding + LSTM) is what txray records (layer ``encoder.rnn``)
and what the classifier fine-tunes; the language model adds a decoder onto
the vocabulary. Training is truncated backpropagation through time over the
Wikipedia words (articles joined by ``<eos>``). State dicts of the snapshot
epochs are cached with the per-epoch training perplexity.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from .config import DemoConfig
from .data import EOS, UNK
from .files import atomic_path, write_json

LAYER = "encoder.rnn"
"""The recorded layer: the LSTM's hidden state at every step."""


class Encoder(nn.Module):
    """Word embeddings into a one-layer LSTM; returns the hidden state at every step."""

    def __init__(self, vocab_size: int, embedding: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding, padding_idx=0)
        self.rnn = nn.LSTM(embedding, hidden, batch_first=True)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, ids: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """``ids`` (batch, seq) -> hidden states (batch, seq, hidden) and the final LSTM state."""
        return self.rnn(self.dropout(self.embedding(ids)), state)


class LanguageModel(nn.Module):
    """The encoder and a linear decoder predicting the next word."""

    def __init__(self, vocab_size: int, embedding: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.encoder = Encoder(vocab_size, embedding, hidden, dropout)
        self.dropout = nn.Dropout(dropout)
        self.decoder = nn.Linear(hidden, vocab_size)

    def forward(
        self, ids: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Next-word logits (batch, seq, vocab) and the final LSTM state."""
        hidden, state = self.encoder(ids, state)
        return self.decoder(self.dropout(hidden)), state


def build_lm(config: DemoConfig, vocab_size: int) -> LanguageModel:
    """A language model of the configured sizes (untrained)."""
    return LanguageModel(vocab_size, config.embedding, config.hidden, config.dropout)


def token_stream(wiki: list[list[str]], vocab: list[str]) -> torch.Tensor:
    """Every training word as an id, articles joined by ``<eos>``."""
    index = {w: i for i, w in enumerate(vocab)}
    unk, eos = index[UNK], index[EOS]
    ids = [index.get(w, unk) for words in wiki for w in (*words, EOS)]
    ids[-1] = eos
    return torch.tensor(ids, dtype=torch.long)


def batchify(stream: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Cut the stream into ``batch_size`` parallel rows (batch, steps), dropping the remainder."""
    steps = len(stream) // batch_size
    if steps < 2:
        raise ValueError(f"{len(stream)} training tokens are too few for batches of {batch_size} rows")
    return stream[: steps * batch_size].view(batch_size, steps)


def snapshot_dir(config: DemoConfig) -> Path:
    """Where this configuration's LM snapshots are cached."""
    key = config.key(
        "hidden", "embedding", "vocab", "epochs", "train_tokens", "bptt", "batch_size", "lr", "dropout", "seed"
    )
    return config.cache_dir / f"lm-{key}"


def train_lm(config: DemoConfig, wiki: list[list[str]], vocab: list[str]) -> tuple[dict[int, Path], list[float]]:
    """Train the LM (or find it cached): the snapshot file of each snapshot epoch, and the
    training perplexity of every epoch."""
    folder = snapshot_dir(config)
    done = folder / "training.json"
    paths = {epoch: folder / f"epoch{epoch:03d}.pt" for epoch in config.snapshots()}
    if done.is_file() and all(p.is_file() for p in paths.values()):
        return paths, json.loads(done.read_text(encoding="utf-8"))["perplexity"]
    torch.manual_seed(config.seed)
    device = config.resolved_device()
    model = build_lm(config, len(vocab)).to(device)
    data = batchify(token_stream(wiki, vocab), config.batch_size).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    perplexity = []
    for epoch in range(1, config.epochs + 1):
        perplexity.append(_epoch(model, data, optimizer, config, f"LM epoch {epoch}/{config.epochs}"))
        if epoch in paths:
            with atomic_path(paths[epoch]) as tmp:
                torch.save(model.state_dict(), tmp)
    write_json({"perplexity": perplexity, "vocab_size": len(vocab), "tokens": int(data.numel())}, done)
    return paths, perplexity


def _epoch(
    model: LanguageModel, data: torch.Tensor, optimizer: torch.optim.Optimizer, config: DemoConfig, desc: str
) -> float:
    """One pass over the data in windows of ``bptt`` steps; returns the training perplexity."""
    model.train()
    state = None
    total, count = 0.0, 0
    starts = range(0, data.size(1) - 1, config.bptt)
    for start in tqdm(starts, desc=desc, unit="batch", leave=False, disable=not config.progress):
        stop = min(start + config.bptt, data.size(1) - 1)
        inputs, targets = data[:, start:stop], data[:, start + 1 : stop + 1]
        if state is not None:
            state = tuple(s.detach() for s in state)
        logits, state = model(inputs, state)
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        total += loss.item() * targets.numel()
        count += targets.numel()
    return math.exp(total / count)


def load_lm(config: DemoConfig, vocab_size: int, path: Path) -> LanguageModel:
    """A snapshot, on the configured device, in eval mode."""
    model = build_lm(config, vocab_size)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.to(config.resolved_device()).eval()
