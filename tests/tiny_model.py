"""A word-level model whose forward pass costs almost nothing, and tokenizers and corpora
that fail on purpose, for the pipeline's tests."""

from __future__ import annotations

import threading

import torch

import txray


class Tiny(torch.nn.Module):
    """An embedding of width 8 and a linear layer ``out`` of 16 neurons, seeded."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(vocab, 8)
        self.out = torch.nn.Linear(8, 16)

    def forward(self, input_ids):
        return self.out(self.embed(input_ids))


def interrupted_at(call: int):
    """A ``forward`` for record_model that raises KeyboardInterrupt (Ctrl-C while the model runs)
    at its ``call``-th batch, and the list of the batches it was given."""
    calls = []

    def forward(model, batch):
        calls.append(batch)
        if len(calls) == call:
            raise KeyboardInterrupt
        return model(batch.input_ids)

    return forward, calls


VOCAB = ["<pad>", "<unk>", "and", "then", "."] + [f"word{i}" for i in range(7)]
"""The words of :func:`records`."""


class FailingTokenizer(txray.VocabTokenizer):
    """A word-level tokenizer that counts its calls and their threads, and fails on call
    ``fail_at_call`` (counted in each process)."""

    def __init__(self, *args, fail_at_call=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls, self.fail_at_call, self.threads = 0, fail_at_call, set()

    def piece_arrays(self, sentences):
        self.calls += 1
        self.threads.add(threading.current_thread().name)
        if self.calls == self.fail_at_call:
            raise ValueError(f"tokenizer failed on call {self.calls}")
        return super().piece_arrays(sentences)


def records(n: int, broken_at: int | None = None) -> list[dict]:
    """``n`` records of six of :data:`VOCAB`'s words and a ``topic`` column (missing in record
    ``broken_at``)."""
    out = [{"text": f"word{i % 7} and word{i % 5} then word{i % 3} .", "topic": f"t{i % 4}"} for i in range(n)]
    if broken_at is not None:
        del out[broken_at]["topic"]
    return out


def broken_stream(n: int, at: int):
    """:func:`records` as a stream that raises OSError at record ``at``."""
    for i, record in enumerate(records(n)):
        if i == at:
            raise OSError(f"the stream broke at record {at}")
        yield record
