"""HTTP API over one archive: the `SearchService` the CLI and the app use, as JSON over FastAPI.

Another program (a notebook, a GIS plugin, a web page) queries a running archive here:
text -> pairs, pair -> pairs, pair -> sentences, a pair's metadata and thumbnails, footprints as
GeoJSON. Interactive OpenAPI docs are served at `/docs`.

Safety: the server binds to 127.0.0.1 by default; bound to any other address it refuses to start
without a bearer token (`--token` or `TEXTITSR_API_TOKEN`), and with a token every data route asks
for `Authorization: Bearer TOKEN`. Every body is bounded as it streams in (chunked ones too), every
uploaded image on its declared pixel count before decoding; query length, k and footprint counts
are bounded; NaN, Infinity, lone surrogates and unknown properties are refused. Every bad request
gets a 4xx naming the field, and the OpenAPI schema documents each answer. Queries run one at a
time: the text encoder already uses every core, so parallel requests would only fight over them.

(No `from __future__ import annotations` here: FastAPI reads the request models of the routes,
which are built per app from its limits, from the annotations at run time.)
"""

import base64
import binascii
import contextlib
import io
import ipaddress
import math
import os
import secrets
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from textitsr import __version__
from textitsr.api_discovery import TOKEN_ENV, announce
from textitsr.errors import InputError, StoreError
from textitsr.safe_read import ImageTooLarge, decode_rgb
from textitsr.service import MAX_QUERY_CHARS, SearchFilters, SearchService


@dataclass(frozen=True)
class ApiConfig:
    """Where the server listens and how large a request may be."""

    host: str = "127.0.0.1"
    port: int = 8765
    #: Bearer token; required whenever `host` is not a loopback address.
    token: str | None = None
    max_k: int = 1_000
    max_query_chars: int = MAX_QUERY_CHARS
    max_footprints: int = 100_000
    #: Largest accepted request body (uploaded before/after images travel base64-encoded in JSON).
    max_body_bytes: int = 32 * 2**20
    max_image_pixels: int = 4096 * 4096


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, 'localhost')."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(config: ApiConfig) -> None:
    """Refuse to serve beyond this machine without a token."""
    if not is_loopback(config.host) and not config.token:
        raise InputError(
            f"--host {config.host}: binding to a non-loopback address needs a bearer token "
            f"(--token or the {TOKEN_ENV} environment variable)"
        )


def _valid_unicode(text: str) -> str:
    """Refuse lone surrogates (`"\\ud800"` is legal JSON but no text encoder or UTF-8 writer takes it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError("expected valid Unicode text (found a lone surrogate)") from err
    return text


#: A JSON string that is valid Unicode text.
Text = Annotated[str, AfterValidator(_valid_unicode)]
#: A longitude or latitude in degrees (JSON NaN and Infinity are refused).
Degrees = Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)]
#: An ISO date (2018, 2018-06 or 2018-06-30); empty means no bound.
ISO_DATE = r"^(\d{4}(-\d{2}(-\d{2})?)?)?$"


class Strict(BaseModel):
    """Request bodies: an unknown property is an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class FiltersIn(Strict):
    """Metadata filters: footprint intersects bbox (lon/lat W, S, E, N); dates within [from, to]."""

    bbox: Annotated[list[Degrees], Field(min_length=4, max_length=4)] | None = None
    date_from: str | None = Field(default=None, pattern=ISO_DATE, examples=["2018-01-01"])
    date_to: str | None = Field(default=None, pattern=ISO_DATE, examples=["2021-12-31"])
    sources: Annotated[list[Annotated[Text, Field(max_length=256)]], Field(max_length=100)] | None = None

    def to_filters(self) -> SearchFilters:
        return SearchFilters(
            bbox=tuple(self.bbox) if self.bbox is not None else None,  # type: ignore[arg-type]
            date_from=self.date_from,
            date_to=self.date_to,
            sources=tuple(self.sources) if self.sources is not None else None,
        )


