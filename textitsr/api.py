"""HTTP API over one archive: the `SearchService` the CLI and the app use, as JSON over FastAPI.

Another program (a notebook, a GIS plugin, a web page) queries a running archive here:
text -> pairs, pair -> pairs, pair -> sentences, a pair's metadata and thumbnails, footprints as
GeoJSON. Interactive OpenAPI docs are served at `/docs`.

Safety: the server binds to 127.0.0.1 by default; bound to any other address it refuses to start
without a bearer token (`--token` or `TEXTITSR_API_TOKEN`), and with a token every data route asks
for `Authorization: Bearer TOKEN`. Query length, k, footprint counts and uploaded images are
bounded and refused with a 4xx naming the field. Queries run one at a time: the text encoder already
uses every core, so parallel requests would only fight over them.

(No `from __future__ import annotations` here: FastAPI reads the request models of the routes,
which are built per app from its limits, from the annotations at run time.)
"""

import base64
import binascii
import io
import ipaddress
import os
import secrets
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from textitsr import __version__
from textitsr.api_discovery import TOKEN_ENV, announce
from textitsr.errors import InputError, StoreError
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


class FiltersIn(BaseModel):
    """Metadata filters: footprint intersects bbox (lon/lat W, S, E, N); dates within [from, to]."""

    bbox: Annotated[list[float], Field(min_length=4, max_length=4)] | None = None
    date_from: str | None = Field(default=None, max_length=32, examples=["2018-01-01"])
    date_to: str | None = Field(default=None, max_length=32, examples=["2021-12-31"])
    sources: Annotated[list[Annotated[str, Field(max_length=256)]], Field(max_length=100)] | None = None

    def to_filters(self) -> SearchFilters:
        return SearchFilters(
            bbox=tuple(self.bbox) if self.bbox is not None else None,  # type: ignore[arg-type]
            date_from=self.date_from,
            date_to=self.date_to,
            sources=tuple(self.sources) if self.sources is not None else None,
        )


class PairHitOut(BaseModel):
    rank: int
    score: float
    pair_id: str
    source: str
    split: str | None
    bounds: tuple[float, float, float, float] | None
    dates: tuple[str | None, str | None]
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


