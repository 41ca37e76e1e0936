"""The neuron browser: every neuron of every stage as one JSON document, and the component that shows it.

    doc = txray.browser.browser_document([epoch1, epoch48, epoch49], kind="token")
    html = txray.browser.render_browser(doc)  # a <div>, its data and its script; CSS: asset("browser.css")

The document (format ``txray-browser/1``, documented in docs/report.md) holds
the neuron table of :func:`txray.neuron_table` column by column and, per
neuron, its top features per kind and stage, its top activating contexts and
the features it gained and lost (:func:`txray.neuron_details`). The front end
(``templates/browser.js`` and ``browser.css``) is the same for the report and
for a server that feeds it the document from an endpoint.
"""

from __future__ import annotations

import base64
import gzip
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from . import analysis, neurons
from ._templates import asset, environment, packed_json, script_json
from .profile import Profile, check_compatible

FORMAT = "txray-browser/1"
"""The ``format`` field of a browser document."""

REPORT_CONTEXTS = 5
"""Top activating contexts per neuron and stage that a report holds (the profile may hold more)."""

REPORT_WINDOW = 5
"""Words either side of a context's word that the document keeps (profiles usually hold 8)."""

HIDDEN_STATES = ("dead", "unpreferred")
"""States the table hides until the reader asks for them: neurons that prefer nothing."""

ASSETS = ("browser.js", "browser.css")
"""The component's front-end files (package files of txray/templates/, read with :func:`asset`)."""


def _round(values: np.ndarray, digits: int = 4) -> list[Any]:
    """Floats to ``digits`` significant digits (JSON stays short), NaN to null."""
    out: list[Any] = []
    for v in np.asarray(values, dtype=np.float64).tolist():
        out.append(None if v != v else float(f"{v:.{digits}g}"))
    return out


def _same_layer(profiles: Sequence[Profile], kinds: Sequence[str]) -> bool:
    try:
        for other in profiles[1:]:
            check_compatible(profiles[0], other, kinds, same_neurons=True)
    except ValueError:
        return False
    return True


def browser_document(
    profiles: Sequence[Profile],
    kind: str = "token",
    kinds: Sequence[str] | None = None,
    top: int = 10,
    contexts: int | None = REPORT_CONTEXTS,
    reference: int | str = "previous",
    details: bool = True,
) -> dict[str, Any]:
    """The neuron browser's JSON document of these stages (plain lists and dicts, ready for ``json.dumps``).

    ``kind``: the kind the table compares (state, Hellinger, length, top
    feature); ``kinds``: the kinds whose top features a neuron's page shows
    (default: every kind all profiles have); ``top``: features per kind and
    stage, also gained and lost ones; ``contexts``: contexts per neuron and
    stage (None: all recorded); ``reference`` as in :func:`txray.neuron_table`.
    Profiles of different widths (two models) are listed one by one, each
    compared with nothing. ``details=False`` leaves the per-neuron pages out
    (``neurons``): a server sends each with :func:`neuron_entry` when asked.
    """
    profiles = list(profiles)
    if not profiles:
        raise ValueError("profiles: the browser needs at least one profile")
    names = analysis.stage_names(profiles)
    shown = list(kinds) if kinds is not None else [k for k in profiles[0].kinds if all(k in p.kinds for p in profiles)]
    if kind not in shown:
        shown.insert(0, kind)
    same = _same_layer(profiles, shown)
    if same:
        parts = [neurons.neuron_table(profiles, kind, reference)]
    else:
        parts = [_restage(neurons.neuron_table(p, kind), i, name) for i, (p, name) in enumerate(zip(profiles, names))]
    table = pa.concat_tables(parts)
    compared = table.column("reference").null_count < table.num_rows
    alone = table.column("reference").null_count > 0
    states = [
        s
        for s in neurons.STATES
        if (s in ("preferred", "unpreferred") and alone) or (s not in ("preferred", "unpreferred") and compared)
    ]
    has_contexts = any(p.contexts is not None for p in profiles)
    document = {
        "format": FORMAT,
        "kind": kind,
        "kinds": shown,
        "kind_words": {k: analysis.kind_words(k) for k in shown},
        "stages": names,
        "same_layer": same,
        "n_neurons": max(p.n_neurons for p in profiles),
        "widths": [p.n_neurons for p in profiles],
        "reference": reference if same else None,
        "reference_names": _reference_names(table, len(profiles)),
        "states": states,
        "hidden_states": list(HIDDEN_STATES),
        "has_contexts": has_contexts,
        "table": _table_columns(table),
    }
    if details:
        document["neurons"] = _neuron_entries(
            _details(profiles, None, shown, top, contexts, same), profiles, shown, has_contexts, same
        )
    return document


