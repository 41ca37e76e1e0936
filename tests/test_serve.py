"""``txray serve``'s handlers: the analysis endpoints, path confinement, limits and errors, the live models'
activations and manipulation, the ablation jobs, the demo folder and the command line."""

from __future__ import annotations

import json
import time

import pyarrow.csv as pcsv
import pytest

pytest.importorskip("torch")
pytest.importorskip("fastapi")
pytest.importorskip("httpx2")
pytest.importorskip("jinja2")

import servers  # noqa: E402
import stages as st  # noqa: E402
import torch  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

import txray  # noqa: E402
from txray import browser  # noqa: E402
from txray.cli import main  # noqa: E402
from txray.prune import BASELINE, manipulate  # noqa: E402
from txray.serve import Folders, RequestError  # noqa: E402
from txray.serve.app import MAX_BODY, Server, create_app  # noqa: E402
from txray.serve.run import open_server  # noqa: E402
from txray.serve.study import Study  # noqa: E402


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return servers.demo_output(tmp_path_factory.mktemp("serve-demo"))


@pytest.fixture(scope="module")
def server(demo):
    return open_server([demo])


@pytest.fixture(scope="module")
def client(server):
    # raise_server_exceptions=False: a crash must come back as the 500 a browser would get
    with TestClient(create_app(server), raise_server_exceptions=False) as c:
        yield c


def error(resp) -> str:
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error"} and "Traceback" not in body["error"]
    return body["error"]


# -- analysis ------------------------------------------------------------------------------------------


def test_page_and_config(client, server):
    page = client.get("/")
    assert page.status_code == 200 and "TxrayBrowser" in page.text and "txs-config" in page.text
    config = client.get("/api/config").json()
    assert [m["name"] for m in config["models"]] == ["demo language model", "demo classifier"]
    assert config["stages"] == ["epoch 1", "epoch 2", "epoch 3"]
    assert config["n_neurons"] == 12 and all(m["neurons"] == 12 for m in config["models"])


def test_browser_document_leaves_neurons_to_the_endpoint(client, server):
    doc = client.get("/api/browser").json()
    assert doc["format"] == browser.FORMAT and "neurons" not in doc
    full = browser.browser_document(server.study.profiles, top=server.study.top)
    assert doc["table"] == full["table"]
    for n in (0, 5, 11):
        assert client.get(f"/api/neuron/{n}").json() == json.loads(json.dumps(full["neurons"][n]))


def test_neuron_entry_of_profiles_of_different_widths():
    a = st.recorded_stages(n_stages=1, n_neurons=6, seed=1)[0]
    b = st.recorded_stages(n_stages=1, n_neurons=9, seed=2, contexts=3)[0]
    full = browser.browser_document([a, b])
    study = Study([a, b])
    for n in (0, 5, 8):
        assert study.neuron(n) == full["neurons"][n]


def test_neuron_errors(client):
    assert "out of range" in error(client.get("/api/neuron/12"))
    assert client.get("/api/neuron/12").status_code == 404
    assert client.get("/api/neuron/-1").status_code == 404
    resp = client.get("/api/neuron/abc")
    assert resp.status_code == 422 and "neuron" in error(resp)
    assert client.get("/no/such/page").status_code == 404


# -- confinement and limits -----------------------------------------------------------------------------


def test_folders_confine_paths(tmp_path):
    inside = tmp_path / "in"
    (inside / "sub").mkdir(parents=True)
    (inside / "sub" / "a.csv").write_text("text,label\nx,1\n")
    (tmp_path / "secret.csv").write_text("text,label\n")
    (inside / "link.csv").symlink_to(tmp_path / "secret.csv")
    folders = Folders([inside])
    assert folders.file("sub/a.csv", (".csv",)) == (inside / "sub" / "a.csv").resolve()
    assert folders.file(str(inside / "sub" / "a.csv")) == (inside / "sub" / "a.csv").resolve()
    for name in ("../secret.csv", str(tmp_path / "secret.csv"), "link.csv", "sub/../../secret.csv", "/etc/passwd"):
        with pytest.raises(RequestError, match="outside the folders") as err:
            folders.file(name)
        assert err.value.status == 403
    with pytest.raises(RequestError, match="no file"):
        folders.file("sub/missing.csv")
    with pytest.raises(RequestError, match="must end in"):
        folders.file("sub/a.csv", (".tsv",))
    assert folders.files((".csv",)) == ["link.csv", "sub/a.csv"]