def create_app(service: SearchService, config: ApiConfig | None = None) -> FastAPI:
    """The FastAPI application answering from `service` (already opened: model and index loaded)."""
    config = config or ApiConfig()
    check_exposure(config)
    lock = threading.Lock()

    class TextQuery(BaseModel):
        query: str = Field(min_length=1, max_length=config.max_query_chars,
                           examples=["a new road is built across the bare land"])
        k: int = Field(default=10, ge=1, le=config.max_k)
        filters: FiltersIn | None = None

    class PairQuery(BaseModel):
        """An archive pair by id, or uploaded before/after images (base64 PNG/JPEG/TIFF)."""

        pair_id: str | None = Field(default=None, min_length=1, max_length=512)
        before_image: str | None = Field(default=None, description="base64 image of the earlier date")
        after_image: str | None = Field(default=None, description="base64 image of the later date")
        k: int = Field(default=10, ge=1, le=config.max_k)
        filters: FiltersIn | None = None

    class DescribeQuery(BaseModel):
        pair_id: str | None = Field(default=None, min_length=1, max_length=512)
        before_image: str | None = None
        after_image: str | None = None
        k: int = Field(default=5, ge=1, le=config.max_k)

    bearer = HTTPBearer(auto_error=False)

    def authorise(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if config.token is None:
            return
        given = credentials.credentials if credentials is not None else ""
        if not secrets.compare_digest(given.encode(), config.token.encode()):
            raise HTTPException(401, "missing or wrong bearer token (Authorization: Bearer TOKEN)",
                                headers={"WWW-Authenticate": "Bearer"})

    app = FastAPI(
        title="textitsr",
        version=__version__,
        description="Text <-> bitemporal image-pair retrieval over one archive store.",
    )
    secured = [Depends(authorise)]

    @app.middleware("http")
    async def limit_body(request: Request, call_next: Any) -> Response:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > config.max_body_bytes):
            return JSONResponse(
                {"detail": f"request body of {length} bytes: expected at most {config.max_body_bytes}"},
                status_code=413,
            )
        return await call_next(request)

    @app.exception_handler(InputError)
    async def input_error(request: Request, err: InputError) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=400)

    @app.exception_handler(StoreError)
    async def store_error(request: Request, err: StoreError) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=503)

    def known(pair_id: str | None) -> None:
        if pair_id is not None and not service.catalog.has_pair(pair_id):
            raise HTTPException(404, f"pair_id={pair_id!r}: no such pair in this archive")

    def images(query: PairQuery | DescribeQuery) -> dict[str, np.ndarray]:
        if query.before_image is None and query.after_image is None:
            return {}
        return {name: _decode_image(getattr(query, f"{name}_image"), f"{name}_image", config.max_image_pixels)
                for name in ("before", "after")}

    @app.get("/health", response_model=Health, summary="Liveness and which archive this is")
    def health() -> Health:
        return Health(status="ok", version=__version__, store=str(service.store.root.resolve()),
                      checkpoint_id=service.store.checkpoint_id, n_pairs=len(service),
                      text_backend=f"{service.text_backend.backend} ({service.text_backend.reason})")

    @app.get("/stats", dependencies=secured, summary="Archive summary: counts, sources, dates, extent")
    def stats() -> dict[str, Any]:
        return asdict(service.catalog.stats())

    @app.post("/search/text", response_model=PairHits, dependencies=secured, summary="Text -> pairs")
    def search_text(query: TextQuery) -> PairHits:
        filters = query.filters.to_filters() if query.filters else None
        with lock:
            hits = service.search_text(query.query, k=query.k, filters=filters)
        return PairHits(hits=[PairHitOut(**asdict(h)) for h in hits])

    @app.get("/search/text", response_model=PairHits, dependencies=secured,
             summary="Text -> pairs (query string form, no filters)")
    def search_text_get(
        q: Annotated[str, Query(min_length=1, max_length=config.max_query_chars)],
        k: Annotated[int, Query(ge=1, le=config.max_k)] = 10,
    ) -> PairHits:
        return search_text(TextQuery(query=q, k=k))

    @app.post("/search/pair", response_model=PairHits, dependencies=secured,
              summary="Pair -> pairs (an archive pair, itself excluded, or uploaded images)")
    def search_pair(query: PairQuery) -> PairHits:
        known(query.pair_id)
        filters = query.filters.to_filters() if query.filters else None
        uploaded = images(query)
        with lock:
            hits = service.search_pair(query.pair_id, k=query.k, filters=filters, **uploaded)
        return PairHits(hits=[PairHitOut(**asdict(h)) for h in hits])

    @app.post("/describe", response_model=CaptionHits, dependencies=secured,
              summary="Pair -> the archive's sentences that describe it best")
    def describe(query: DescribeQuery) -> CaptionHits:
        known(query.pair_id)
        uploaded = images(query)
        with lock:
            hits = service.describe_pair(query.pair_id, k=query.k, **uploaded)
        return CaptionHits(hits=[CaptionHitOut(**asdict(h)) for h in hits])

    @app.get("/pairs/{pair_id}", dependencies=secured, summary="Everything the store knows about a pair")
    def pair(pair_id: str) -> dict[str, Any]:
        known(pair_id)
        return _jsonable(service.catalog.pair(pair_id))

    @app.get("/pairs/{pair_id}/thumbnail/{when}", dependencies=secured, response_class=Response,
             responses={200: {"content": {"image/png": {}}}}, summary="Before or after thumbnail (PNG)")
    def thumbnail(pair_id: str, when: Literal["before", "after"]) -> Response:
        known(pair_id)
        before, after = service.catalog.thumbnails(pair_id)
        return Response(_png(before if when == "before" else after), media_type="image/png")

    @app.get("/footprints", dependencies=secured, summary="Pair footprints as a GeoJSON FeatureCollection")
    def footprints(
        bbox: Annotated[str | None, Query(description="W,S,E,N in lon/lat", max_length=200)] = None,
        date_from: Annotated[str | None, Query(max_length=32)] = None,
        date_to: Annotated[str | None, Query(max_length=32)] = None,
        source: Annotated[list[str] | None, Query(max_length=100)] = None,
        limit: Annotated[int, Query(ge=1, le=config.max_footprints)] = 10_000,
    ) -> Response:
        box = None
        if bbox is not None:
            try:
                box = tuple(float(v) for v in bbox.split(","))
            except ValueError:
                box = ()
            if len(box) != 4:
                raise InputError(f"bbox={bbox!r}: expected four numbers W,S,E,N")
        filters = SearchFilters(bbox=box, date_from=date_from, date_to=date_to,  # type: ignore[arg-type]
                                sources=tuple(source) if source else None)
        collection = service.catalog.footprints(filters, limit=limit)
        return JSONResponse(collection, media_type="application/geo+json")

    return app


def _decode_image(data: str | None, field: str, max_pixels: int) -> np.ndarray:
    """base64 PNG/JPEG/TIFF -> uint8 RGB array, refusing missing, undecodable or huge images."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise InputError(f"{field}: expected a base64-encoded image (give both before_image and after_image)")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as err:
        raise InputError(f"{field}: not valid base64 ({err})") from err
    try:
        with Image.open(io.BytesIO(raw)) as img:
            if img.width * img.height > max_pixels:
                raise InputError(
                    f"{field}: {img.width} x {img.height} px, expected at most {max_pixels} pixels"
                )
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError) as err:
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
    host = "127.0.0.1" if config.host in ("0.0.0.0", "::") else config.host
    host = f"[{host}]" if ":" in host else host
    with announce(store, f"http://{host}:{config.port}"):  # lets `textitsr search` use this server
        uvicorn.run(app, host=config.host, port=config.port, log_level="warning")
