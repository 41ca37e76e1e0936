"""txray.prune and txray.pruning_table on small torch models, against hand computations."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import txray  # noqa: E402
from txray.prune import BASELINE, massive, states  # noqa: E402


def mlp(seed: int = 0) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2))


INPUTS = torch.randn(32, 4, generator=torch.Generator().manual_seed(1))


def layer_output(model, name: str, x=INPUTS):
    seen = {}
    handle = model.get_submodule(name).register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
    with torch.no_grad():
        model(x)
    handle.remove()
    return seen["out"]


def test_prune_zeroes_inside_and_restores_after():
    model = mlp()
    before = layer_output(model, "1")
    with txray.prune(model, "1", [0, 3]) as same:
        assert same is model
        inside = layer_output(model, "1")
    after = layer_output(model, "1")
    assert torch.all(inside[:, [0, 3]] == 0)
    keep = [1, 2, 4, 5]
    assert torch.equal(inside[:, keep], before[:, keep])
    assert torch.equal(after, before) and not model[1]._forward_hooks


def test_prune_restores_after_an_exception():
    model = mlp()
    with pytest.raises(RuntimeError, match="boom"):
        with txray.prune(model, model[1], [2]):
            raise RuntimeError("boom")
    assert not model[1]._forward_hooks


def test_prune_errors():
    model = mlp()
    with pytest.raises(ValueError, match="no layer 'encoder'"):
        with txray.prune(model, "encoder", [0]):
            pass
    with pytest.raises(IndexError, match="neuron 6 is out of range: the layer outputs 6"):
        with txray.prune(model, "1", [6]):
            model(INPUTS)
    assert not model[1]._forward_hooks
    with pytest.raises(ValueError, match="non-negative"):
        with txray.prune(model, "1", [-1]):
            pass


class Encoder(torch.nn.Module):
    def __init__(self, bidirectional: bool, cell=torch.nn.LSTM):
        super().__init__()
        torch.manual_seed(0)
        self.rnn = cell(3, 4, num_layers=2, batch_first=True, bidirectional=bidirectional)

    def forward(self, x):
        return self.rnn(x)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", [torch.nn.LSTM, torch.nn.GRU])
def test_prune_rnn_tuple_outputs(bidirectional, cell):
    enc = Encoder(bidirectional, cell)
    x = torch.randn(2, 5, 3)
    neurons = [1, 6] if bidirectional else [1, 3]
    with torch.no_grad():
        out0, state0 = enc(x)
        with txray.prune(enc, "rnn", neurons):
            out, state = enc(x)
    assert torch.all(out[..., neurons] == 0)
    others = [n for n in range(out.shape[-1]) if n not in neurons]
    assert torch.equal(out[..., others], out0[..., others])
    h, h0 = (state[0], state0[0]) if cell is torch.nn.LSTM else (state, state0)
    directions = 2 if bidirectional else 1
    top = h[-directions:].permute(1, 0, 2).reshape(2, -1)  # (batch, directions * hidden), like the output
    assert torch.all(top[:, neurons] == 0)
    assert torch.equal(h[:-directions], h0[:-directions])  # lower layers untouched
    if cell is torch.nn.LSTM:
        assert torch.equal(state[1], state0[1])  # the cell state is not a neuron output


def profile_of(model, name="m"):
    acts = layer_output(model, "1").numpy()
    rec = txray.Recorder(6, {"token": 5})
    rec.update(acts, {"token": np.arange(len(acts)) % 5})
    return rec.profile(name=name)


def evaluate(model):
    with torch.no_grad():
        out = model(INPUTS)
    return {"train": float(out[:16].sum()), "test": float(out[16:].abs().mean())}


def test_pruning_table_matches_zeroed_weights():
    model = mlp()
    prof = profile_of(model)
    sets = {"pair": [0, 4], "one": [5]}
    table = txray.pruning_table(model, "1", sets, evaluate, profile=prof)
    assert table.column_names == [
        "set",
        "neurons",
        "mass_removed",
        "metric_train",
        "change_train",
        "metric_test",
        "change_test",
    ]
    rows = table.to_pylist()
    base = evaluate(model)
    assert rows[0]["set"] == BASELINE and rows[0]["change_train"] == 0 and rows[0]["metric_test"] == base["test"]
    mass = prof.mass()
    for row, (name, ids) in zip(rows[1:], sets.items()):
        # Zeroing a tanh neuron's output == zeroing its column in the next linear layer.
        manual = copy.deepcopy(model)
        with torch.no_grad():
            manual[2].weight[:, ids] = 0
        expected = evaluate(manual)
        assert row["set"] == name and row["neurons"] == len(ids)
        for split in ("train", "test"):
            assert row[f"metric_{split}"] == pytest.approx(expected[split], rel=1e-6)
            assert row[f"change_{split}"] == pytest.approx((expected[split] - base[split]) / abs(base[split]), rel=1e-5)
        assert row["mass_removed"] == pytest.approx(mass[ids].sum() / mass.sum())
    assert not model[1]._forward_hooks
    plain = txray.pruning_table(model, "1", {"one": [5]}, evaluate)
    assert plain.column("mass_removed").to_pylist() == [None, None]


def test_pruning_table_errors():
    model = mlp()
    with pytest.raises(TypeError, match="mapping split -> metric"):
        txray.pruning_table(model, "1", {"a": [0]}, lambda m: 0.5)
    with pytest.raises(ValueError, match="baseline"):
        txray.pruning_table(model, "1", {BASELINE: [0]}, evaluate)
    with pytest.raises(ValueError, match="out of range for the profile"):
        txray.pruning_table(model, "1", {"a": [7]}, evaluate, profile=profile_of(model))


def test_pruning_sets():
    before, after = profile_of(mlp(0), "before"), profile_of(mlp(3), "after")
    cmp = txray.compare(before, after)
    sets = txray.pruning_sets(cmp, after, k=2)
    assert list(sets) == ["avoided", "2 least massive", "2 most massive", "gained"]
    rows = cmp.to_pylist()
    assert sets["avoided"] == [r["neuron"] for r in rows if r["state"] == "avoided"] == states(cmp, "avoided")
    assert sets["gained"] == [r["neuron"] for r in rows if r["state"] == "gained"]
    mass, pref = after.mass(), after.preferred("token")
    ranked = sorted(np.flatnonzero(pref), key=lambda n: (mass[n], n))
    assert sets["2 least massive"] == [int(n) for n in ranked[:2]]
    assert sets["2 most massive"] == [int(n) for n in sorted(ranked, key=lambda n: (-mass[n], n))[:2]]
    with pytest.raises(ValueError, match="k must"):
        massive(after, 0)
