"""The HTTP side of ``txray serve``: a FastAPI application over a :class:`Server`'s study, models and ablation.

Every error a request can cause is a JSON object ``{"error": message}`` with a 4xx status (the page shows
the message); anything else is logged on the server and answered with a 500 and a one-line message, never a
stack trace. Request bodies are limited to :data:`MAX_BODY` bytes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from .._templates import asset, environment, script_json
from .._version import __version__
from .ablation import MAX_ROWS, Ablation
from .folders import Folders, RequestError
from .live import LiveModel
from .study import Study

if TYPE_CHECKING:
    from fastapi import FastAPI

MAX_BODY = 64 * 1024
"""Largest request body (bytes) the server reads."""
MAX_TEXT = 5000
"""Longest typed text (characters)."""
MAX_NEURONS = 64
"""Most neurons one request selects or edits."""
MAX_VALUE = 1e6
"""Largest magnitude of a value or scale a neuron is set to."""


@dataclasses.dataclass
class Server:
    """What a server shows: the profiles (a :class:`Study`), the live models, the folders requests may name."""

    study: Study
    folders: Folders
    models: Sequence[LiveModel] = ()
    labelled: str | None = None  # the labelled file the ablation view suggests (relative to a folder)
    title: str = "txray serve"

    def model(self, name: str | None) -> LiveModel:
        if not self.models:
            raise RequestError("no model is loaded: start txray serve with --model PATH --layer NAME", 409)
        if name is None:
            return self.models[0]
        for m in self.models:
            if m.name == name:
                return m
        raise RequestError(f"no model {name!r}; the server has {', '.join(m.name for m in self.models)}", 404)

    def config(self) -> dict[str, Any]:
        """What the page needs to know at once."""
        return {
            "title": self.title,
            "version": __version__,
            "models": [m.describe() for m in self.models],
            "stages": self.study.stage_names(),
            "n_neurons": self.study.n_neurons,
            "labelled": self.labelled,
            "limits": {"text": MAX_TEXT, "neurons": MAX_NEURONS, "value": MAX_VALUE},
        }


# -- request bodies --------------------------------------------------------------------------------------


class TextRequest(BaseModel):
    model: str | None = Field(None, max_length=200)
    text: str = Field(..., min_length=1, max_length=MAX_TEXT)
    neurons: list[int] = Field(..., min_length=1, max_length=MAX_NEURONS)


class Edit(BaseModel):
    neuron: int = Field(..., ge=0)
    mode: Literal["set", "zero", "scale"]
    value: float = Field(0.0, ge=-MAX_VALUE, le=MAX_VALUE, allow_inf_nan=False)


class ManipulateRequest(BaseModel):
    model: str | None = Field(None, max_length=200)
    text: str = Field(..., min_length=1, max_length=MAX_TEXT)
    edits: list[Edit] = Field(..., min_length=1, max_length=MAX_NEURONS)


class AblationRequest(BaseModel):
    model: str | None = Field(None, max_length=200)
    file: str = Field(..., min_length=1, max_length=1000)
    stage: int | None = Field(None, ge=0, description="the pruned model's profile (default: the last)")
    before: int | None = Field(None, ge=0, description="the profile before training: avoided and gained sets")
    k: int = Field(20, ge=1, le=10_000)
    standard: bool = True
    sets: dict[str, list[int]] = Field(default_factory=dict, max_length=8)
    rows: int = Field(1000, ge=1, le=MAX_ROWS, description="the labelled file's first rows to evaluate")


# -- the application ------------------------------------------------------------------------------------


def create_app(server: Server) -> FastAPI:
    """The FastAPI application serving ``server``."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from starlette.exceptions import HTTPException

    ablation_jobs = Ablation(server.folders)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        ablation_jobs.close()  # a pruning table being computed must not hold up the exit

    app = FastAPI(
        title="txray serve", version=__version__, docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )
    app.add_middleware(_BodyLimit, limit=MAX_BODY)

    @app.exception_handler(RequestError)
    async def request_error(request: Request, err: RequestError) -> Response:
        return JSONResponse({"error": str(err)}, status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> Response:
        return JSONResponse({"error": _validation_message(err)}, status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> Response:
        message = "no such page" if err.status_code == 404 else str(err.detail)
        return JSONResponse({"error": message}, status_code=err.status_code)

    @app.exception_handler(Exception)
    async def crash(request: Request, err: Exception) -> Response:
        # The traceback goes to the server's log (uvicorn prints it), the page gets one line.
        return JSONResponse({"error": f"the server failed on this request ({type(err).__name__}: {err})"}, 500)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return render_page(server)

    @app.get("/api/config")
    def config() -> dict[str, Any]:
        return server.config()

    @app.get("/api/browser")
    def document() -> Response:
        return Response(script_json(server.study.document, "neuron browser data"), media_type="application/json")

    @app.get("/api/neuron/{neuron}")
    def neuron(neuron: int) -> dict[str, Any]:
        return server.study.neuron(neuron)

    @app.post("/api/activations")
    def activations(body: TextRequest) -> dict[str, Any]:
        return server.model(body.model).activations(body.text, body.neurons)

    @app.post("/api/manipulate")
    def manipulate(body: ManipulateRequest) -> dict[str, Any]:
        neurons = [e.neuron for e in body.edits]
        scale = [e.value if e.mode == "scale" else 0.0 for e in body.edits]
        value = [e.value if e.mode == "set" else 0.0 for e in body.edits]
        return server.model(body.model).outputs(body.text, neurons, scale, value)

    @app.get("/api/files")
    def files() -> dict[str, Any]:
        from .ablation import LABELLED_SUFFIXES

        return {"files": server.folders.files(LABELLED_SUFFIXES), "default": server.labelled}

    @app.post("/api/ablation")
    def ablation(body: AblationRequest) -> dict[str, Any]:
        live = server.model(body.model)
        stage = len(server.study.profiles) - 1 if body.stage is None else body.stage
        after = server.study.profile(stage)
        sets: dict[str, list[int]] = {}
        if body.standard:
            sets.update(_standard_sets(server.study, after, body.before, body.k))
        sets.update(body.sets)
        return ablation_jobs.start(live, body.file, sets, after, body.rows)

    @app.get("/api/ablation/{job}")
    def ablation_job(job: int) -> dict[str, Any]:
        return ablation_jobs.job(job)

    return app


def _standard_sets(study: Study, after: Any, before: int | None, k: int) -> dict[str, list[int]]:
    """The paper's sets: avoided and gained against ``before`` (when given), the k least and most massive."""
    from ..compare import compare
    from ..prune import massive, pruning_sets

    kind = study.kind
    if before is not None:
        try:
            return pruning_sets(compare(study.profile(before), after, kind), after, k, kind)
        except ValueError as err:
            raise RequestError(f"cannot compare stage {before} with the pruned model's: {err}") from None
    k = min(k, int(after.preferred(kind).sum()) or 1)
    return {
        f"{k} least massive": massive(after, k, largest=False, kind=kind),
        f"{k} most massive": massive(after, k, largest=True, kind=kind),
    }


def _validation_message(err: Any) -> str:
    """A one-line message from pydantic's errors: where and what."""
    parts = []
    for e in err.errors()[:3]:
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        parts.append(f"{where or 'request'}: {e.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def render_page(server: Server) -> str:
    """The application's page: the browser component's and the views' scripts and styles, the config."""
    return (
        environment()
        .get_template("serve.html.j2")
        .render(
            title=server.title,
            config_json=script_json(server.config(), "server configuration"),
            browser_css=asset("browser.css"),
            serve_css=asset("serve.css"),
            browser_js=asset("browser.js"),
            serve_js=asset("serve.js"),
        )
    )


class _BodyLimit:
    """ASGI middleware: a request whose body is larger than ``limit`` bytes gets a 413, whether it says its
    length (Content-Length) or not (chunked): the body is counted as it arrives."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await _too_large(send, self.limit)
                return
        seen = 0
        refused = False

        async def counted() -> dict[str, Any]:
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit and not refused:
                    refused = True  # answered here; whatever the application answers next is dropped
                    await _too_large(send, self.limit)
                    raise _TooLarge
            return message

        async def unless_refused(message: dict[str, Any]) -> None:
            if not refused:
                await send(message)

        try:
            await self.app(scope, counted, unless_refused)
        except Exception:
            if not refused:
                raise


class _TooLarge(Exception):
    pass


async def _too_large(send: Any, limit: int) -> None:
    body = json.dumps({"error": f"the request is larger than {limit:,} bytes"}).encode()
    await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