def test_ablation_cannot_read_outside(client, tmp_path):
    outside = tmp_path / "labelled.csv"
    outside.write_text("text,label\nw1 w2,positive\n")
    resp = client.post("/api/ablation", json={"model": "demo classifier", "file": str(outside)})
    assert resp.status_code == 403 and "outside the folders" in error(resp)
    resp = client.post("/api/ablation", json={"model": "demo classifier", "file": "../../../../etc/passwd"})
    assert resp.status_code in (403, 404)


def test_request_size_is_bounded(client):
    big = {"text": "w1 " * (MAX_BODY // 2), "neurons": [1]}
    resp = client.post("/api/activations", json=big)
    assert resp.status_code == 413 and "larger than" in error(resp)

    def chunks():  # no Content-Length: the body is counted as it arrives
        for _ in range(MAX_BODY // 1000 + 2):
            yield b" " * 1000

    resp = client.post("/api/activations", content=chunks(), headers={"content-type": "application/json"})
    assert resp.status_code == 413
    assert client.get("/api/config").status_code == 200  # the server goes on


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"text": "w1", "neurons": []}, 422, "neurons"),
        ({"text": "", "neurons": [1]}, 422, "text"),
        ({"text": "w1", "neurons": list(range(100))}, 422, "neurons"),
        ({"text": "w1", "neurons": [99]}, 400, "neuron 99 is out of range"),
        ({"text": "w1", "neurons": [1, 1]}, 400, "once"),
        ({"text": "   ", "neurons": [1]}, 400, "type some words"),
        ({"model": "nope", "text": "w1", "neurons": [1]}, 404, "no model 'nope'"),
    ],
)
def test_bad_activation_requests(client, body, status, message):
    resp = client.post("/api/activations", json=body)
    assert resp.status_code == status and message in error(resp)


def test_bad_json_and_bad_edits(client):
    resp = client.post("/api/manipulate", content=b"{not json", headers={"content-type": "application/json"})
    assert resp.status_code == 422
    error(resp)
    for edit in (
        {"neuron": 1, "mode": "explode"},
        {"neuron": 1, "mode": "set", "value": 1e300},
        {"neuron": -2, "mode": "zero"},
    ):
        resp = client.post("/api/manipulate", json={"text": "w1", "edits": [edit]})
        assert resp.status_code == 422, edit
        error(resp)


def test_a_crash_is_a_500_without_a_traceback(server, monkeypatch):
    def boom(neuron):
        raise RuntimeError("something broke")

    monkeypatch.setattr(server.study, "neuron", boom)
    with TestClient(create_app(server), raise_server_exceptions=False) as c:
        resp = c.get("/api/neuron/1")
        assert resp.status_code == 500 and "something broke" in error(resp)
        assert c.get("/api/config").status_code == 200


def test_without_a_model(tmp_path):
    profiles = st.recorded_stages(n_stages=2)
    server = Server(Study(profiles), Folders([tmp_path]))
    with TestClient(create_app(server)) as c:
        resp = c.post("/api/activations", json={"text": "w1", "neurons": [1]})
        assert resp.status_code == 409 and "--model" in error(resp)
        assert c.get("/api/neuron/3").status_code == 200


# -- live models ---------------------------------------------------------------------------------------------


def test_activations_are_the_layer_output_per_word(client, server):
    lm = server.models[0]
    resp = client.post("/api/activations", json={"model": lm.name, "text": "w1 w2 nonsense w3", "neurons": [4, 0]})
    body = resp.json()
    assert body["words"] == ["w1", "w2", "nonsense", "w3"] and body["neurons"] == [4, 0]
    vocab = ["<pad>", "<unk>", "<eos>", *st.vocabulary(20)]
    ids = torch.tensor([[vocab.index("w1"), vocab.index("w2"), 1, vocab.index("w3")]])
    with torch.no_grad():
        hidden, _ = lm.model.encoder(ids)
    expected = hidden[0][:, [4, 0]].T
    assert torch.allclose(torch.tensor(body["activations"]), expected, rtol=1e-3, atol=1e-4)


