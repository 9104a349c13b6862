"""HTTP API under hostile requests: every body and image is bounded, every bad input is a 4xx, and
the OpenAPI schema says what the server really does (schemathesis, all checks, in-process)."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from collections.abc import Iterator

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from PIL import Image, PngImagePlugin
from schemathesis.checks import CHECKS, is_check_class, load_all_checks
from schemathesis.generation import GenerationMode

from textitsr.api import ApiConfig, create_app
from textitsr.service import SearchService


@pytest.fixture(scope="module")
def service(tiny_archive) -> SearchService:
    return SearchService.open(tiny_archive.store)


TOKEN = "tok-3f9a"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def app(service: SearchService):
    return create_app(service, ApiConfig(max_k=20, max_query_chars=200, max_body_bytes=4 * 2**20,
                                         max_footprints=50, token=TOKEN))


@pytest.fixture(scope="module")
def client(app) -> TestClient:
    return TestClient(app, headers=AUTH)


def png_bytes(width: int = 16, height: int = 16, **save_options: object) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (40, 90, 20)).save(buf, format="PNG", **save_options)
    return buf.getvalue()


def declared_png(width: int, height: int) -> bytes:
    """A few hundred bytes of PNG whose header declares `width` x `height` pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def upload(before: bytes, after: bytes | None = None) -> dict[str, object]:
    return {"before_image": base64.b64encode(before).decode(),
            "after_image": base64.b64encode(after or before).decode(), "k": 2}


def test_a_chunked_body_without_length_is_cut_off_at_the_limit(service: SearchService) -> None:
    client = TestClient(create_app(service, ApiConfig(max_body_bytes=1_000)))
    sent = []

    def body() -> Iterator[bytes]:
        for _ in range(10_000):
            sent.append(1)
            yield b'{"query": "' + b"x" * 1_000

    r = client.post("/search/text", content=body(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "at most 1000" in r.json()["detail"]
    small = client.post("/search/text", content=iter([b'{"query": ', b'"a road", "k": 2}']),
                        headers={"content-type": "application/json"})
    assert small.status_code == 200 and len(small.json()["hits"]) == 2


@pytest.mark.parametrize(("image", "words"), [
    (declared_png(20_000, 20_000), "pixels"),
    (declared_png(5_000, 5_000), "pixels"),
    (png_bytes(pnginfo=(lambda i: (i.add_text("note", "x" * 3_000_000, zip=True), i)[1])(
        PngImagePlugin.PngInfo())), "too large"),
    (png_bytes(icc_profile=b"\0" * 30_000_000), "too large"),
    (b"GIF89a" + b"\0" * 40, "PNG/JPEG/TIFF"),
], ids=["20000x20000", "over-config", "huge-zTXt", "huge-iCCP", "gif"])
def test_image_bombs_are_refused_with_400(client: TestClient, image: bytes, words: str) -> None:
    for route in ("/search/pair", "/describe"):
        r = client.post(route, json=upload(image, png_bytes()))
        assert r.status_code == 400, r.text
        assert "before_image" in r.json()["detail"] and words in r.json()["detail"]


@pytest.mark.parametrize("body", [
    b'{"query": "road", "k": NaN}',
    b'{"query": "road", "k": Infinity}',
    b'{"query": NaN}',
    b'{"query": "road", "filters": {"bbox": [NaN, 0, 1, 1]}}',
    b'{"query": "road", "filters": {"bbox": [-Infinity, 0, 1, 1]}}',
    b'{"query": "\\ud800"}',
    b'{"query": "road \\udfff", "k": 2}',
    b'{"query": "road", "\\ud800": 1}',
    b'{"pair_id": "\\ud800"}',
    b'{"query": "road", "filters": {"sources": ["\\ud800"]}}',
], ids=["k-nan", "k-inf", "query-nan", "bbox-nan", "bbox-inf", "surrogate", "low-surrogate",
        "surrogate-key", "pair-surrogate", "source-surrogate"])
def test_nan_infinity_and_lone_surrogates_are_a_4xx(client: TestClient, body: bytes) -> None:
    route = "/search/pair" if b"pair_id" in body else "/search/text"
    r = client.post(route, content=body, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["detail"]


def test_unknown_properties_are_refused(client: TestClient) -> None:
    r = client.post("/search/text", json={"query": "road", "top_k": 3})
    assert r.status_code == 422 and "top_k" in r.text
    r = client.post("/search/text", json={"query": "road", "filters": {"box": [0, 0, 1, 1]}})
    assert r.status_code == 422 and "box" in r.text


def test_the_schema_documents_every_error_and_the_real_answer_types(app) -> None:
    schema = app.openapi()
    for path, method in [("/search/text", "post"), ("/search/pair", "post"), ("/describe", "post"),
                         ("/pairs/{pair_id}", "get"), ("/stats", "get")]:
        documented = set(schema["paths"][path][method]["responses"])
        assert {"400", "401", "413", "503"} <= documented, (path, documented)
        assert ("422" in documented) == (path != "/stats")  # /stats takes no parameters
    assert "404" in schema["paths"]["/search/pair"]["post"]["responses"]
    bodies = schema["components"]["schemas"]
    assert bodies["TextQuery"]["additionalProperties"] is False
    assert bodies["FiltersIn"]["additionalProperties"] is False
    stats = schema["paths"]["/stats"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert stats == {"$ref": "#/components/schemas/StatsOut"}
    footprints = schema["paths"]["/footprints"]["get"]["responses"]["200"]["content"]
    assert "application/geo+json" in footprints


#: Rules across fields that no JSON schema expresses answer 400: west <= east, date_from <= date_to,
#: an uploaded string that is base64 but no PNG/JPEG/TIFF, a calendar date like 2018-13-45.
CROSS_FIELD_RULES_ANSWER_400 = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "400", "404"]
"""


def all_checks() -> list:
    load_all_checks()
    return [check for check in CHECKS.get_all() if not is_check_class(check)]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_schemathesis_with_all_checks_finds_no_disagreement(app, mode: GenerationMode) -> None:
    config = schemathesis.config.SchemathesisConfig.from_str(CROSS_FIELD_RULES_ANSWER_400)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    checks, failures = all_checks(), []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=20, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case) -> None:
            case.call_and_validate(checks=checks, headers=AUTH)

        try:
            run()
        except Unsatisfiable:  # negative mode, a route with no parameters: nothing to break
            continue
        except Exception as err:  # noqa: BLE001 - collect every operation's failure, then report all
            failures.append(f"{operation.label}: {err}")
    assert not failures, "\n\n".join(failures)
