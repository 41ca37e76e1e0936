"""record_model's dispatch to device recorders, tested without a GPU.

A CUDA model's layers are recorded by device recorders inside the layer hooks
(activations never copied to the host, feature ids moved to the device once
per batch) when no contexts are kept; a CPU model, ``record_on="cpu"`` or
contexts keep the CPU path. Here a
stand-in plays the CUDA side: ``pipeline._cuda_device`` names ``cuda:0`` for
CPU tensors too, and a fake device backend
records what reaches it and records it with the CPU engine, so that the
profiles can be compared with the CPU path's. tests/test_cuda.py holds the
same check on a real GPU (test_gpu_record_model_matches_the_cpu).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import txray
from txray import pipeline, recorder
from txray._host import HostBackend


class FakeDeviceBackend:
    """Stands in for txray._device.DeviceBackend; records with the CPU engine."""

    made: list[FakeDeviceBackend] = []

    def __init__(self, device, n_neurons, kinds, mode, k, dense_limit_bytes, native=None):
        self.device = device
        self.host = HostBackend(n_neurons, kinds, mode, k, dense_limit_bytes)
        self.native = self.host.native
        self.calls: list[tuple] = []
        FakeDeviceBackend.made.append(self)

    def update(self, acts, features, mask, stream, units=None):
        assert units is None  # a device recorder keeps no contexts
        self.calls.append((acts, features, mask, stream))
        self.host.update(acts, features, mask, None)

    def synchronize(self):
        self.host.synchronize()

    def merge(self, other):
        self.host.merge(other.host)

    def snapshot(self):
        return self.host.snapshot()

    @property
    def tokens(self):
        return self.host.tokens

    @property
    def nbytes(self):
        return self.host.nbytes


class Tagger(nn.Module):
    def __init__(self, vocab: int = 40) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, 8, padding_idx=0)
        self.mlp = nn.Sequential(nn.Linear(8, 16), nn.GELU())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.embed(ids))


@pytest.fixture()
def toy():
    torch.manual_seed(0)
    words = ["<pad>", "<unk>"] + [f"w{i}" for i in range(38)]
    rng = np.random.default_rng(0)
    corpus = [" ".join(rng.choice(words[2:], size=rng.integers(1, 15))) for _ in range(40)]
    return Tagger().eval(), txray.VocabTokenizer(words, pad_id=0), corpus


@pytest.fixture()
def fake_cuda(monkeypatch):
    FakeDeviceBackend.made = []
    monkeypatch.setattr(pipeline, "_cuda_device", lambda rows: "cuda:0")
    monkeypatch.setattr(recorder, "parse_device", lambda device: None if device in (None, "cpu") else 0)
    monkeypatch.setattr(recorder, "DeviceBackend", FakeDeviceBackend)
    return FakeDeviceBackend


def _same(a: txray.Profile, b: txray.Profile) -> None:
    assert a.tokens == b.tokens
    np.testing.assert_array_equal(a.mass(), b.mass())
    for kind in a.kinds:
        x, y = a.cells(kind), b.cells(kind)
        for column in ("neuron", "feature", "count", "sum"):
            np.testing.assert_array_equal(getattr(x, column), getattr(y, column))


@pytest.mark.parametrize("mode", ["max1", "all"])
def test_a_cuda_model_records_with_device_recorders_inside_the_hooks(toy, fake_cuda, mode):
    model, tok, corpus = toy
    layers = ["embed", "mlp"]
    on_device = txray.record_model(model, tok, corpus, layers, mode=mode, max_tokens=64, progress=False, contexts=0)
    assert len(fake_cuda.made) == 2  # one device recorder per layer
    batches = len(fake_cuda.made[0].calls)
    assert batches > 1 and all(len(b.calls) == batches for b in fake_cuda.made)
    for backend in fake_cuda.made:
        for acts, features, mask, stream in backend.calls:
            assert isinstance(acts, torch.Tensor)  # the pooled rows themselves, never a NumPy copy
            assert all(isinstance(ids, torch.Tensor) and ids.dtype == torch.int64 for ids in features.values())
            assert mask is None and stream is None  # torch's current stream
    # the ids went to the device once per batch: every layer of a batch got the same tensors
    for i in range(batches):
        first, second = (b.calls[i][1] for b in fake_cuda.made)
        assert first is second
    fake_cuda.made = []
    on_cpu = txray.record_model(model, tok, corpus, layers, mode=mode, max_tokens=64, progress=False, record_on="cpu")
    assert fake_cuda.made == []  # record_on="cpu": the host path
    for layer in layers:
        _same(on_device[layer], on_cpu[layer])
        assert on_device[layer].metadata == on_cpu[layer].metadata


def test_contexts_keep_a_cuda_model_on_the_cpu_path(toy, fake_cuda):
    # the CPU engine keeps the contexts; a device recorder does not
    model, tok, corpus = toy
    profiles = txray.record_model(model, tok, corpus, ["mlp"], max_tokens=64, progress=False, contexts=5)
    assert fake_cuda.made == [] and profiles["mlp"].contexts is not None and profiles["mlp"].contexts_k == 5


def test_a_cpu_model_keeps_the_cpu_path(toy, monkeypatch):
    model, tok, corpus = toy
    made = []
    monkeypatch.setattr(recorder, "DeviceBackend", lambda *a, **k: made.append(a))
    profiles = txray.record_model(model, tok, corpus, ["mlp"], progress=False, contexts=0)
    assert made == [] and profiles["mlp"].tokens > 0


def test_record_on_is_checked():
    with pytest.raises(ValueError, match="record_on must be None"):
        txray.RecordOptions(record_on="cuda")
