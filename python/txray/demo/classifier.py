"""Supervision (RQ3): the pretrained encoder fine-tuned to tell positive from negative tweets.

As in the paper and the original code: each tweet ends in the end-of-text
token the LM saw between articles, and the encoder's hidden state there
feeds one sigmoid unit; the embeddings stay frozen (dropout 0.65 on them
while training); there is no language model loss. Adam at lr 0.01, early
stopping on the validation F1, the best epoch kept. The metric is the F1
of the positive class.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .config import DemoConfig
from .data import EOS, UNK, Tweet
from .files import atomic_path, write_json
from .lm import Encoder, log
from .stats import f1_score

MAX_WORDS = 64  # longer tweets are cut (they are rare)
EVAL_BATCH = 512


class SentimentClassifier(nn.Module):
    """The encoder, its last hidden state into one sigmoid unit (logits out; sigmoid in the loss)."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.rnn.hidden_size, 1)

    def last_state(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The encoder's hidden state at each row's last token (batch, hidden)."""
        hidden, _ = self.encoder(ids)
        return hidden[torch.arange(len(ids), device=ids.device), lengths.to(ids.device) - 1]

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``ids`` (batch, seq), right-padded, and each row's length -> one logit per row."""
        return self.head(self.last_state(ids, lengths)).squeeze(-1)


class Batches:
    """Tweets as padded id tensors (each ending in ``<eos>``), ready for training and evaluation."""

    def __init__(self, tweets: Sequence[Tweet], vocab: Sequence[str]) -> None:
        if not tweets:
            raise ValueError("no tweets to classify")
        index = {w: i for i, w in enumerate(vocab)}
        unk, eos = index[UNK], index[EOS]
        self.ids = [torch.tensor([*(index.get(w, unk) for w in t.words[:MAX_WORDS]), eos]) for t in tweets]
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


@dataclasses.dataclass
class Supervision:
    """The fine-tuning of one replicate: validation F1 and seconds per epoch, and the epoch kept."""

    val_f1: list[float]
    seconds: list[float]
    best_epoch: int


def classifier_path(config: DemoConfig, lm_snapshot: Path, seed: int) -> Path:
    """Where the classifier fine-tuned from ``lm_snapshot`` with ``seed`` is cached."""
    key = config.key(
        "sup_epochs",
        "sup_patience",
        "sup_lr",
        "sup_dropout",
        "tweets",
        "test_share",
        "val_share",
        "batch_size",
        seed=seed,
        data_seed=config.seed,
    )
    return lm_snapshot.parent / f"classifier-{lm_snapshot.stem}-{key}.pt"


def fine_tune(
    config: DemoConfig, encoder: Encoder, train: Batches, val: Batches, seed: int, lm_snapshot: Path
) -> tuple[SentimentClassifier, Supervision]:
    """Fine-tune (or load from the cache) a classifier on top of the pretrained ``encoder`` (changed in place).

    Up to ``config.sup_epochs`` epochs; stops after ``config.sup_patience`` epochs without a
    better validation F1 and keeps the best epoch's weights, as the original code did.
    """
    torch.manual_seed(seed)
    device = config.resolved_device()
    model = SentimentClassifier(encoder).to(device)
    path = classifier_path(config, lm_snapshot, seed)
    history_path = path.with_suffix(".json")
    if path.is_file() and history_path.is_file():
        model.load_state_dict(torch.load(path, map_location=device, weights_only=True))
        return model.eval(), Supervision(**json.loads(history_path.read_text(encoding="utf-8")))
    model.encoder.embedding.weight.requires_grad_(False)
    trained_dropout = model.encoder.dropout.p
    model.encoder.dropout.p = config.sup_dropout
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.sup_lr)
    generator = torch.Generator().manual_seed(seed)
    history = Supervision([], [], 0)
    best_state: dict[str, torch.Tensor] = {}
    for epoch in range(1, config.sup_epochs + 1):
        started = time.perf_counter()
        order = torch.randperm(len(train), generator=generator)
        _train_epoch(model, train, optimizer, order, config, f"classifier {seed} epoch {epoch}/{config.sup_epochs}")
        history.val_f1.append(f1(model, val))
        history.seconds.append(time.perf_counter() - started)
        log(
            config,
            f"classifier seed {seed} epoch {epoch}: validation F1 {history.val_f1[-1]:.3f} "
            f"({history.seconds[-1]:.1f} s)",
        )
        if history.val_f1[-1] > max(history.val_f1[:-1], default=-1.0):
            history.best_epoch = epoch
            best_state = copy.deepcopy(model.state_dict())
        elif epoch - history.best_epoch >= config.sup_patience:
            break
    model.load_state_dict(best_state)
    model.encoder.dropout.p = trained_dropout
    with atomic_path(path) as tmp:
        torch.save(model.state_dict(), tmp)
    write_json(dataclasses.asdict(history), history_path)
    return model.eval(), history


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
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # the original code's clip
        optimizer.step()
    model.eval()


@torch.inference_mode()
def last_states(model: SentimentClassifier, data: Batches) -> np.ndarray:
    """The encoder's state at every tweet's last token (tweets, hidden), in eval mode: what the head reads."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    states = [model.last_state(ids.to(device), lengths).float().cpu() for ids, lengths, _ in data.batches(EVAL_BATCH)]
    model.train(was_training)
    return torch.cat(states).numpy()


@torch.inference_mode()
def predict(model: SentimentClassifier, data: Batches) -> np.ndarray:
    """Whether each tweet is predicted positive (bool array)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    predicted = torch.cat([(model(ids.to(device), lengths) > 0).cpu() for ids, lengths, _ in data.batches(EVAL_BATCH)])
    model.train(was_training)
    return predicted.numpy()


def f1(model: SentimentClassifier, data: Batches) -> float:
    """F1 of the positive class (0 when nothing is predicted positive and nothing is positive)."""
    return float(f1_score(predict(model, data), data.labels.numpy().astype(bool)))