def _details(
    profiles: Sequence[Profile],
    ids: Sequence[int] | None,
    kinds: Sequence[str],
    top: int,
    contexts: int | None,
    same: bool,
) -> list[dict[str, pa.Table]]:
    """:func:`txray.neuron_details` of the neurons ``ids`` (None: all): one part for a layer's stages, else one
    per profile that has them."""
    if same:
        return [neurons.neuron_details(profiles, ids, kinds, top, contexts=contexts)]
    return [
        _restage_details(
            neurons.neuron_details(
                p, ids if ids is None else [i for i in ids if i < p.n_neurons], kinds, top, contexts=contexts
            ),
            s,
        )
        for s, p in enumerate(profiles)
        if ids is None or any(i < p.n_neurons for i in ids)
    ]


def neuron_entry(
    profiles: Sequence[Profile],
    document: dict[str, Any],
    neuron: int,
    top: int = 10,
    contexts: int | None = REPORT_CONTEXTS,
) -> dict[str, Any]:
    """One neuron's page of a document made with ``details=False`` (what ``document["neurons"][neuron]`` would
    hold), computed for that neuron alone. Raises ValueError for a neuron no profile has."""
    profiles = list(profiles)
    if not 0 <= neuron < document["n_neurons"]:
        raise ValueError(f"neuron {neuron} is out of range: the widest profile has {document['n_neurons']} neurons")
    kinds, same = document["kinds"], document["same_layer"]
    parts = _details(profiles, [neuron], kinds, top, contexts, same)
    return _neuron_entries(parts, profiles, kinds, document["has_contexts"], same)[neuron]


def _restage(table: pa.Table, index: int, name: str) -> pa.Table:
    """A one-profile neuron table as stage ``index`` of several."""
    table = table.set_column(0, "stage_index", pa.array(np.full(table.num_rows, index, np.int32)))
    return table.set_column(1, "stage", pa.array([name] * table.num_rows, pa.string()))


def _restage_details(tables: dict[str, pa.Table], index: int) -> dict[str, pa.Table]:
    out = {}
    for key, table in tables.items():
        if "stage_index" in table.column_names:
            at = table.column_names.index("stage_index")
            table = table.set_column(at, "stage_index", pa.array(np.full(table.num_rows, index, np.int32)))
        out[key] = table
    return out


def _reference_names(table: pa.Table, n_stages: int) -> list[str | None]:
    stage = table.column("stage_index").to_numpy()
    reference = table.column("reference").to_pylist()
    first = [int(np.argmax(stage == s)) for s in range(n_stages)]
    return [reference[i] for i in first]


def _table_columns(table: pa.Table) -> dict[str, list[Any]]:
    """The neuron table column by column, as the front end reads it."""
    labels = [None if v is None else _label(v) for v in table.column("top_feature_name").to_pylist()]
    ids = table.column("top_feature").to_pylist()
    return {
        "stage": table.column("stage_index").to_pylist(),
        "neuron": table.column("neuron").to_pylist(),
        "state": table.column("state").to_pylist(),
        "hellinger": _round(table.column("hellinger").to_numpy(zero_copy_only=False)),
        "mass": _round(table.column("mass").to_numpy(zero_copy_only=False)),
        "mass_rank": table.column("mass_rank").to_pylist(),
        "length": table.column("length").to_pylist(),
        "top_feature": [
            label if label is not None else (None if f is None else str(f)) for label, f in zip(labels, ids)
        ],
        "p": _round(table.column("top_p").to_numpy(zero_copy_only=False)),
        "contexts": table.column("contexts").to_pylist(),
    }


def _label(name: str) -> str:
    return analysis.display_label(name)


