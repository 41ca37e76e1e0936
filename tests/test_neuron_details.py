"""neuron_details: the per-neuron tables of neuron_detail for many neurons at once, row for row."""

from __future__ import annotations

import pyarrow.compute as pc
import pytest
import stages as st

from txray import neurons


@pytest.fixture(scope="module")
def profiles():
    return st.recorded_stages(n_neurons=30, vocab=25, tokens=600, contexts=5)


def rows_of(table, neuron):
    """One neuron's rows, without the leading neuron column (the contexts' schema has its own)."""
    mine = table.filter(pc.equal(table.column("neuron"), neuron))
    return mine if mine.schema.equals(neurons.NEURON_CONTEXTS_SCHEMA) else mine.drop_columns(["neuron"])


@pytest.mark.parametrize(("top", "contexts"), [(10, None), (3, 2)])
def test_same_rows_as_neuron_detail_for_every_neuron(profiles, top, contexts):
    many = neurons.neuron_details(profiles, kinds=["token", "pos"], top=top, contexts=contexts)
    assert list(many) == list(neurons.NEURON_DETAILS_TABLES)
    for n in range(profiles[0].n_neurons):
        one = neurons.neuron_detail(profiles, n, ["token", "pos"], top=top, contexts=contexts)
        for key in neurons.NEURON_DETAILS_TABLES:
            assert rows_of(many[key], n).equals(one[key]), (n, key)
    assert many["contexts"].num_rows > 0 and many["change"].num_rows > 0


def test_chosen_neurons_and_errors(profiles):
    some = neurons.neuron_details(profiles, [7, 2, 7], kinds="token", top=2)
    assert sorted(set(some["features"].column("neuron").to_pylist())) == [2, 7]
    assert set(some["features"].column("kind").to_pylist()) == {"token"}
    with pytest.raises(ValueError, match="out of range"):
        neurons.neuron_details(profiles, [30])
    with pytest.raises(ValueError, match="top"):
        neurons.neuron_details(profiles, top=0)
    plain = neurons.neuron_details(st.recorded_stages(n_stages=1))
    assert plain["contexts"].num_rows == 0 and plain["change"].num_rows == 0
