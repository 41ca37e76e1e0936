"""A word-level model whose forward pass costs almost nothing, for the pipeline's tests."""

from __future__ import annotations

import torch


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
