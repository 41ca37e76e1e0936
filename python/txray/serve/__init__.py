"""``txray serve``: the analysis, manipulation and ablation views of profiles and a live model, in a local web app.

    txray serve demo-output/                     # the demo's profiles, its LSTM LM and its classifier
    txray serve profiles/*.parquet --model sentence-transformers/all-MiniLM-L6-v2 --layer encoder.layer.5.intermediate

A FastAPI application (``txray[serve]``) around the report's own front end:
the neuron browser (``templates/browser.js``) reads the table from
``/api/browser`` and each neuron's page from ``/api/neuron/N``; the page of
``templates/serve.js`` adds the views of a live model. Modules:

- :mod:`~txray.serve.folders`: the folders named at startup, and the only paths a request may name;
- :mod:`~txray.serve.study`: the profiles, their browser document and neuron pages;
- :mod:`~txray.serve.live`: a model, its tokenizer and layer: activations over words, outputs before and after
  a manipulation;
- :mod:`~txray.serve.ablation`: pruning tables computed in the background, with progress, cached;
- :mod:`~txray.serve.demo`: the models of a ``txray demo`` output folder;
- :mod:`~txray.serve.app`: the HTTP endpoints and their errors.
"""

from __future__ import annotations

from .folders import Folders, RequestError

__all__ = ["Folders", "RequestError"]