def test_manipulation_changes_the_output(client, server):
    text = "w1 w2 w3"
    same = client.post(
        "/api/manipulate",
        json={"model": "demo language model", "text": text, "edits": [{"neuron": 3, "mode": "scale", "value": 1}]},
    ).json()
    assert same["distance"] == 0 and same["before"] == same["after"]
    assert same["kind"] == "next word" and len(same["before"]) == 10
    changed = client.post(
        "/api/manipulate",
        json={
            "model": "demo language model",
            "text": text,
            "edits": [{"neuron": n, "mode": "set", "value": 5} for n in range(12)],
        },
    ).json()
    assert changed["distance"] > 0.01
    assert [r[:2] for r in changed["before"]] == [r[:2] for r in same["before"]]
    lm = server.models[0]
    ids = lm.encode(text).ids
    with torch.no_grad(), manipulate(lm.model, "encoder.rnn", list(range(12)), 0.0, 5.0):
        expected = lm.model(ids)[0][0, -1].softmax(-1)
    assert [row[1] for row in changed["after"]] == pytest.approx(expected.topk(10).values.tolist(), rel=1e-3)
    classes = client.post(
        "/api/manipulate",
        json={
            "model": "demo classifier",
            "text": text,
            "edits": [{"neuron": 2, "mode": "zero"}, {"neuron": 5, "mode": "set", "value": -3}],
        },
    ).json()
    assert classes["kind"] == "class" and sorted(r[0] for r in classes["before"]) == ["negative", "positive"]
    assert sum(r[1] for r in classes["after"]) == pytest.approx(1, abs=1e-3)


def test_manipulate_sets_zeroes_and_scales():
    layer = torch.nn.Linear(3, 5)
    model = torch.nn.Sequential(layer)
    x = torch.randn(2, 3)
    plain = model(x)
    with torch.no_grad(), manipulate(model, "0", [4, 1, 2], scale=[0.0, 2.0, 0.0], value=[7.0, 0.0, 0.0]):
        out = model(x)
    assert torch.allclose(out[:, 4], torch.full((2,), 7.0))
    assert torch.allclose(out[:, 1], 2 * plain[:, 1])
    assert torch.all(out[:, 2] == 0)
    assert torch.allclose(out[:, [0, 3]], plain[:, [0, 3]])
    assert torch.allclose(model(x), plain)  # the hook is gone
    with pytest.raises(ValueError, match="once"), manipulate(model, "0", [1, 1]):
        pass
    with pytest.raises(ValueError, match="finite"), manipulate(model, "0", [1], value=float("nan")):
        pass


def test_manipulate_edits_the_lstm_state():
    lstm = torch.nn.LSTM(4, 6, batch_first=True)
    model = torch.nn.Sequential()
    model.add_module("rnn", lstm)
    x = torch.randn(1, 5, 4)
    with torch.no_grad(), manipulate(model, "rnn", [2], value=1.5):
        out, (h, _) = lstm(x)
    assert torch.all(out[..., 2] == 1.5) and torch.all(h[..., 2] == 1.5)


def test_hugging_face_models(tmp_path):
    transformers = pytest.importorskip("transformers")
    from txray.serve.hf import head_of, hf_live_model

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "movie", "was", "good", "bad"]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    tokenizer = transformers.BertTokenizerFast(str(tmp_path / "vocab.txt"))
    config = transformers.BertConfig(
        vocab_size=len(words),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=24,
        num_labels=3,
    )
    torch.manual_seed(0)
    assert head_of(["BertForSequenceClassification"]) == ("AutoModelForSequenceClassification", "class")
    assert head_of(["BertModel"]) == ("AutoModel", "embedding")
    layer = "bert.encoder.layer.0.intermediate"
    classifier = hf_live_model("tiny", transformers.BertForSequenceClassification(config), tokenizer, layer, "class")
    assert classifier.n_neurons == 24
    acts = classifier.activations("the movie was good", [0, 23])
    assert acts["words"] == ["the", "movie", "was", "good"] and len(acts["activations"][1]) == 4
    out = classifier.outputs("the movie was good", [0, 1, 2], [0, 0, 0], [9, 9, 9])
    assert sorted(r[0] for r in out["before"]) == ["LABEL_0", "LABEL_1", "LABEL_2"] and out["distance"] > 0
    masked = hf_live_model(
        "tiny-mlm", transformers.BertForMaskedLM(config), tokenizer, "bert.encoder.layer.0.intermediate", "masked word"
    )
    assert masked.encode("the movie").ids[0].tolist() == [2, 5, 6, 4, 3]  # [CLS] the movie [MASK] [SEP]
    assert masked.outputs("the movie", [3], [0], [4])["kind"] == "masked word"
    bare = hf_live_model(
        "tiny-bare", transformers.BertModel(config), tokenizer, "encoder.layer.0.intermediate", "embedding"
    )
    assert bare.outputs("the movie", [3], [0], [0])["after"][0][0].startswith("dimension ")
    with pytest.raises(ValueError, match="no layer"):
        hf_live_model("tiny", transformers.BertModel(config), tokenizer, "encoder.nope", "embedding")


