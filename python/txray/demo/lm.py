"""The paper's encoder: a one-layer LSTM language model, trained with snapshots.

The encoder (embedding + LSTM) is what txray records (layer ``encoder.rnn``)
and what the classifier fine-tunes; the language model adds a decoder onto
the vocabulary. Training is truncated backpropagation through time over the
Wikipedia words (articles joined by ``<eos>``), until the validation
perplexity on held-out articles reaches its plateau. State dicts of the
snapshot epochs are cached with the per-epoch perplexities and times.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from .config import DemoConfig
from .data import EOS, UNK, DemoData
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


@dataclasses.dataclass
class LMRun:
    """A trained language model: its snapshot files and its training history."""

    seed: int
    snapshots: dict[int, Path]  # epoch -> state dict file: the first epoch and the last two
    train_perplexity: list[float]  # per epoch
    val_perplexity: list[float]  # per epoch, on the held-out Wikipedia words
    seconds: list[float]  # per epoch (training and validation)
    stopped: str  # "plateau" or "budget" (the preset's most epochs reached first)

    @property
    def epochs(self) -> int:
        return len(self.train_perplexity)


def snapshot_dir(config: DemoConfig, seed: int) -> Path:
    """Where the LM snapshots of these settings and this seed are cached."""
    key = config.key(
        "hidden",
        "embedding",
        "vocab",
        "epochs",
        "plateau",
        "train_tokens",
        "val_tokens",
        "bptt",
        "batch_size",
        "lr",
        "dropout",
        seed=seed,
        data_seed=config.seed,
    )
    return config.cache_dir / f"lm-{key}"


def train_lm(config: DemoConfig, data: DemoData, vocab: list[str], seed: int) -> LMRun:
    """Train the LM (or find it cached) until validation perplexity reaches its plateau.

    Stops after the first epoch (from the third on) whose validation perplexity is not at
    least ``config.plateau`` (a share) below the best before it, or after ``config.epochs``.
    Keeps the first epoch and the last two, as the paper kept 1, 48 and 49.
    """
    folder = snapshot_dir(config, seed)
    done = folder / "training.json"
    if done.is_file():
        run = LMRun(seed=seed, **json.loads(done.read_text(encoding="utf-8"))["run"])
        run.snapshots = {int(e): folder / p for e, p in run.snapshots.items()}
        if all(p.is_file() for p in run.snapshots.values()):
            return run
    torch.manual_seed(seed)
    device = config.resolved_device()
    model = build_lm(config, len(vocab)).to(device)
    train = batchify(token_stream(data.wiki, vocab), config.batch_size).to(device)
    val = batchify(token_stream(data.wiki_val, vocab), config.batch_size).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    run = LMRun(seed, {}, [], [], [], "budget")
    previous: dict[str, torch.Tensor] | None = None
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        run.train_perplexity.append(_epoch(model, train, optimizer, config, f"LM {seed} epoch {epoch}/{config.epochs}"))
        run.val_perplexity.append(perplexity(model, val, config.bptt))
        run.seconds.append(time.perf_counter() - started)
        log(
            config,
            f"LM seed {seed} epoch {epoch}: train perplexity {run.train_perplexity[-1]:.1f}, "
            f"validation {run.val_perplexity[-1]:.1f} ({run.seconds[-1]:.1f} s)",
        )
        if epoch == 1:
            _save(model.state_dict(), folder / "epoch001.pt")
        best_before = min(run.val_perplexity[:-1], default=math.inf)
        plateau = run.val_perplexity[-1] > best_before * (1 - config.plateau)
        if epoch < config.epochs and not (plateau and epoch >= 3):
            previous = {k: v.detach().clone() for k, v in model.state_dict().items()}
            continue
        run.stopped = "plateau" if plateau and epoch >= 3 else "budget"
        assert previous is not None
        _save(previous, folder / f"epoch{epoch - 1:03d}.pt")
        _save(model.state_dict(), folder / f"epoch{epoch:03d}.pt")
        run.snapshots = {e: folder / f"epoch{e:03d}.pt" for e in (1, epoch - 1, epoch)}
        break
    record = dataclasses.asdict(run) | {"snapshots": {e: p.name for e, p in run.snapshots.items()}}
    del record["seed"]
    write_json({"run": record, "vocab_size": len(vocab), "tokens": int(train.numel())}, done)
    return run


def _save(state: dict[str, torch.Tensor], path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def log(config: DemoConfig, line: str) -> None:
    """A progress line (per-epoch times), unless the run is quiet."""
    if config.progress:
        tqdm.write(line)


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


@torch.inference_mode()
def perplexity(model: LanguageModel, data: torch.Tensor, bptt: int) -> float:
    """The model's perplexity on ``data`` (batch, steps), in eval mode, state carried across windows."""
    model.eval()
    state = None
    total, count = 0.0, 0
    for start in range(0, data.size(1) - 1, bptt):
        stop = min(start + bptt, data.size(1) - 1)
        logits, state = model(data[:, start:stop], state)
        targets = data[:, start + 1 : stop + 1]
        total += nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="sum"
        ).item()
        count += targets.numel()
    return math.exp(total / count)


def load_lm(config: DemoConfig, vocab_size: int, path: Path) -> LanguageModel:
    """A snapshot, on the configured device, in eval mode."""
    model = build_lm(config, vocab_size)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.to(config.resolved_device()).eval()