#: Lon/lat bounds W, S, E, N.
BoundsOut = Annotated[list[float], Field(min_length=4, max_length=4)]
#: Before and after dates (ISO), either unknown.
DatesOut = Annotated[list[str | None], Field(min_length=2, max_length=2)]


class PairHitOut(BaseModel):
    rank: int
    score: float
    pair_id: str
    source: str
    split: str | None
    bounds: BoundsOut | None
    dates: DatesOut
    captions: list[str]
    change_type: str | None


class CaptionHitOut(BaseModel):
    rank: int
    score: float
    text: str
    pair_id: str | None
    #: Share (0-1) of the archive's own (caption, pair) scores this score reaches (None: no captions).
    confidence: float | None = None


class PairHits(BaseModel):
    hits: list[PairHitOut]


class CaptionHits(BaseModel):
    hits: list[CaptionHitOut]


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    store: str
    checkpoint_id: str
    n_pairs: int
    #: What text queries are encoded on (onnx or torch) and why.
    text_backend: str


class StatsOut(BaseModel):
    n_pairs: int
    n_captions: int
    sources: dict[str, int]
    splits: dict[str, int]
    date_range: DatesOut
    bounds: BoundsOut | None
    model: dict[str, Any]


class ErrorOut(BaseModel):
    """Every 4xx/5xx except 422 (FastAPI's list of field errors): one line naming the field."""

    detail: str


_ERROR_MEANING = {
    400: "The request is well formed but its values are not usable (the message names the field).",
    401: "Missing or wrong bearer token (only when the server was started with one).",
    404: "No such pair in this archive.",
    413: "Request body larger than the server accepts.",
    503: "The archive store is damaged or unreadable.",
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the error codes a route can answer."""
    return {code: {"model": ErrorOut, "description": _ERROR_MEANING[code]} for code in codes}


class _PairOrImages(Strict):
    """An archive pair by id, or uploaded before/after images (base64 PNG/JPEG/TIFF), not both."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [
        {"required": ["pair_id"], "not": {"anyOf": [{"required": ["before_image"]},
                                                    {"required": ["after_image"]}]}},
        {"required": ["before_image", "after_image"], "not": {"required": ["pair_id"]}},
    ]})

    pair_id: Text = Field(default=None, min_length=1, max_length=512)  # type: ignore[assignment]
    before_image: str = Field(default=None, description="base64 image of the earlier date")  # type: ignore[assignment]
    after_image: str = Field(default=None, description="base64 image of the later date")  # type: ignore[assignment]

    @model_validator(mode="after")
    def pair_or_images(self) -> "_PairOrImages":
        has_images = (self.before_image is not None, self.after_image is not None)
        if (self.pair_id is not None) == any(has_images) or (any(has_images) and not all(has_images)):
            raise ValueError("expected a pair_id, or both before_image and after_image (not both kinds)")
        return self


@dataclass(frozen=True)
class _Queries:
    """Request bodies of one app, their bounds taken from its ApiConfig."""

    text: type[BaseModel]
    pair: type[BaseModel]
    describe: type[BaseModel]


def _request_models(config: ApiConfig) -> _Queries:
    class TextQuery(Strict):
        query: Text = Field(min_length=1, max_length=config.max_query_chars,
                            examples=["a new road is built across the bare land"])
        k: int = Field(default=10, ge=1, le=config.max_k)
        filters: FiltersIn | None = None

    class PairQuery(_PairOrImages):
        k: int = Field(default=10, ge=1, le=config.max_k)
        filters: FiltersIn | None = None

    class DescribeQuery(_PairOrImages):
        k: int = Field(default=5, ge=1, le=config.max_k)

    return _Queries(text=TextQuery, pair=PairQuery, describe=DescribeQuery)