def _grouped(table: pa.Table, key_columns: Sequence[str]) -> dict[tuple, list[int]]:
    """Row numbers of ``table`` by the values of ``key_columns``."""
    groups: dict[tuple, list[int]] = {}
    for i, key in enumerate(zip(*(table.column(c).to_pylist() for c in key_columns))):
        groups.setdefault(key, []).append(i)
    return groups


def _neuron_entries(
    details: Sequence[dict[str, pa.Table]],
    profiles: Sequence[Profile],
    kinds: Sequence[str],
    has_contexts: bool,
    same_layer: bool,
) -> list[dict[str, Any]]:
    """Per neuron id: features[kind][stage], contexts[stage] and change, in compact lists."""
    n_stages = len(profiles)
    width = max(p.n_neurons for p in profiles)
    entries: list[dict[str, Any]] = [
        {
            "features": {k: [[] for _ in range(n_stages)] for k in kinds},
            "contexts": [[] for _ in range(n_stages)] if has_contexts else None,
            "change": [],
        }
        for _ in range(width)
    ]
    for part in details:
        features = part["features"]
        names = [
            _label(n) if n is not None else str(f)
            for n, f in zip(*(features.column(c).to_pylist() for c in ("feature_name", "feature")))
        ]
        p, count = _round(features.column("p").to_numpy(), 3), features.column("count").to_pylist()
        for n, s, k, name, pv, c in zip(
            features.column("neuron").to_pylist(),
            features.column("stage_index").to_pylist(),
            features.column("kind").to_pylist(),
            names,
            p,
            count,
        ):
            entries[n]["features"][k][s].append([name, pv, c])
        if has_contexts:
            ctx = part["contexts"]
            for n, s, act, text, offset, word, unit in zip(
                *(
                    ctx.column(c).to_pylist()
                    for c in ("neuron", "stage_index", "activation", "text", "word_offset", "word", "unit")
                )
            ):
                entries[n]["contexts"][s].append([float(f"{act:.4g}"), *_window(text, offset, word, unit)])
        if same_layer:
            change = part["change"]
            steps = _grouped(change, ["neuron", "step"])
            names = [
                _label(nm) if nm is not None else str(f)
                for nm, f in zip(*(change.column(c).to_pylist() for c in ("feature_name", "feature")))
            ]
            kind_col, what = change.column("kind").to_pylist(), change.column("change").to_pylist()
            for (n, step), rows in steps.items():
                entry = {"from": step, "to": step + 1, "gained": [], "lost": []}
                for r in rows:
                    if kind_col[r] == kinds[0]:
                        entry[what[r]].append(names[r])
                entries[n]["change"].append(entry)
    return entries


def _window(text: str | None, offset: int | None, word: str | None, unit: int) -> list[Any]:
    """[text, word offset, word length] of a context, at most REPORT_WINDOW words either side;
    [null, unit, 0] when the profile knows no text (a plain Recorder's contexts)."""
    if text is None or offset is None or word is None:
        return [None, unit, 0]
    before = text[:offset].split(" ")[-REPORT_WINDOW - 1 :]  # the last item is "" (the space before the word)
    after = text[offset + len(word) :].split(" ")[: REPORT_WINDOW + 1]
    head = " ".join(before)
    return [head + word + " ".join(after), len(head), len(word)]


def render_browser(
    document: dict[str, Any], element_id: str = "neuron-browser", data_id: str = "txray-browser-data"
) -> str:
    """The component as HTML: its container, its data (gzip, base64) and browser.js.

    The page adds :func:`asset` ``("browser.css")`` to its styles and mounts
    the component (``TxrayBrowser.mount``) once the data is decoded, as the
    report's ``report.js`` does.
    """
    return (
        environment()
        .get_template("browser.html.j2")
        .render(
            element_id=element_id,
            data_id=data_id,
            data_b64=packed_json(script_json(document, "neuron browser data")),
            browser_js=asset("browser.js"),
        )
    )


def read_document(page: str, data_id: str = "txray-browser-data") -> dict[str, Any]:
    """The browser document embedded in a page written by :func:`render_browser` (for tests and tools)."""
    import json
    import re

    found = re.search(rf'<script type="application/gzip;base64" id="{re.escape(data_id)}">([^<]*)</script>', page)
    if not found:
        raise ValueError(f"the page holds no neuron browser data (no script element with id {data_id!r})")
    return json.loads(gzip.decompress(base64.b64decode(found.group(1))))