# -- ablation ------------------------------------------------------------------------------------------------


def wait(client, job):
    for _ in range(600):
        if job["status"] != "running":
            return job
        time.sleep(0.05)
        job = client.get(f"/api/ablation/{job['id']}").json()
    raise AssertionError(f"the ablation job did not finish: {job}")


def test_ablation_table_is_the_pruning_table(client, server):
    body = {"model": "demo classifier", "file": "models/tweets_test.csv", "before": 0, "k": 3, "sets": {"mine": [1, 2]}}
    job = wait(client, client.post("/api/ablation", json=body).json())
    assert job["status"] == "done" and job["progress"] == 1 and job["done"] == job["total"]
    rows = {r["set"]: r for r in job["table"]}
    assert list(rows) == [BASELINE, "avoided", "3 least massive", "3 most massive", "gained", "mine"]
    classifier = server.models[1]
    table = pcsv.read_csv(server.folders.roots[0] / "models" / "tweets_test.csv")
    right = 0
    with torch.no_grad(), txray.prune(classifier.model, "encoder.rnn", [1, 2]):
        for text, label in zip(table.column("text").to_pylist(), table.column("label").to_pylist()):
            ids = classifier.encode(text).ids
            positive = float(classifier.model(ids, torch.tensor([ids.shape[1]]))[0]) > 0
            right += positive == (label == "positive")
    assert rows["mine"]["metric_file"] == pytest.approx(right / table.num_rows)
    assert rows["mine"]["neurons"] == 2 and 0 < rows["mine"]["mass_removed"] < 1
    again = client.post("/api/ablation", json=body).json()
    assert again["id"] == job["id"] and again["status"] == "done"  # cached


def test_ablation_errors(client):
    resp = client.post("/api/ablation", json={"model": "demo language model", "file": "models/tweets_test.csv"})
    assert resp.status_code == 400 and "needs a classifier" in error(resp)
    resp = client.post("/api/ablation", json={"model": "demo classifier", "file": "models/models.json"})
    assert resp.status_code == 400 and "must end in" in error(resp)
    resp = client.post(
        "/api/ablation", json={"model": "demo classifier", "file": "models/tweets_test.csv", "sets": {"x": [40]}}
    )
    assert resp.status_code == 400 and "out of range" in error(resp)
    resp = client.post(
        "/api/ablation", json={"model": "demo classifier", "file": "models/tweets_test.csv", "rows": 10**6}
    )
    assert resp.status_code == 422 and "rows" in error(resp)
    assert client.get("/api/ablation/999").status_code == 404
    files = client.get("/api/files").json()
    assert files == {"files": ["models/tweets_test.csv"], "default": "models/tweets_test.csv"}


# -- the command line ---------------------------------------------------------------------------------------


def test_cli_checks_before_serving(demo, capsys, tmp_path):
    assert main(["serve", str(demo), "--model", "x"]) == 2
    assert "--model and --layer go together" in capsys.readouterr().err
    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert "no profile or folder" in capsys.readouterr().err
    assert main(["serve", str(demo), "--port", "70000"]) == 2
    assert main(["serve", str(demo), "--data", str(tmp_path / "nope")]) == 2
    assert "--data" in capsys.readouterr().err


def test_cli_serves_and_prints_the_url(demo, monkeypatch, capsys):
    served = {}

    def fake_serve(server, sock, quiet):
        served["server"], served["address"] = server, sock.getsockname()
        sock.close()

    monkeypatch.setattr("txray.serve.run.serve", fake_serve)
    assert main(["serve", str(demo), "--port", "0", "--quiet"]) == 0
    host, port = served["address"][:2]
    assert host == "127.0.0.1" and capsys.readouterr().out.startswith(f"txray serve: http://127.0.0.1:{port}/")
    assert len(served["server"].models) == 2