class BodyLimit:
    """ASGI middleware: read at most `max_bytes` of any request body, chunked uploads included.

    A declared Content-Length over the limit is refused before reading; a body without one is read
    up to the limit and refused with 413 as soon as it passes it, so no upload is held in full.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._refuse(scope, receive, send, length.decode("latin-1"))
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._refuse(scope, receive, send, f"over {self.max_bytes}")
                return
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, size: str) -> None:
        detail = f"request body of {size} bytes: expected at most {self.max_bytes}"
        await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)


def _printable(value: Any) -> Any:
    """Strings made safe for a UTF-8 JSON answer (lone surrogates escaped), recursively."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, (list, tuple)):
        return [_printable(v) for v in value]
    return value


def _add_error_handlers(app: FastAPI) -> None:
    """Library errors -> 400/503; field errors -> 422 without echoing the (possibly unencodable) input."""

    @app.exception_handler(InputError)
    async def input_error(request: Request, err: InputError) -> JSONResponse:
        return JSONResponse({"detail": _printable(str(err))}, status_code=400)

    @app.exception_handler(StoreError)
    async def store_error(request: Request, err: StoreError) -> JSONResponse:
        return JSONResponse({"detail": _printable(str(err))}, status_code=503)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, err: RequestValidationError) -> JSONResponse:
        detail = [{"loc": _printable(list(e.get("loc", ()))), "msg": _printable(str(e.get("msg", ""))),
                   "type": _printable(str(e.get("type", "")))} for e in err.errors()]
        return JSONResponse({"detail": detail}, status_code=422)


async def _no_unknown_query_parameters(request: Request) -> None:
    """A misspelt parameter (`?limt=5`) is an error, not silently ignored: the route's own names only."""
    route = request.scope.get("route")
    known = {p.alias for p in getattr(getattr(route, "dependant", None), "query_params", ())}
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        names = ", ".join(repr(_printable(n)) for n in unknown[:5])
        raise HTTPException(400, f"unknown query parameter(s) {names}: expected only {sorted(known)}")


