"""Supervision (RQ3): the pretrained encoder fine-tuned to tell positive from negative tweets.

As in the paper: the encoder's hidden state at the last word of a tweet
feeds one sigmoid unit; the embeddings stay frozen; there is no language
model loss. The metric is the F1 of the positive class.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from .config import DemoConfig
from .data import UNK, Tweet
from .files import atomic_path
from .lm import Encoder, snapshot_dir

MAX_WORDS = 64  # longer tweets are cut (they are rare)
EVAL_BATCH = 512


class SentimentClassifier(nn.Module):
    """The encoder, its last hidden state into one sigmoid unit (logits out; sigmoid in the loss)."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.rnn.hidden_size, 1)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``ids`` (batch, seq), right-padded, and each row's length -> one logit per row."""
        hidden, _ = self.encoder(ids)
        last = hidden[torch.arange(len(ids), device=ids.device), lengths.to(ids.device) - 1]
        return self.head(last).squeeze(-1)


class Batches:
    """Tweets as padded id tensors, ready for training and evaluation."""

    def __init__(self, tweets: Sequence[Tweet], vocab: Sequence[str]) -> None:
        if not tweets:
            raise ValueError("no tweets to classify")
        index = {w: i for i, w in enumerate(vocab)}
        unk = index[UNK]
        self.ids = [torch.tensor([index.get(w, unk) for w in t.words[:MAX_WORDS]]) for t in tweets]
        self.labels = torch.tensor([t.label for t in tweets], dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.ids)

    def batches(self, size: int, order: torch.Tensor | None = None) -> Iterator[tuple[torch.Tensor, ...]]:
        """(ids, lengths, labels) per batch of ``size`` tweets, in ``order`` (default: as given)."""
        order = torch.arange(len(self)) if order is None else order
        for start in range(0, len(self), size):
            rows = order[start : start + size].tolist()
            seqs = [self.ids[r] for r in rows]
            ids = nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=0)
            lengths = torch.tensor([len(s) for s in seqs])
            yield ids, lengths, self.labels[rows]


def classifier_path(config: DemoConfig) -> Path:
    """Where the fine-tuned classifier of these settings is cached."""
    key = config.key("sup_epochs", "sup_lr", "tweets", "test_share", "seed", "batch_size")
    return snapshot_dir(config) / f"classifier-{key}.pt"


def fine_tune(config: DemoConfig, encoder: Encoder, train: Batches) -> SentimentClassifier:
    """Fine-tune (or load from the cache) the classifier on top of the pretrained ``encoder``."""
    torch.manual_seed(config.seed)
    device = config.resolved_device()
    model = SentimentClassifier(encoder).to(device)
    path = classifier_path(config)
    if path.is_file():
        model.load_state_dict(torch.load(path, map_location=device, weights_only=True))
        return model.eval()
    model.encoder.embedding.weight.requires_grad_(False)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.sup_lr)
    generator = torch.Generator().manual_seed(config.seed)
    for epoch in range(1, config.sup_epochs + 1):
        _train_epoch(
            model,
            train,
            optimizer,
            torch.randperm(len(train), generator=generator),
            config,
            f"classifier epoch {epoch}/{config.sup_epochs}",
        )
    with atomic_path(path) as tmp:
        torch.save(model.state_dict(), tmp)
    return model.eval()


def _train_epoch(
    model: SentimentClassifier,
    data: Batches,
    optimizer: torch.optim.Optimizer,
    order: torch.Tensor,
    config: DemoConfig,
    desc: str,
) -> None:
    model.train()
    device = next(model.parameters()).device
    loss_fn = nn.BCEWithLogitsLoss()
    steps = (len(data) + config.batch_size - 1) // config.batch_size
    for ids, lengths, labels in tqdm(
        data.batches(config.batch_size, order),
        total=steps,
        desc=desc,
        unit="batch",
        leave=False,
        disable=not config.progress,
    ):
        loss = loss_fn(model(ids.to(device), lengths), labels.to(device))
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    model.eval()


@torch.inference_mode()
def f1(model: SentimentClassifier, data: Batches) -> float:
    """F1 of the positive class (0 when nothing is predicted positive and nothing is positive)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    predicted = torch.cat([(model(ids.to(device), lengths) > 0).cpu() for ids, lengths, _ in data.batches(EVAL_BATCH)])
    model.train(was_training)
    truth = data.labels.bool()
    tp = int((predicted & truth).sum())
    denominator = int(predicted.sum()) + int(truth.sum())
    return 0.0 if denominator == 0 else 2 * tp / denominator
