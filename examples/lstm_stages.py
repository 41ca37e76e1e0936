"""Train a small word-level LSTM language model and record its neurons after each epoch.

The paper's setting at a small size: an LSTM language model on Wikipedia, its
hidden state recorded on the same words after every epoch, with one fixed
token vocabulary so that the stages compare neuron by neuron (see
examples/compare_stages.py). Adapt: your model (any nn.Module with a layer
that gives (batch, seq, neurons)), your vocabulary, the forward function.

    python examples/lstm_stages.py --train-words 100000 --epochs 3 --out profiles/lstm

Needs: pip install -e ".[torch,corpora]".
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

import torch
from torch import nn

import txray
from txray import datasets


class LanguageModel(nn.Module):
    def __init__(self, vocab_size: int, embedding: int, hidden: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding, padding_idx=0)
        self.rnn = nn.LSTM(embedding, hidden, batch_first=True)  # the recorded layer: "rnn"
        self.decoder = nn.Linear(hidden, vocab_size)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.rnn(self.embedding(ids))
        return self.decoder(hidden)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-words", type=int, default=100_000, help="Wikipedia words to train on")
    parser.add_argument("--record-words", type=int, default=10_000, help="words recorded per stage")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=5_000)
    parser.add_argument("--out", default="profiles/lstm")
    args = parser.parse_args(argv)
    torch.manual_seed(0)

    # Words of Wikipedia lead sections, up to --train-words.
    sentences, total = [], 0
    for article in datasets.wiki_articles():
        words = txray.split_words(article["text"])
        sentences.append(words)
        total += len(words)
        if total >= args.train_words:
            break
    counts = collections.Counter(w for s in sentences for w in s)
    vocab = ["<pad>", "<unk>", *(w for w, _ in counts.most_common(args.vocab - 2))]
    index = {w: i for i, w in enumerate(vocab)}
    stream = torch.tensor([index.get(w, 1) for s in sentences for w in s])

    model = LanguageModel(len(vocab), 64, args.hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.003)
    tokenizer = txray.VocabTokenizer(vocab, unk="<unk>", pad_id=0, max_length=128)
    token = txray.Token(vocabulary=txray.Vocabulary(vocab))  # one vocabulary for every stage
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    bptt, batch = 35, 16
    steps = (len(stream) - 1) // (bptt * batch)
    for epoch in range(1, args.epochs + 1):
        model.train()
        for step in range(steps):
            start = step * bptt * batch
            chunk = stream[start : start + bptt * batch + 1]
            inputs, targets = chunk[:-1].view(batch, bptt), chunk[1:].view(batch, bptt)
            loss = nn.functional.cross_entropy(model(inputs).reshape(-1, len(vocab)), targets.reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        profile = txray.record_model(
            model,
            tokenizer,
            txray.Corpus(sentences, name="wikipedia"),
            layers=["rnn"],  # an LSTM gives its hidden state at every step
            features=[token],
            limit_tokens=args.record_words,
            forward=lambda m, b: m(b.input_ids),
            progress=False,
        )["rnn"]
        profile.name = f"epoch {epoch}"
        profile.save(out / f"epoch{epoch}.parquet")
        preferred = int(profile.preferred("token").sum())
        print(f"epoch {epoch}: loss {loss.item():.2f}, {preferred} of {args.hidden} neurons preferred")


if __name__ == "__main__":
    main()