def _authoriser(config: ApiConfig) -> Any:
    """Dependency asking for `Authorization: Bearer TOKEN` when the server has a token."""
    bearer = HTTPBearer(auto_error=False)

    def authorise(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if config.token is None:
            return
        given = credentials.credentials if credentials is not None else ""
        if not secrets.compare_digest(given.encode(), config.token.encode()):
            raise HTTPException(401, "missing or wrong bearer token (Authorization: Bearer TOKEN)",
                                headers={"WWW-Authenticate": "Bearer"})

    return authorise


class _Routes:
    """The API's routes over one opened service; queries run one at a time (see the module docstring)."""

    def __init__(self, service: SearchService, config: ApiConfig) -> None:
        self.service, self.config = service, config
        self.lock = threading.Lock()

    def known(self, pair_id: str | None) -> None:
        if pair_id is not None and not self.service.has_pair(pair_id):
            raise HTTPException(404, f"pair_id={pair_id!r}: no such pair in this archive")

    def images(self, query: Any) -> dict[str, np.ndarray]:
        if query.before_image is None and query.after_image is None:
            return {}
        return {name: _decode_image(getattr(query, f"{name}_image"), f"{name}_image",
                                    self.config.max_image_pixels)
                for name in ("before", "after")}

    def health(self) -> Health:
        service = self.service
        return Health(status="ok", version=__version__, store=str(service.store_root.resolve()),
                      checkpoint_id=service.checkpoint_id, n_pairs=len(service),
                      text_backend=f"{service.text_backend.backend} ({service.text_backend.reason})")

    def search_text(self, query: str, k: int, filters: FiltersIn | None) -> PairHits:
        with self.lock:
            hits = self.service.search_text(query, k=k, filters=filters.to_filters() if filters else None)
        return PairHits(hits=[PairHitOut(**asdict(h)) for h in hits])

    def search_pair(self, query: Any) -> PairHits:
        self.known(query.pair_id)
        filters = query.filters.to_filters() if query.filters else None
        uploaded = self.images(query)
        with self.lock:
            hits = self.service.search_pair(query.pair_id, k=query.k, filters=filters, **uploaded)
        return PairHits(hits=[PairHitOut(**asdict(h)) for h in hits])

    def describe(self, query: Any) -> CaptionHits:
        self.known(query.pair_id)
        uploaded = self.images(query)
        with self.lock:
            hits = self.service.describe_pair(query.pair_id, k=query.k, **uploaded)
        return CaptionHits(hits=[CaptionHitOut(**asdict(h)) for h in hits])

    def footprints(self, bbox: str | None, date_from: str | None, date_to: str | None,
                   source: list[str] | None, limit: int) -> Response:
        box = None
        if bbox is not None:
            try:
                box = tuple(float(v) for v in bbox.split(","))
            except ValueError:
                box = ()
            if len(box) != 4 or not all(math.isfinite(v) for v in box):
                raise InputError(f"bbox={bbox!r}: expected four finite numbers W,S,E,N")
        filters = SearchFilters(bbox=box, date_from=date_from, date_to=date_to,  # type: ignore[arg-type]
                                sources=tuple(source) if source else None)
        collection = self.service.footprints(filters, limit=limit)
        return JSONResponse(collection, media_type="application/geo+json")


def _add_routes(app: FastAPI, routes: _Routes, queries: _Queries, authorise: Any) -> None:
    """Bind each route's path, parameters and documented answers to the `_Routes` method doing it."""
    config = routes.config
    # Without a token the schema shows no security scheme and no 401, as the server asks for none.
    secured = [Depends(authorise)] if config.token is not None else []
    secured.append(Depends(_no_unknown_query_parameters))
    auth = (401,) if config.token is not None else ()
    data_errors = _errors(400, *auth, 413, 503)
    pair_errors = _errors(400, *auth, 404, 413, 503)
    TextQuery, PairQuery, DescribeQuery = queries.text, queries.pair, queries.describe  # noqa: N806

    @app.get("/health", response_model=Health, responses=_errors(400, 413),
             dependencies=[Depends(_no_unknown_query_parameters)],
             summary="Liveness and which archive this is")
    def health() -> Health:
        return routes.health()

    @app.get("/stats", response_model=StatsOut, dependencies=secured, responses=data_errors,
             summary="Archive summary: counts, sources, dates, extent")
    def stats() -> StatsOut:
        return StatsOut(**_jsonable(asdict(routes.service.stats())))

    @app.post("/search/text", response_model=PairHits, dependencies=secured, responses=data_errors,
              summary="Text -> pairs")
    def search_text(query: TextQuery) -> PairHits:  # type: ignore[valid-type]
        return routes.search_text(query.query, query.k, query.filters)  # type: ignore[attr-defined]

    @app.get("/search/text", response_model=PairHits, dependencies=secured, responses=data_errors,
             summary="Text -> pairs (query string form, no filters)")
    def search_text_get(
        q: Annotated[Text, Query(min_length=1, max_length=config.max_query_chars)],
        k: Annotated[int, Query(ge=1, le=config.max_k)] = 10,
    ) -> PairHits:
        return routes.search_text(q, k, None)

    @app.post("/search/pair", response_model=PairHits, dependencies=secured, responses=pair_errors,
              summary="Pair -> pairs (an archive pair, itself excluded, or uploaded images)")
    def search_pair(query: PairQuery) -> PairHits:  # type: ignore[valid-type]
        return routes.search_pair(query)

    @app.post("/describe", response_model=CaptionHits, dependencies=secured, responses=pair_errors,
              summary="Pair -> the archive's sentences that describe it best")
    def describe(query: DescribeQuery) -> CaptionHits:  # type: ignore[valid-type]
        return routes.describe(query)

    @app.get("/pairs/{pair_id}", response_model=dict[str, Any], dependencies=secured,
             responses=pair_errors, summary="Everything the store knows about a pair")
    def pair(pair_id: str) -> dict[str, Any]:
        routes.known(pair_id)
        record = {**routes.service.pair(pair_id), "change_reading": routes.service.change_reading(pair_id)}
        return _jsonable(record)

    @app.get("/pairs/{pair_id}/thumbnail/{when}", dependencies=secured, response_class=Response,
             responses={200: {"content": {"image/png": {}}, "description": "PNG image"}, **pair_errors},
             summary="Before or after thumbnail (PNG)")
    def thumbnail(pair_id: str, when: Literal["before", "after"]) -> Response:
        routes.known(pair_id)
        before, after = routes.service.thumbnails(pair_id)
        return Response(_png(before if when == "before" else after), media_type="image/png")

    @app.get("/footprints", dependencies=secured, response_class=JSONResponse,
             responses={200: {"content": {"application/geo+json": {"schema": {"type": "object"}}},
                              "description": "GeoJSON FeatureCollection"}, **data_errors},
             summary="Pair footprints as a GeoJSON FeatureCollection")
    def footprints(
        # Query strings have no null: an absent or empty parameter means "no bound".
        bbox: Annotated[Text, Query(description="W,S,E,N in lon/lat", max_length=200)] = "",
        date_from: Annotated[str, Query(pattern=ISO_DATE)] = "",
        date_to: Annotated[str, Query(pattern=ISO_DATE)] = "",
        source: Annotated[list[Text], Query(max_length=100)] = [],  # noqa: B006 - FastAPI copies it
        limit: Annotated[int, Query(ge=1, le=config.max_footprints)] = 10_000,
    ) -> Response:
        return routes.footprints(bbox or None, date_from or None, date_to or None, source or None, limit)


def create_app(service: SearchService, config: ApiConfig | None = None) -> FastAPI:
    """The FastAPI application answering from `service` (already opened: model and index loaded)."""
    config = config or ApiConfig()
    check_exposure(config)
    app = FastAPI(
        title="textitsr",
        version=__version__,
        description="Text <-> bitemporal image-pair retrieval over one archive store.",
    )
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    _add_error_handlers(app)
    _add_routes(app, _Routes(service, config), _request_models(config), _authoriser(config))
    return app


def _decode_image(data: str | None, field: str, max_pixels: int) -> np.ndarray:
    """base64 PNG/JPEG/TIFF -> uint8 RGB array, refusing missing, undecodable or huge images.

    The pixel count is checked on the declared size, before anything is decoded; Pillow's own
    limits on ancillary chunks (a huge zTXt or iCCP) and decompression bombs become a 400 too.
    """
    if not data:
        raise InputError(f"{field}: expected a base64-encoded image (give both before_image and after_image)")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as err:
        raise InputError(f"{field}: not valid base64 ({err})") from err
    try:
        return decode_rgb(raw, ("PNG", "JPEG", "TIFF"), max_pixels)
    except ImageTooLarge as err:
        raise InputError(f"{field}: {err}") from err
    except ValueError as err:
        raise InputError(f"{field}: not a readable PNG/JPEG/TIFF image ({err})") from err


def _png(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def _jsonable(value: Any) -> Any:
    """numpy/pandas values inside a record -> plain JSON types."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def serve_api(store: Path, checkpoint: Path | None = None, config: ApiConfig | None = None) -> None:
    """Open the store once and serve the API in the foreground until interrupted."""
    import uvicorn

    config = config or ApiConfig()
    if config.token is None and os.environ.get(TOKEN_ENV):
        config = ApiConfig(**{**asdict(config), "token": os.environ[TOKEN_ENV]})
    check_exposure(config)
    service = SearchService.open(store, checkpoint)
    app = create_app(service, config)
    # SIGTERM and Ctrl-C end the server quietly, and the announcement is withdrawn either way.
    with contextlib.suppress(KeyboardInterrupt), announce(store, _announced_url(config)):
        uvicorn.run(app, host=config.host, port=config.port, log_level="warning")


def _announced_url(config: ApiConfig) -> str:
    """Where `textitsr search` on this machine reaches the server (it trusts loopback addresses only)."""
    if ":" in config.host:  # IPv6: "::" and "::1" are both reached on ::1
        return f"http://[::1]:{config.port}"
    host = config.host if is_loopback(config.host) and config.host != "localhost" else "127.0.0.1"
    return f"http://{host}:{config.port}"
