"""The package's HTML templates and front-end files (python/txray/templates/), rendered with Jinja2."""

from __future__ import annotations

import base64
import functools
import gzip
import json
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import jinja2


@functools.cache
def environment() -> jinja2.Environment:
    """The Jinja2 environment over txray's templates, HTML-escaping by default."""
    try:
        import jinja2
    except ImportError as err:  # pragma: no cover - depends on the installation
        raise ImportError("the report needs Jinja2: pip install 'txray[report]'") from err
    return jinja2.Environment(
        loader=jinja2.PackageLoader("txray", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "j2"), default=True),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


@functools.cache
def asset(name: str) -> str:
    """The text of a front-end file, e.g. ``browser.js``."""
    return resources.files("txray").joinpath("templates").joinpath(name).read_text(encoding="utf-8")


def script_json(value: Any, what: str) -> str:
    """``value`` as JSON to put inside a <script> element ("</" would end the element early)."""
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"), cls=_Encoder)
    except ValueError as err:
        raise ValueError(f"cannot put the {what} in the report: {err}") from err
    return text.replace("</", "<\\/")


class _Encoder(json.JSONEncoder):
    """JSON of figures (plotly's NumPy arrays) and browser documents."""

    def default(self, o: Any) -> Any:
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, np.generic):
            return o.item()
        return super().default(o)


def packed_json(text: str) -> str:
    """JSON text as gzip in base64, the way pages embed data (a quarter of the size; the page
    decodes it with ``TxrayBrowser.decode``). Deterministic: no time stamp in the gzip header."""
    data = text.encode("utf-8")
    # Level 9 saves a few percent over 6 at three times the time: worth it up to a paper-sized report.
    level = 9 if len(data) < 8_000_000 else 6
    return base64.b64encode(gzip.compress(data, compresslevel=level, mtime=0)).decode("ascii")
